"""Campaign funding through Stripe: the real ``stripe`` client against ``localstripe``.

localstripe runs as a subprocess; it also delivers real signed webhooks to
the test's admin API server, so the whole PaymentIntent path is exercised.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import replace
from decimal import Decimal

import orjson
import pytest
import requests
import stripe

from admin_api.app import create_app
from admin_api.auth import issue_token
from oros.stripe_gateway import stripe_client
from settler.reconcile import reconcile

from stripe_events import FIVE_MILLION_CENTS, signed, succeeded_event

WEBHOOK_SECRET = "whsec_test_" + secrets.token_hex(16)
VISA, DECLINED = "4242424242424242", "4000000000000341"  # localstripe declines the charge of 0341


@pytest.fixture
def stripe_settings(settings, localstripe_url):
    return replace(settings, stripe_api_base=localstripe_url, stripe_webhook_secret=WEBHOOK_SECRET)


@pytest.fixture
async def api(aiohttp_client, stripe_settings):
    return await aiohttp_client(create_app(stripe_settings))


def make_user(pg, settings, *roles: str) -> tuple[str, dict]:
    row = pg.execute(
        "INSERT INTO users (email, kyc_status) VALUES (%s, 'approved') RETURNING id::text AS id",
        (f"{secrets.token_hex(6)}@example.com",),
    ).fetchone()
    for role in roles:
        pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)", (row["id"], role))
    return row["id"], {"Authorization": f"Bearer {issue_token(settings, row['id'])}"}


def make_campaign(pg, business_id: str) -> str:
    return pg.execute(
        "INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget, destination_url)"
        " VALUES (%s, 'Spring sale', 'click', 0.50, 1000, 'https://shop.example.com') RETURNING id::text AS id",
        (business_id,),
    ).fetchone()["id"]


def money_state(pg, campaign_id: str) -> dict:
    campaign = pg.execute(
        "SELECT funded_budget, remaining_budget FROM campaigns WHERE id = %s", (campaign_id,)
    ).fetchone()
    wallets = {
        r["purpose"]: r["available_balance"]
        for r in pg.execute(
            "SELECT purpose, available_balance FROM wallets WHERE user_id = '00000000-0000-0000-0000-000000000001'"
            " AND purpose IN ('escrow', 'fees', 'clearing')"
        ).fetchall()
    }
    entries = pg.execute("SELECT count(*) AS n FROM ledger_entries WHERE source_id = %s", (campaign_id,)).fetchone()
    return {**campaign, **wallets, "entries": entries["n"]}


def assert_books_balance(settings) -> None:
    failed = [check for check in reconcile(settings) if not check.ok]
    assert not failed, failed


def funding(pg, funding_id: str) -> dict:
    return pg.execute("SELECT status, amount, refusal_reason FROM campaign_fundings WHERE id = %s",
                      (funding_id,)).fetchone()


def deliver_to(api, localstripe_url: str) -> None:
    """localstripe signs its events with our secret and posts them to this test's server (one endpoint per run)."""
    requests.post(
        f"{localstripe_url}/_config/webhooks/oros-test",
        data={"url": str(api.server.make_url("/v1/webhooks/stripe")), "secret": WEBHOOK_SECRET,
              "events[]": ["payment_intent.succeeded", "payment_intent.payment_failed"]},
        timeout=5,
    ).raise_for_status()


