"""Monthly tips and memberships against ``oros dev``'s localstripe (``oros.localstripe_child``, with
``oros.localstripe_billing``), not the billing double: the API's own Stripe requests are served, the first
invoice is paid by card at localstripe, and localstripe's own signed ``invoice.payment_succeeded`` books it,
once."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import replace

import orjson
import pytest
import requests
import stripe

from admin_api.app import create_app
from oros import embedded
from oros.stripe_gateway import stripe_client

from billing_double import sign
from processes import dev_localstripe
from supporter_flows import SYSTEM, VISA, D, Flows

WEBHOOK_SECRET = "whsec_dev_" + secrets.token_hex(16)
DECLINED = "4000000000000341"  # attaches, then its charge is declined
VISA_3DS = "4000002500003155"  # asks for 3-D Secure
WEBHOOK_WAIT_S = 20


@pytest.fixture(scope="module")
def dev_stripe():
    """localstripe exactly as ``oros dev`` runs it: its child module, on the loopback port it reports."""
    with dev_localstripe() as url:
        yield url


@pytest.fixture
async def dev(aiohttp_client, pg, settings, api_settings, dev_stripe) -> Flows:
    stripe_settings = replace(api_settings, stripe_api_base=dev_stripe, stripe_webhook_secret=WEBHOOK_SECRET)
    api = await aiohttp_client(create_app(stripe_settings))
    # One endpoint name, as oros dev registers it: this test's server replaces the previous test's.
    requests.post(f"{dev_stripe}/_config/webhooks/{embedded.LOCALSTRIPE_WEBHOOK}", timeout=5, data={
        "url": str(api.server.make_url("/v1/webhooks/stripe")), "secret": WEBHOOK_SECRET}).raise_for_status()
    return Flows(api=api, pg=pg, settings=settings, stripe_settings=stripe_settings, billing=None)


def localstripe(dev: Flows):
    return stripe_client(dev.stripe_settings)


async def pay_by_card(dev: Flows, client_secret: str, number: str = VISA) -> str:
    """What Stripe.js does with the first invoice's confirmation secret, at localstripe: card, confirm."""
    client = localstripe(dev)
    pi = client_secret.split("_secret_")[0]
    method = await asyncio.to_thread(client.v1.payment_methods.create, {
        "type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
    await asyncio.to_thread(client.v1.payment_intents.update, pi, {"payment_method": method.id})
    await asyncio.to_thread(client.v1.payment_intents.confirm, pi)
    return pi


async def until(dev: Flows, sql: str, args: tuple, expected) -> None:
    deadline = time.monotonic() + WEBHOOK_WAIT_S
    while (found := dev.pg.execute(sql, args).fetchone()["v"]) != expected:
        assert time.monotonic() < deadline, f"waited for {expected!r}, still {found!r}: {sql}"
        await asyncio.sleep(0.2)


def sent_events(dev: Flows, kind: str, invoice_id: str) -> list[dict]:
    """The events localstripe sent of ``kind`` for an invoice (localstripe lists what it sent)."""
    events = localstripe(dev).v1.events.list({"type": kind}).to_dict()["data"]
    return [e for e in events if e["data"]["object"]["id"] == invoice_id]


async def post_event(dev: Flows, event: dict) -> tuple[int, dict]:
    payload = orjson.dumps(event)
    resp = await dev.api.post("/v1/webhooks/stripe", data=payload, headers=sign(payload, WEBHOOK_SECRET))
    return resp.status, await resp.json()


async def test_a_monthly_tip_is_subscribed_paid_by_card_and_booked_once(dev):
    supporter, creator = dev.user("supporter"), dev.user("creator")
    tip = await dev.open_tip(supporter, creator, "6.00", frequency="monthly")
    sub = tip["stripe_subscription_id"]
    assert tip["status"] == "pending" and sub.startswith("sub_") and "_secret_" in tip["client_secret"]
    at_stripe = localstripe(dev).v1.subscriptions.retrieve(sub, {"expand": ["latest_invoice"]}).to_dict()
    assert at_stripe["status"] == "incomplete" and at_stripe["metadata"]["oros_tip_intent_id"] == tip["id"]
    assert (at_stripe["plan"]["amount"], at_stripe["plan"]["product"]) == (600, "oros_monthly_tip")
    assert at_stripe["latest_invoice"]["status"] == "open"  # waiting for the card, nothing charged yet

    pi = await pay_by_card(dev, tip["client_secret"])

    await until(dev, "SELECT count(*) AS v FROM tips WHERE intent_id = %s", (tip["id"],), 1)
    row = dev.pg.execute("SELECT amount, platform_fee, net_amount, frequency, stripe_invoice_id,"
                         " stripe_payment_intent_id FROM tips WHERE intent_id = %s", (tip["id"],)).fetchone()
    invoice = at_stripe["latest_invoice"]["id"]
    assert row == {"amount": D("6.00"), "platform_fee": D("0.30"), "net_amount": D("5.70"), "frequency": "monthly",
                   "stripe_invoice_id": invoice, "stripe_payment_intent_id": pi}
    assert dev.pg.execute("SELECT status FROM tip_intents WHERE id = %s", (tip["id"],)).fetchone()["status"] == "active"
    legs = dev.pg.execute(
        "SELECT w.purpose, w.user_id::text AS owner, l.direction, l.amount, l.source_type FROM ledger_entries l"
        " JOIN wallets w ON w.id = l.wallet_id JOIN tips t ON t.transfer_id = l.transfer_id"
        " WHERE t.intent_id = %s ORDER BY l.amount DESC", (tip["id"],)).fetchall()
    assert [tuple(leg.values()) for leg in legs] == [
        ("clearing", SYSTEM, "debit", D("6.00"), "tip"), ("main", creator.id, "credit", D("5.70"), "tip"),
        ("fees", SYSTEM, "credit", D("0.30"), "tip")]
    assert dev.wallet(creator) == (D("0.00"), D("5.70"))
    assert dev.platform("fees") == (D("0.00"), D("0.30"))  # the fee is held with the tip
    assert localstripe(dev).v1.subscriptions.retrieve(sub).status == "active"

    # localstripe's own event, delivered again: a duplicate. The same invoice under Stripe's other name: ignored.
    [sent] = sent_events(dev, "invoice.payment_succeeded", invoice)
    assert await post_event(dev, sent) == (200, {"received": True, "status": "duplicate"})
    twin = await post_event(dev, {**sent, "id": f"evt_twin_{secrets.token_hex(6)}", "type": "invoice.paid"})
    assert twin[0] == 200 and twin[1]["status"] == "ignored", twin
    assert dev.pg.execute("SELECT count(*) AS n FROM tips").fetchone()["n"] == 1
    assert dev.wallet(creator) == (D("0.00"), D("5.70"))
    dev.assert_books()

    resp = await dev.api.post(f"/v1/tips/monthly/{tip['id']}/cancel", headers=supporter.headers)
    assert resp.status == 200 and (await resp.json())["status"] == "canceled"
    assert localstripe(dev).v1.subscriptions.retrieve(sub).status == "canceled"


async def test_a_declined_first_invoice_books_nothing(dev):
    supporter, creator = dev.user("supporter"), dev.user("creator")
    tip = await dev.open_tip(supporter, creator, "2.50", frequency="monthly")

    with pytest.raises(stripe.CardError):
        await pay_by_card(dev, tip["client_secret"], DECLINED)
    await asyncio.sleep(1.5)  # localstripe's events (invoice.payment_failed) arrive a second later

    assert dev.pg.execute("SELECT count(*) AS n FROM tips").fetchone()["n"] == 0
    assert dev.pg.execute("SELECT status FROM tip_intents").fetchone()["status"] == "pending"
    assert localstripe(dev).v1.subscriptions.retrieve(tip["stripe_subscription_id"]).status == "incomplete"
    assert dev.wallet(creator) == (D("0.00"), D("0.00"))
    dev.assert_books()


async def test_a_membership_is_subscribed_paid_by_card_and_activated(dev):
    creator = dev.user("creator")
    resp = await dev.api.post("/v1/memberships", json={"membership_type": "creator_plus"}, headers=creator.headers)
    assert resp.status == 201, await resp.text()
    pending = await resp.json()
    assert pending["status"] == "pending" and pending["client_secret"]

    await pay_by_card(dev, pending["client_secret"])

    await until(dev, "SELECT status AS v FROM memberships WHERE id = %s", (pending["id"],), "active")
    row = dev.pg.execute("SELECT started_at, current_period_end FROM memberships WHERE id = %s",
                         (pending["id"],)).fetchone()
    assert row["started_at"] is not None and row["current_period_end"] > row["started_at"]
    [span] = dev.pg.execute("SELECT fee_pct, effective_until FROM fee_history WHERE user_id = %s",
                            (creator.id,)).fetchall()
    assert span == {"fee_pct": D("8.00"), "effective_until": None}
    assert dev.platform("fees")[0] == D("9.99")  # the tier's price, booked as revenue
    dev.assert_books()

    resp = await dev.api.post(f"/v1/memberships/{pending['id']}/cancel", headers=creator.headers)
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "active" and body["cancel_at_period_end"] is True
    assert localstripe(dev).v1.subscriptions.retrieve(pending["billing_provider_id"]).cancel_at_period_end is True


async def card(dev: Flows, number: str = VISA) -> str:
    """A payment method as the page's Stripe.js makes it (the number never reaches the API)."""
    made = await asyncio.to_thread(localstripe(dev).v1.payment_methods.create, {
        "type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
    return made.id


async def test_the_page_pays_a_monthly_tip_and_a_membership_through_the_api_confirmation(dev):
    """The web app's way: the API confirms the subscription's first invoice with the card (card_payments)."""
    supporter, creator, stranger = dev.user("supporter"), dev.user("creator"), dev.user("supporter")
    tip = await dev.open_tip(supporter, creator, "4.00", frequency="monthly")
    listed = await (await dev.api.get("/v1/tips/monthly", headers=supporter.headers)).json()
    assert [(t["id"], t["status"], t["amount"]) for t in listed["items"]] == [(tip["id"], "pending", "4.00")]
    assert (await (await dev.api.get("/v1/tips/monthly", headers=stranger.headers)).json())["items"] == []

    # Another supporter can neither pay nor see it; a declined card (another tip) is 402 at the card.
    path = f"/v1/tips/{tip['id']}/confirm"
    resp = await dev.api.post(path, json={"payment_method": await card(dev)}, headers=stranger.headers)
    assert resp.status == 404
    declined = await dev.open_tip(supporter, creator, "2.00", frequency="monthly")
    resp = await dev.api.post(f"/v1/tips/{declined['id']}/confirm", json={"payment_method": await card(dev, DECLINED)},
                              headers=supporter.headers)
    assert resp.status == 402 and (await resp.json())["error"]["field"] == "payment_method"

    resp = await dev.api.post(path, json={"payment_method": await card(dev)}, headers=supporter.headers)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["status"] == "succeeded" and "client_secret" not in body and body["payment_intent_id"].startswith("pi_")
    await until(dev, "SELECT count(*) AS v FROM tips WHERE intent_id = %s", (tip["id"],), 1)
    assert dev.wallet(creator) == (D("0.00"), D("3.80"))
    resp = await dev.api.post(path, json={"payment_method": await card(dev)}, headers=supporter.headers)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "tip_closed"
    active = await (await dev.api.get("/v1/tips/monthly?status=active", headers=supporter.headers)).json()
    assert [t["id"] for t in active["items"]] == [tip["id"]]
    assert dev.pg.execute("SELECT count(*) AS n FROM tips").fetchone()["n"] == 1  # the declined one booked nothing

    resp = await dev.api.post("/v1/memberships", json={"membership_type": "supporter_plus"}, headers=supporter.headers)
    membership = await resp.json()
    path = f"/v1/memberships/{membership['id']}/confirm"
    resp = await dev.api.post(path, json={"payment_method": await card(dev)}, headers=stranger.headers)
    assert resp.status == 404
    resp = await dev.api.post(path, json={"payment_method": "pm_<script>"}, headers=supporter.headers)
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "payment_method"
    resp = await dev.api.post(path, json={"payment_method": await card(dev)}, headers=supporter.headers)
    assert resp.status == 200 and (await resp.json())["status"] == "succeeded"
    await until(dev, "SELECT status AS v FROM memberships WHERE id = %s", (membership["id"],), "active")
    resp = await dev.api.post(path, json={"payment_method": await card(dev)}, headers=supporter.headers)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "membership_closed"

    # 3-D Secure: the answer carries the invoice's client secret for Stripe.js's challenge (a tip paid later
    # from its row has no other on the page); nothing is booked until the challenge is passed.
    checked = await dev.open_tip(supporter, creator, "5.00", frequency="monthly")
    resp = await dev.api.post(f"/v1/tips/{checked['id']}/confirm", json={"payment_method": await card(dev, VISA_3DS)},
                              headers=supporter.headers)
    body = await resp.json()
    assert (resp.status, body["status"], body["client_secret"]) == (200, "requires_action", checked["client_secret"])
    assert dev.pg.execute("SELECT count(*) AS n FROM tips").fetchone()["n"] == 1
    dev.assert_books()


async def test_hostile_confirmations_of_a_monthly_tip_and_a_membership(dev):
    """Attacks on POST /v1/tips/{id}/confirm and /v1/memberships/{id}/confirm: the wrong caller, a card of another
    customer, two confirmations at once (one charge, one tip), a confirmation after cancel, the first invoice's
    webhook replayed."""
    supporter, creator, other = dev.user("supporter"), dev.user("creator"), dev.user("supporter")
    tip = await dev.open_tip(supporter, creator, "7.00", frequency="monthly")
    path = f"/v1/tips/{tip['id']}/confirm"
    # The tipped creator sees the row (RLS) but did not send it; a business; nobody.
    business = dev.user("business")
    for headers, status in ((creator.headers, 403), (business.headers, 403), ({}, 401)):
        resp = await dev.api.post(path, json={"payment_method": await card(dev)}, headers=headers)
        assert resp.status == status, await resp.text()

    # A card saved on another supporter's customer: never charged for this tip.
    theirs = await dev.open_tip(other, creator, "2.00", frequency="monthly")  # gives `other` a Stripe customer
    [customer] = dev.pg.execute("SELECT customer_id FROM stripe_customers WHERE user_id = %s", (other.id,)).fetchall()
    saved = await card(dev)
    await asyncio.to_thread(localstripe(dev).v1.payment_methods.attach, saved, {"customer": customer["customer_id"]})
    resp = await dev.api.post(path, json={"payment_method": saved}, headers=supporter.headers)
    assert (resp.status, (await resp.json())["error"]["field"]) == (422, "payment_method")
    assert localstripe(dev).v1.subscriptions.retrieve(tip["stripe_subscription_id"]).status == "incomplete"

    # Two confirmations at once, two cards: one charge, one tip.
    cards = [await card(dev) for _ in range(2)]
    answers = await asyncio.gather(*(dev.api.post(path, json={"payment_method": m}, headers=supporter.headers)
                                     for m in cards))
    assert sorted(a.status for a in answers)[0] == 200 and all(a.status in (200, 409, 422) for a in answers)
    await until(dev, "SELECT count(*) AS v FROM tips WHERE intent_id = %s", (tip["id"],), 1)
    invoice = localstripe(dev).v1.subscriptions.retrieve(tip["stripe_subscription_id"]).latest_invoice
    [sent] = sent_events(dev, "invoice.payment_succeeded", invoice)
    assert await post_event(dev, sent) == (200, {"received": True, "status": "duplicate"})  # replayed
    # The same invoice under a new event id (a forged-looking resend, signed with our secret): not a second tip.
    resent = await post_event(dev, {**sent, "id": f"evt_resent_{secrets.token_hex(6)}"})
    assert resent[0] == 200, resent
    await asyncio.sleep(0.5)
    assert dev.pg.execute("SELECT count(*) AS n FROM tips WHERE intent_id = %s", (tip["id"],)).fetchone()["n"] == 1
    assert dev.wallet(creator) == (D("0.00"), D("6.65"))

    # Canceled before it was ever paid: nothing left to pay.
    resp = await dev.api.post(f"/v1/tips/monthly/{theirs['id']}/cancel", headers=other.headers)
    assert resp.status == 200
    resp = await dev.api.post(f"/v1/tips/{theirs['id']}/confirm", json={"payment_method": await card(dev)},
                              headers=other.headers)
    assert (resp.status, (await resp.json())["error"]["code"]) == (409, "tip_closed")

    # A membership: another member, a business, nobody; paid; its first invoice's webhook replayed.
    resp = await dev.api.post("/v1/memberships", json={"membership_type": "supporter_plus"}, headers=supporter.headers)
    membership = await resp.json()
    path = f"/v1/memberships/{membership['id']}/confirm"
    for headers, status in ((other.headers, 404), (business.headers, 404), ({}, 401)):
        resp = await dev.api.post(path, json={"payment_method": await card(dev)}, headers=headers)
        assert resp.status == status, await resp.text()
    resp = await dev.api.post(path, json={"payment_method": saved}, headers=supporter.headers)
    assert (resp.status, (await resp.json())["error"]["field"]) == (422, "payment_method")
    resp = await dev.api.post(path, json={"payment_method": await card(dev)}, headers=supporter.headers)
    assert resp.status == 200 and (await resp.json())["status"] == "succeeded"
    await until(dev, "SELECT status AS v FROM memberships WHERE id = %s", (membership["id"],), "active")
    invoice = localstripe(dev).v1.subscriptions.retrieve(membership["billing_provider_id"]).latest_invoice
    [sent] = sent_events(dev, "invoice.payment_succeeded", invoice)
    assert await post_event(dev, sent) == (200, {"received": True, "status": "duplicate"})
    assert dev.platform("fees")[0] == D("4.99")  # the tier's price, once

    # A membership canceled while pending (at once), then confirmed: nothing to pay, nothing charged.
    dropped = await (await dev.api.post("/v1/memberships", json={"membership_type": "supporter_plus"},
                                        headers=other.headers)).json()
    resp = await dev.api.post(f"/v1/memberships/{dropped['id']}/cancel", headers=other.headers)
    assert resp.status == 200 and (await resp.json())["status"] == "canceled"
    resp = await dev.api.post(f"/v1/memberships/{dropped['id']}/confirm", json={"payment_method": await card(dev)},
                              headers=other.headers)
    assert (resp.status, (await resp.json())["error"]["code"]) == (409, "membership_closed")
    assert localstripe(dev).v1.subscriptions.retrieve(dropped["billing_provider_id"]).status == "canceled"
    assert dev.platform("fees")[0] == D("4.99")
    dev.assert_books()


async def test_a_confirmation_racing_a_cancel_books_what_was_charged_once(dev):
    """The attack: pay a monthly tip's first invoice while canceling it. Whichever wins, a charge is booked as
    one tip and nothing uncharged is: the books follow Stripe."""
    supporter, creator = dev.user("supporter"), dev.user("creator")
    tip = await dev.open_tip(supporter, creator, "5.00", frequency="monthly")
    method = await card(dev)
    confirmed, canceled = await asyncio.gather(
        dev.api.post(f"/v1/tips/{tip['id']}/confirm", json={"payment_method": method}, headers=supporter.headers),
        dev.api.post(f"/v1/tips/monthly/{tip['id']}/cancel", headers=supporter.headers))
    assert confirmed.status in (200, 409, 422) and canceled.status == 200, (confirmed.status, canceled.status)
    invoice = localstripe(dev).v1.invoices.retrieve(
        localstripe(dev).v1.subscriptions.retrieve(tip["stripe_subscription_id"]).latest_invoice)
    charged = invoice.status == "paid"
    await until(dev, "SELECT count(*) AS v FROM tips WHERE intent_id = %s", (tip["id"],), int(charged))
    await asyncio.sleep(1.5)  # localstripe's events arrive a second later
    assert dev.pg.execute("SELECT count(*) AS n FROM tips WHERE intent_id = %s", (tip["id"],)).fetchone()["n"] == int(
        charged)
    assert dev.wallet(creator) == (D("0.00"), D("4.75") if charged else D("0.00"))
    dev.assert_books()