async def pay(settings, intent_id: str, card: str = VISA) -> None:
    """What Stripe.js does in the business's browser: attach a card, confirm the intent."""
    client = stripe_client(settings)
    method = await asyncio.to_thread(client.v1.payment_methods.create, {
        "type": "card", "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
    await asyncio.to_thread(client.v1.payment_intents.update, intent_id, {"payment_method": method.id})
    await asyncio.to_thread(client.v1.payment_intents.confirm, intent_id)


async def wait_for_events(pg, event_type: str, count: int = 1) -> None:
    deadline = time.monotonic() + 20
    query = "SELECT count(*) AS n FROM stripe_events WHERE type = %s"
    while pg.execute(query, (event_type,)).fetchone()["n"] < count:
        assert time.monotonic() < deadline, f"localstripe never delivered {event_type}"
        await asyncio.sleep(0.2)


async def test_fund_creates_intent_and_pending_row(api, pg, stripe_settings):
    business, auth = make_user(pg, stripe_settings, "business")
    campaign = make_campaign(pg, business)

    resp = await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "250.00"}, headers=auth)

    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["amount"] == "250.00" and body["status"] == "pending" and body["campaign_id"] == campaign
    assert body["payment_intent_id"].startswith("pi_") and body["client_secret"].startswith(body["payment_intent_id"])
    intent = stripe_client(stripe_settings).v1.payment_intents.retrieve(body["payment_intent_id"])
    assert intent.amount == 25000 and intent.currency == "usd"
    assert intent.metadata["oros_campaign_id"] == campaign and intent.metadata["oros_funding_id"] == body["id"]
    row = pg.execute("SELECT status, amount, stripe_payment_intent_id FROM campaign_fundings WHERE id = %s",
                     (body["id"],)).fetchone()
    assert row == {"status": "pending", "amount": Decimal("250.00"), "stripe_payment_intent_id": intent.id}
    # Nothing is credited before Stripe says the money arrived.
    assert money_state(pg, campaign)["remaining_budget"] == 0


async def test_fund_retried_with_an_idempotency_key_creates_one_intent(api, pg, stripe_settings):
    business, auth = make_user(pg, stripe_settings, "business")
    campaign = make_campaign(pg, business)
    headers = {**auth, "Idempotency-Key": "fund-spring-1"}

    first = await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "40.00"}, headers=headers)
    again = await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "40.00"}, headers=headers)
    other = await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "41.00"}, headers=headers)

    assert (first.status, again.status) == (201, 201)
    assert await again.json() == await first.json()
    assert other.status == 422 and (await other.json())["error"]["field"] == "Idempotency-Key"
    count = pg.execute("SELECT count(*) AS n FROM campaign_fundings WHERE campaign_id = %s", (campaign,)).fetchone()
    assert count["n"] == 1


async def test_localstripe_webhook_credits_escrow_and_budget_once(api, pg, stripe_settings, localstripe_url):
    business, auth = make_user(pg, stripe_settings, "business")
    campaign = make_campaign(pg, business)
    deliver_to(api, localstripe_url)
    body = await (await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "250.00"}, headers=auth)).json()

    await pay(stripe_settings, body["payment_intent_id"])

    await wait_for_events(pg, "payment_intent.succeeded")
    state = money_state(pg, campaign)
    assert state == {"funded_budget": Decimal("250.00"), "remaining_budget": Decimal("250.00"),
                     "escrow": Decimal("250.00"), "fees": Decimal("0.00"), "clearing": Decimal("250.00"),
                     "entries": 2}
    row = pg.execute("SELECT status, transfer_id FROM campaign_fundings WHERE id = %s", (body["id"],)).fetchone()
    assert row["status"] == "succeeded" and row["transfer_id"] is not None
    assert pg.execute("SELECT count(*) AS n FROM stripe_events").fetchone()["n"] == 1
    assert_books_balance(stripe_settings)


async def test_intent_named_only_in_metadata_credits_nothing(api, pg, stripe_settings, localstripe_url):
    """The 5,000,000.00 attack: a real, paid intent that POST /fund never created names an unfunded campaign."""
    business, _ = make_user(pg, stripe_settings, "business")
    campaign = make_campaign(pg, business)
    deliver_to(api, localstripe_url)
    intent = await asyncio.to_thread(stripe_client(stripe_settings).v1.payment_intents.create, {
        "amount": FIVE_MILLION_CENTS, "currency": "usd", "payment_method_types": ["card"],
        "metadata": {"oros_campaign_id": campaign, "oros_funding_id": secrets.token_hex(4)}})

    await pay(stripe_settings, intent.id)

    await wait_for_events(pg, "payment_intent.succeeded")
    assert money_state(pg, campaign) == {"funded_budget": Decimal("0.00"), "remaining_budget": Decimal("0.00"),
                                         "escrow": Decimal("0.00"), "fees": Decimal("0.00"),
                                         "clearing": Decimal("0.00"), "entries": 0}
    assert pg.execute("SELECT count(*) AS n FROM campaign_fundings").fetchone()["n"] == 0
    event = pg.execute("SELECT ignored_reason FROM stripe_events").fetchone()
    assert intent.id in event["ignored_reason"] and "no funding" in event["ignored_reason"]
    assert_books_balance(stripe_settings)


async def test_event_signed_with_an_old_default_secret_is_refused(api, pg, stripe_settings):
    business, _ = make_user(pg, stripe_settings, "business")
    campaign = make_campaign(pg, business)
    payload = succeeded_event("evt_default", "pi_default", FIVE_MILLION_CENTS, {"oros_campaign_id": campaign})

    for secret in ("whsec_oros_dev", "whsec_replace_me", ""):
        resp = await api.post("/v1/webhooks/stripe", data=payload, headers=signed(payload, secret))
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_signature", secret
    assert money_state(pg, campaign)["remaining_budget"] == 0


async def test_amount_received_unlike_the_row_is_refused_and_recorded(api, pg, stripe_settings, caplog):
    business, auth = make_user(pg, stripe_settings, "business")
    campaign = make_campaign(pg, business)
    body = await (await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "40.00"}, headers=auth)).json()
    larger = succeeded_event("evt_larger", body["payment_intent_id"], FIVE_MILLION_CENTS)

    resp = await api.post("/v1/webhooks/stripe", data=larger, headers=signed(larger, WEBHOOK_SECRET))

    assert resp.status == 200 and (await resp.json())["status"] == "ignored"
    row = funding(pg, body["id"])
    assert row["status"] == "refused" and row["amount"] == Decimal("40.00")
    assert "5000000.00" in row["refusal_reason"] and "40.00" in row["refusal_reason"]
    assert any(r.levelname == "ERROR" and body["payment_intent_id"] in r.getMessage() + str(vars(r))
               for r in caplog.records)
    # A refused row stays refused: not even an event with the right amount credits it afterwards.
    right = succeeded_event("evt_right_after", body["payment_intent_id"], 4000)
    await api.post("/v1/webhooks/stripe", data=right, headers=signed(right, WEBHOOK_SECRET))
    assert money_state(pg, campaign)["remaining_budget"] == 0 and funding(pg, body["id"])["status"] == "refused"
    assert_books_balance(stripe_settings)


async def test_smaller_or_missing_amount_is_refused(api, pg, stripe_settings):
    business, auth = make_user(pg, stripe_settings, "business")
    campaign = make_campaign(pg, business)
    for n, cents in enumerate((3999, None)):
        body = await (await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "40.00"}, headers=auth)).json()
        event = orjson.loads(succeeded_event(f"evt_small_{n}", body["payment_intent_id"], 4000))
        event["data"]["object"]["amount_received"] = cents
        event["data"]["object"]["amount"] = cents
        payload = orjson.dumps(event)
        resp = await api.post("/v1/webhooks/stripe", data=payload, headers=signed(payload, WEBHOOK_SECRET))
        assert resp.status == 200, await resp.text()
        assert funding(pg, body["id"])["status"] == "refused"
    assert money_state(pg, campaign)["remaining_budget"] == 0


async def test_other_currency_is_refused_and_recorded(api, pg, stripe_settings):
    business, auth = make_user(pg, stripe_settings, "business")
    campaign = make_campaign(pg, business)
    body = await (await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "40.00"}, headers=auth)).json()
    event = orjson.loads(succeeded_event("evt_eur", body["payment_intent_id"], 4000))
    event["data"]["object"]["currency"] = "eur"
    payload = orjson.dumps(event)

    resp = await api.post("/v1/webhooks/stripe", data=payload, headers=signed(payload, WEBHOOK_SECRET))

    assert resp.status == 200
    row = funding(pg, body["id"])
    assert row["status"] == "refused" and "eur" in row["refusal_reason"]
    assert money_state(pg, campaign)["remaining_budget"] == 0


async def test_metadata_cannot_move_a_pending_row_to_another_campaign(api, pg, stripe_settings):
    business, auth = make_user(pg, stripe_settings, "business")
    campaign, other = make_campaign(pg, business), make_campaign(pg, business)
    body = await (await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "40.00"}, headers=auth)).json()
    payload = succeeded_event("evt_moved", body["payment_intent_id"], 4000, {"oros_campaign_id": other})

    resp = await api.post("/v1/webhooks/stripe", data=payload, headers=signed(payload, WEBHOOK_SECRET))

    assert (await resp.json())["campaign_id"] == campaign
    assert money_state(pg, campaign)["remaining_budget"] == Decimal("40.00")
    assert money_state(pg, other)["remaining_budget"] == 0


async def test_declined_card_then_a_good_one_credits_once(api, pg, stripe_settings, localstripe_url):
    """payment_failed is one attempt, not the intent's end: Stripe.js may retry it with another card."""
    business, auth = make_user(pg, stripe_settings, "business")
    campaign = make_campaign(pg, business)
    deliver_to(api, localstripe_url)
    body = await (await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "25.00"}, headers=auth)).json()

    with pytest.raises(stripe.CardError):
        await pay(stripe_settings, body["payment_intent_id"], DECLINED)
    await wait_for_events(pg, "payment_intent.payment_failed")
    assert funding(pg, body["id"])["status"] == "failed"
    # localstripe cannot retry a declined intent, so the success Stripe then sends is signed here.
    succeeded = succeeded_event("evt_retry_ok", body["payment_intent_id"], 2500)
    again = succeeded_event("evt_retry_again", body["payment_intent_id"], 2500)
    applied = await api.post("/v1/webhooks/stripe", data=succeeded, headers=signed(succeeded, WEBHOOK_SECRET))
    assert (await applied.json())["status"] == "applied"
    await api.post("/v1/webhooks/stripe", data=again, headers=signed(again, WEBHOOK_SECRET))

    assert funding(pg, body["id"])["status"] == "succeeded"
    assert money_state(pg, campaign)["remaining_budget"] == Decimal("25.00")
    assert_books_balance(stripe_settings)


async def test_replayed_webhook_changes_nothing(api, pg, stripe_settings):
    business, auth = make_user(pg, stripe_settings, "business")
    campaign = make_campaign(pg, business)
    body = await (await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "40.00"}, headers=auth)).json()
    payload = succeeded_event("evt_replay_1", body["payment_intent_id"], 4000)

    first = await api.post("/v1/webhooks/stripe", data=payload, headers=signed(payload, WEBHOOK_SECRET))
    again = await api.post("/v1/webhooks/stripe", data=payload, headers=signed(payload, WEBHOOK_SECRET))
    # A different event for the same intent (e.g. resent from the dashboard) credits nothing either.
    other = succeeded_event("evt_replay_2", body["payment_intent_id"], 4000)
    third = await api.post("/v1/webhooks/stripe", data=other, headers=signed(other, WEBHOOK_SECRET))

    assert (await first.json())["status"] == "applied"
    assert (await again.json())["status"] == "duplicate"
    assert third.status == 200 and "already credited" in (await third.json())["reason"]
    assert money_state(pg, campaign) == {"funded_budget": Decimal("40.00"), "remaining_budget": Decimal("40.00"),
                                         "escrow": Decimal("40.00"), "fees": Decimal("0.00"),
                                         "clearing": Decimal("40.00"), "entries": 2}


async def test_two_events_for_one_intent_at_once_credit_it_once(api, pg, stripe_settings):
    business, auth = make_user(pg, stripe_settings, "business")
    campaign = make_campaign(pg, business)
    body = await (await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "40.00"}, headers=auth)).json()
    events = [succeeded_event(f"evt_race_{n}", body["payment_intent_id"], 4000) for n in range(4)]

    answers = await asyncio.gather(*(api.post("/v1/webhooks/stripe", data=e, headers=signed(e, WEBHOOK_SECRET))
                                     for e in events))

    statuses = sorted([(await a.json())["status"] for a in answers])
    assert statuses == ["applied", "ignored", "ignored", "ignored"]
    assert money_state(pg, campaign)["remaining_budget"] == Decimal("40.00")
    assert_books_balance(stripe_settings)


async def test_payment_failed_marks_funding_failed(api, pg, stripe_settings):
    business, auth = make_user(pg, stripe_settings, "business")
    campaign = make_campaign(pg, business)
    body = await (await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "10.00"}, headers=auth)).json()
    payload = orjson.dumps({"id": "evt_fail", "type": "payment_intent.payment_failed", "created": int(time.time()),
                            "data": {"object": {"id": body["payment_intent_id"], "amount": 1000}}})

    resp = await api.post("/v1/webhooks/stripe", data=payload, headers=signed(payload, WEBHOOK_SECRET))

    assert (await resp.json())["fundings_failed"] == 1
    funding = pg.execute("SELECT status FROM campaign_fundings WHERE id = %s", (body["id"],)).fetchone()
    assert funding["status"] == "failed"
    assert money_state(pg, campaign)["remaining_budget"] == 0


async def test_bad_signature_is_refused(api, pg, stripe_settings):
    business, _ = make_user(pg, stripe_settings, "business")
    campaign = make_campaign(pg, business)
    payload = succeeded_event("evt_forged", "pi_forged", 100000, {"oros_campaign_id": campaign})
    stale = int(time.time()) - 3600
    stale_signature = hmac.new(WEBHOOK_SECRET.encode(), f"{stale}.".encode() + payload, hashlib.sha256).hexdigest()

    for headers in (
        {"Stripe-Signature": "t=1,v1=deadbeef"},
        {},
        signed(payload, "whsec_attacker"),
        {"Stripe-Signature": f"t={stale},v1={stale_signature}"},
    ):
        resp = await api.post("/v1/webhooks/stripe", data=payload, headers=headers)
        assert resp.status == 400, headers
        assert (await resp.json())["error"]["code"] == "bad_signature"
    assert money_state(pg, campaign)["remaining_budget"] == 0
    assert pg.execute("SELECT count(*) AS n FROM stripe_events").fetchone()["n"] == 0


async def test_malformed_signed_body_is_400(api):
    for payload in (b"not json", b"[1, 2]", orjson.dumps({"id": "evt_x", "type": "charge.refunded"})):
        resp = await api.post("/v1/webhooks/stripe", data=payload, headers=signed(payload, WEBHOOK_SECRET))
        assert resp.status == 400, payload
        assert (await resp.json())["error"]["code"] == "bad_payload"


async def test_unknown_event_type_is_acknowledged_and_ignored(api, pg):
    payload = orjson.dumps({"id": "evt_other", "type": "customer.created", "created": int(time.time()),
                            "data": {"object": {"id": "cus_1"}}})

    resp = await api.post("/v1/webhooks/stripe", data=payload, headers=signed(payload, WEBHOOK_SECRET))

    assert resp.status == 200 and (await resp.json())["status"] == "ignored"


async def test_fund_refuses_bad_input_and_strangers(api, pg, stripe_settings):
    business, auth = make_user(pg, stripe_settings, "business")
    _, stranger = make_user(pg, stripe_settings, "business")
    _, creator = make_user(pg, stripe_settings, "creator")
    campaign = make_campaign(pg, business)
    url = f"/v1/campaigns/{campaign}/fund"

    cases = [
        (auth, {"amount": "abc"}, 422, "amount"),
        (auth, {"amount": 12.5}, 422, "amount"),
        (auth, {"amount": "-5.00"}, 422, "amount"),
        (auth, {"amount": "1.001"}, 422, "amount"),
        (auth, {"amount": "1000000.00"}, 422, "amount"),
        (auth, {}, 422, "amount"),
        (stranger, {"amount": "10.00"}, 404, None),
        (creator, {"amount": "10.00"}, 403, None),
        ({}, {"amount": "10.00"}, 401, None),
    ]
    for headers, body, status, field in cases:
        resp = await api.post(url, json=body, headers=headers)
        assert resp.status == status, (body, await resp.text())
        assert (await resp.json())["error"].get("field") == field
    missing = await api.post("/v1/campaigns/00000000-0000-0000-0000-00000000abcd/fund", json={"amount": "1.00"},
                             headers=auth)
    assert missing.status == 404
    assert pg.execute("SELECT count(*) AS n FROM campaign_fundings").fetchone()["n"] == 0


async def test_fund_without_stripe_configured_is_503_naming_the_setting(aiohttp_client, pg, settings):
    api = await aiohttp_client(create_app(replace(settings, stripe_api_key=None)))
    business, auth = make_user(pg, settings, "business")
    campaign = make_campaign(pg, business)

    resp = await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "10.00"}, headers=auth)

    assert resp.status == 503, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "stripe_not_configured" and "STRIPE_API_KEY" in error["message"]
    assert pg.execute("SELECT count(*) AS n FROM campaign_fundings").fetchone()["n"] == 0
