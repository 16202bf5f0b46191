"""Tips: paid through Stripe, booked only by a verified webhook, once, for what was asked; unlocks; monthly tips."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import psycopg
import pytest
import requests

from oros.connections import as_user, pg_connect, pg_pool
from settler.payouts import pay_withdrawals
from settler.reconcile import reconcile

from interleave import Writer, quick_deadlocks, until, waiting
from stripe_double import StripeDouble
from supporter_flows import D, wait_for


def deliver_to(flows, localstripe_url: str) -> None:
    """localstripe signs its own payment_intent events with our secret and posts them to this test's server."""
    requests.post(f"{localstripe_url}/_config/webhooks/oros-test", timeout=5, data={
        "url": str(flows.api.server.make_url("/v1/webhooks/stripe")), "secret": flows.billing.secret,
        "events[]": ["payment_intent.succeeded", "payment_intent.payment_failed"]}).raise_for_status()


@pytest.fixture
def transfers():
    double = StripeDouble().start()
    yield double
    double.stop()


async def test_a_tip_end_to_end_payment_webhook_ledger_hold_release_withdrawal(flows, localstripe_url, transfers):
    supporter = flows.user("supporter")
    creator = flows.user("creator", stripe_account="acct_tipped")
    transfers.accounts.add("acct_tipped")
    deliver_to(flows, localstripe_url)

    tip = await flows.open_tip(supporter, creator, "20.00", message="for the last video")
    assert tip["status"] == "pending" and tip["client_secret"].startswith(tip["stripe_payment_intent_id"])
    assert flows.pg.execute("SELECT count(*) AS n FROM tips").fetchone()["n"] == 0  # nothing before Stripe says so
    await flows.card_pays(tip["stripe_payment_intent_id"])
    await wait_for(flows.pg, "SELECT count(*) AS n FROM tips", (), 1)

    row = flows.pg.execute("SELECT * FROM tips").fetchone()
    assert (row["amount"], row["platform_fee"], row["net_amount"], row["message"]) == (
        D("20.00"), D("1.00"), D("19.00"), "for the last video")  # OROS_TIP_FEE_PCT 5
    assert flows.wallet(creator) == (D("0.00"), D("19.00"))  # pending, held
    assert flows.platform("fees") == (D("0.00"), D("1.00"))
    assert flows.platform("clearing")[0] == D("20.00")
    flows.assert_books()
    for user, direction in ((supporter, "sent"), (creator, "received")):
        page = await (await flows.api.get(f"/v1/tips?direction={direction}", headers=user.headers)).json()
        assert [(t["id"], t["amount"], t["net_amount"]) for t in page["items"]] == [(str(row["id"]), "20.00", "19.00")]
    assert (await (await flows.api.get("/v1/tips?direction=received", headers=supporter.headers)).json())[
        "items"] == []

    assert flows.release_holds() == 2  # the creator's credit and the fee
    assert flows.wallet(creator) == (D("19.00"), D("0.00"))
    resp = await flows.api.post("/v1/withdrawals", json={"amount": "19.00", "method": "ach"}, headers=creator.headers)
    assert resp.status == 201, await resp.text()
    paid = pay_withdrawals(replace(flows.settings, stripe_api_base=transfers.url))
    assert paid == {"paid": 1, "failed": 0, "deferred": 0, "amount_paid": "19.00"}
    assert [t["destination"] for t in transfers.transfers] == ["acct_tipped"]
    assert flows.wallet(creator) == (D("0.00"), D("0.00"))
    assert flows.platform("clearing")[0] == D("1.00")  # 20 in, 19 paid out: the fee stays
    flows.assert_books()


async def no_sale_refund_appended(flows, redis) -> None:
    """A tip's refund is never a checkout sale's: nothing in the event stream, nothing in events."""
    assert await redis.xlen(flows.settings.keys.stream) == 0
    assert flows.pg.execute("SELECT count(*) AS n FROM events WHERE event_type = 'refund'").fetchone()["n"] == 0


async def test_replayed_out_of_order_and_repeated_webhooks_book_the_tip_once(flows, redis):
    supporter, creator = flows.user("supporter"), flows.user("creator")
    tip = await flows.open_tip(supporter, creator, "10.00")
    pi = tip["stripe_payment_intent_id"]
    # The refund of a partial 2.00 reaches us before the payment does: kept for the tip, no sale's refund.
    status, early = await flows.send(*flows.refunded(pi, "10.00", "2.00"))
    assert (status, early["status"], early.get("kind"), early.get("outcome")) == (200, "applied", "tip", "recorded")
    assert early["object_id"] == tip["id"]
    await no_sale_refund_appended(flows, redis)
    succeeded = flows.succeeded(pi, 1000, event_id="evt_tip_paid")

    first = await flows.send(*succeeded)
    again = await flows.send(*succeeded)
    other = await flows.send(*flows.succeeded(pi, 1000))

    assert first[1]["status"] == "applied" and again[1]["status"] == "duplicate"
    assert other[1]["status"] == "ignored" and "already credited" in other[1]["reason"]
    [row] = flows.pg.execute("SELECT * FROM tips").fetchall()
    # Credited, then the earlier refund applied at once: net back round(9.50 x 2/10) = 1.90, fee back 0.10.
    assert (row["reversed_amount"], row["reversed_fee"]) == (D("2.00"), D("0.10"))
    assert flows.wallet(creator) == (D("0.00"), D("7.60"))
    assert flows.platform("clearing")[0] == D("8.00")
    # An older refund total arriving late changes nothing.
    assert (await flows.send(*flows.refunded(pi, "10.00", "1.00")))[0] == 200
    assert flows.tip_row(str(row["id"]))["reversed_amount"] == D("2.00")
    await no_sale_refund_appended(flows, redis)
    flows.assert_books()


async def test_two_webhooks_for_one_payment_at_once_credit_it_once(flows):
    supporter, creator = flows.user("supporter"), flows.user("creator")
    tip = await flows.open_tip(supporter, creator, "7.00")
    events = [flows.succeeded(tip["stripe_payment_intent_id"], 700) for _ in range(4)]

    answers = await asyncio.gather(*(flows.send(*e) for e in events))

    assert sorted(body["status"] for _, body in answers) == ["applied", "ignored", "ignored", "ignored"]
    assert flows.pg.execute("SELECT count(*) AS n FROM tips").fetchone()["n"] == 1
    assert flows.wallet(creator) == (D("0.00"), D("6.65"))
    flows.assert_books()


async def test_forged_and_unsigned_webhooks_credit_nothing(flows):
    supporter, creator = flows.user("supporter"), flows.user("creator")
    tip = await flows.open_tip(supporter, creator, "50.00")
    payload, headers = flows.succeeded(tip["stripe_payment_intent_id"], 5000)
    _, forged = flows.billing.event("payment_intent.succeeded", {}, secret="whsec_attacker_" + "x" * 24)

    for bad in ({}, {"Stripe-Signature": "t=1,v1=deadbeef"}, {**headers, "Stripe-Signature": forged[
            "Stripe-Signature"]}, {"Stripe-Signature": headers["Stripe-Signature"].replace("t=", "t=1")}):
        status, body = await flows.send(payload, {"Content-Type": "application/json", **bad})
        assert (status, body["error"]["code"]) == (400, "bad_signature"), bad
    assert flows.pg.execute("SELECT count(*) AS n FROM tips").fetchone()["n"] == 0
    assert flows.pg.execute("SELECT count(*) AS n FROM stripe_events").fetchone()["n"] == 0


async def test_a_tampered_amount_creates_no_tip_ever(flows, caplog):
    supporter, creator = flows.user("supporter"), flows.user("creator", min_tip="5.00")
    tip = await flows.open_tip(supporter, creator, "5.00")
    pi = tip["stripe_payment_intent_id"]

    for cents in (100, 500_000_000):  # under the minimum, and far over what was asked
        status, body = await flows.send(*flows.succeeded(pi, cents))
        assert (status, body["status"]) == (200, "ignored")
    status, body = await flows.send(*flows.succeeded(pi, 500))  # even the right amount, afterwards

    assert body["status"] == "ignored"
    intent = flows.pg.execute("SELECT status, refusal_reason FROM tip_intents").fetchone()
    assert intent["status"] == "refused" and "1.00" in intent["refusal_reason"]
    assert flows.pg.execute("SELECT count(*) AS n FROM tips").fetchone()["n"] == 0
    assert any(r.levelname == "ERROR" and "refused" in r.getMessage() for r in caplog.records)
    flows.assert_books()


async def test_tip_input_is_checked_before_stripe_is_asked(flows):
    supporter, creator = flows.user("supporter"), flows.user("creator", min_tip="5.00")
    other_creator, business = flows.user("creator"), flows.user("business")
    both = flows.user("supporter", "creator")
    foreign_post = flows.post(other_creator, min_tip_to_unlock="5.00")
    base = {"to_creator_id": creator.id, "amount": "5.00", "frequency": "one_time"}
    cases = [
        (supporter, {**base, "to_creator_id": business.id}, 422, "to_creator_id"),
        (supporter, {**base, "to_creator_id": "00000000-0000-0000-0000-00000000abcd"}, 422, "to_creator_id"),
        (supporter, {**base, "to_creator_id": "not-a-uuid"}, 422, "to_creator_id"),
        (both, {**base, "to_creator_id": both.id}, 422, "to_creator_id"),
        (supporter, {**base, "amount": "4.99"}, 422, "amount"),
        (supporter, {**base, "amount": "5.001"}, 422, "amount"),
        (supporter, {**base, "amount": 5.5}, 422, "amount"),
        (supporter, {**base, "amount": "abc"}, 422, "amount"),
        (supporter, {**base, "amount": "1000000.00"}, 422, "amount"),
        (supporter, {**base, "amount": None}, 422, "amount"),
        (supporter, {**base, "amount": "５.00"}, 422, "amount"),  # fullwidth digits: Decimal() would read 5.00
        (supporter, {**base, "amount": "5.0٠"}, 422, "amount"),  # an Arabic-Indic zero
        (supporter, {**base, "amount": True}, 422, "amount"),
        (supporter, {**base, "amount": "-5.00"}, 422, "amount"),
        (supporter, {**base, "amount": "0"}, 422, "amount"),
        (supporter, {**base, "frequency": "monthly", "amount": "5.00", "to_creator_id": supporter.id}, 422,
         "to_creator_id"),
        (supporter, {**base, "frequency": "weekly"}, 422, "frequency"),
        (supporter, {**base, "post_id": foreign_post}, 422, "post_id"),
        (supporter, {**base, "post_id": "00000000-0000-0000-0000-00000000abcd"}, 422, "post_id"),
        (supporter, {**base, "message": "x" * 501}, 422, "message"),
        (supporter, {**base, "message": "nul \x00 byte"}, 422, "message"),
        (business, base, 403, None),
        ({}, base, 401, None),
    ]
    for user, body, status, field in cases:
        resp = await flows.api.post("/v1/tips", json=body, headers=getattr(user, "headers", {}))
        assert resp.status == status, (body, await resp.text())
        assert (await resp.json())["error"].get("field") == field, body
    resp = await flows.api.post("/v1/tips", data=b"\xff\xfe{not json", headers=supporter.headers)
    assert resp.status == 400
    assert flows.pg.execute("SELECT count(*) AS n FROM tip_intents").fetchone()["n"] == 0
    assert not any(path.startswith("/v1/payment_intents") for _, path in flows.billing.requests)


async def test_a_tip_at_the_unlock_price_unlocks_the_post_and_a_refund_locks_it_again(flows):
    supporter, creator = flows.user("supporter"), flows.user("creator")
    post = flows.post(creator, min_tip_to_unlock="5.00")

    short = await flows.paid_tip(supporter, creator, "4.99", post_id=post)
    enough = await flows.paid_tip(supporter, creator, "5.00", post_id=post)

    unlocks = flows.pg.execute("SELECT tip_id::text AS tip_id, community_post_id::text AS post FROM tip_unlocks")
    assert unlocks.fetchall() == [{"tip_id": enough["tip_id"], "post": post}]
    assert flows.tip_row(short["tip_id"])["post_id"] is not None  # a tip on the post, not an unlock
    pi = flows.tip_row(enough["tip_id"])["stripe_payment_intent_id"]
    await flows.send(*flows.refunded(pi, "5.00", "0.01"))  # 4.99 kept: under the price
    assert flows.pg.execute("SELECT count(*) AS n FROM tip_unlocks").fetchone()["n"] == 0
    flows.assert_books()


async def test_a_monthly_tip_is_one_tip_per_paid_invoice(flows):
    supporter, creator = flows.user("supporter"), flows.user("creator")
    tip = await flows.open_tip(supporter, creator, "3.00", frequency="monthly")
    sub = tip["stripe_subscription_id"]
    assert tip["status"] == "pending" and tip["client_secret"] and sub.startswith("sub_")

    invoices = [flows.billing.pay(sub), flows.billing.renew(sub), flows.billing.renew(sub)]
    answers = [await flows.send(*flows.billing.event("invoice.paid", inv, event_id=f"evt_{inv['id']}"))
               for inv in invoices]
    # Stripe sends invoice.payment_succeeded beside invoice.paid, and may redeliver.
    twin = await flows.send(*flows.billing.event("invoice.payment_succeeded", invoices[1]))
    replay = await flows.send(*flows.billing.event("invoice.paid", invoices[2], event_id=f"evt_{invoices[2]['id']}"))

    assert [body["status"] for _, body in answers] == ["applied"] * 3
    assert twin[1]["status"] == "ignored" and replay[1]["status"] == "duplicate"
    rows = flows.pg.execute("SELECT amount, net_amount, stripe_invoice_id, stripe_payment_intent_id FROM tips"
                            " ORDER BY created_at").fetchall()
    assert [(r["amount"], r["stripe_invoice_id"]) for r in rows] == [(D("3.00"), inv["id"]) for inv in invoices]
    assert [r["stripe_payment_intent_id"] for r in rows] == [flows.billing.payment_intent_of(i) for i in invoices]
    assert flows.wallet(creator) == (D("0.00"), D("8.55"))  # 3 x (3.00 - 0.15)
    assert flows.pg.execute("SELECT status FROM tip_intents").fetchone()["status"] == "active"
    page = await (await flows.api.get("/v1/tips?direction=sent&limit=2", headers=supporter.headers)).json()
    rest = await (await flows.api.get(f"/v1/tips?direction=sent&cursor={page['next_cursor']}",
                                      headers=supporter.headers)).json()
    assert len(page["items"]) == 2 and len(rest["items"]) == 1 and rest["next_cursor"] is None
    flows.assert_books()

    resp = await flows.api.post(f"/v1/tips/monthly/{tip['id']}/cancel", headers=supporter.headers)
    assert resp.status == 200 and (await resp.json())["status"] == "canceled"
    assert flows.billing.subscription(sub)["status"] == "canceled"
    ended = await flows.send(*flows.billing.event("customer.subscription.deleted", flows.billing.end(sub)))
    assert ended[0] == 200
    stranger = await flows.api.post(f"/v1/tips/monthly/{tip['id']}/cancel", headers=creator.headers)
    assert stranger.status == 404
    assert flows.pg.execute("SELECT status FROM tip_intents").fetchone()["status"] == "canceled"
    flows.assert_books()  # the three tips stay paid


async def test_a_monthly_invoice_for_another_amount_is_refused_refunded_and_the_subscription_stopped(flows, redis):
    supporter, creator = flows.user("supporter"), flows.user("creator")
    tip = await flows.open_tip(supporter, creator, "3.00", frequency="monthly")
    sub = tip["stripe_subscription_id"]
    invoice = flows.billing.pay(sub, amount_paid=1)
    cancels = ("DELETE", f"/v1/subscriptions/{sub}")

    status, body = await flows.send(*flows.billing.event("invoice.paid", invoice))
    twin = await flows.send(*flows.billing.event("invoice.payment_succeeded", invoice))

    assert (status, body["status"], twin[1]["status"]) == (200, "ignored", "ignored")
    assert flows.pg.execute("SELECT count(*) AS n FROM tips").fetchone()["n"] == 0
    assert flows.pg.execute("SELECT status FROM tip_intents").fetchone()["status"] == "refused"
    # Nothing will be charged again: the subscription is canceled at Stripe, and the charge that bought nothing
    # is given back whole, once (the twin event refunds nothing more).
    assert flows.billing.subscription(sub)["status"] == "canceled"
    assert [(r["payment_intent"], r["amount"]) for r in flows.billing.refunds] == [
        (flows.billing.payment_intent_of(invoice), 1)]
    refund = flows.pg.execute("SELECT reason, status, transfer_id, campaign_id FROM issued_refunds").fetchone()
    assert refund == {"reason": "tip_refused", "status": "succeeded", "transfer_id": None, "campaign_id": None}
    # Stripe reports that refund back: ours, nothing to take back, and no sale's refund.
    status, reported = await flows.send(*flows.refunded(flows.billing.payment_intent_of(invoice), "0.01", "0.01"))
    assert (status, reported.get("kind"), reported.get("outcome")) == (200, "tip", "recorded"), reported
    await no_sale_refund_appended(flows, redis)
    flows.assert_books()
    # The supporter may still stop it (a cancel at Stripe that failed after the refusal is retried here).
    asked = flows.billing.requests.count(cancels)
    resp = await flows.api.post(f"/v1/tips/monthly/{tip['id']}/cancel", headers=supporter.headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["status"], body["ended_at"] is not None) == ("refused", True)
    assert flows.billing.requests.count(cancels) == asked + 1
    again = await flows.api.post(f"/v1/tips/monthly/{tip['id']}/cancel", headers=supporter.headers)
    assert again.status == 200 and flows.billing.requests.count(cancels) == asked + 1
    flows.assert_books()


async def _booked_then_refused(flows):
    """A monthly tip: invoice 1 credited (3.00), invoice 2 paid 0.01 and refused (given back); the intent is
    'refused' from then on. Returns (creator, invoice 1)."""
    supporter, creator = flows.user("supporter"), flows.user("creator")
    sub = (await flows.open_tip(supporter, creator, "3.00", frequency="monthly"))["stripe_subscription_id"]
    first = flows.billing.pay(sub)
    assert (await flows.send(*flows.billing.event("invoice.paid", first)))[1]["status"] == "applied"
    second = flows.billing.renew(sub, amount_paid=1)
    assert (await flows.send(*flows.billing.event("invoice.paid", second)))[1]["status"] == "ignored"
    assert flows.pg.execute("SELECT status FROM tip_intents").fetchone()["status"] == "refused"
    return creator, first


async def test_a_late_event_of_a_booked_invoice_after_a_refusal_refunds_nothing(flows):
    creator, first = await _booked_then_refused(flows)
    booked = flows.billing.payment_intent_of(first)

    # Stripe's twin of the booked invoice, and a retry of its invoice.paid (as after a 503), arrive late.
    twin = await flows.send(*flows.billing.event("invoice.payment_succeeded", first))
    retried = await flows.send(*flows.billing.event("invoice.paid", first))

    assert flows.billing.refunded(booked) == 0
    assert flows.pg.execute("SELECT count(*) AS n FROM issued_refunds WHERE payment_intent_id = %s",
                            (booked,)).fetchone()["n"] == 0
    assert [body["status"] for _, body in (twin, retried)] == ["ignored", "ignored"]
    assert "already credited" in twin[1]["reason"] and "already credited" in retried[1]["reason"]
    tip = flows.pg.execute("SELECT amount, reversed_amount FROM tips").fetchone()
    assert tip == {"amount": D("3.00"), "reversed_amount": D("0.00")}
    assert flows.wallet(creator) == (D("0.00"), D("2.85"))
    flows.assert_books()


async def test_reconcile_names_a_refused_tip_refund_of_a_booked_payment(flows):
    _, first = await _booked_then_refused(flows)
    booked = flows.billing.payment_intent_of(first)
    # Forged as the owner: what 0170 issued for a late event of a booked invoice.
    flows.pg.execute("INSERT INTO issued_refunds (reason, tip_intent_id, payment_intent_id, amount)"
                     " SELECT 'tip_refused', id, %s, 3.00 FROM tip_intents", (booked,))

    failed = {c.name: c.detail for c in reconcile(flows.settings) if not c.ok}
    assert list(failed) == ["refused_tip_refunds_never_booked"] and booked in failed[
        "refused_tip_refunds_never_booked"]


async def test_the_request_role_cannot_credit_a_tip_or_open_one_for_someone_else(flows):
    supporter, creator = flows.user("supporter"), flows.user("creator")
    tip = await flows.open_tip(supporter, creator, "5.00")
    pool = pg_pool(flows.settings, max_size=1)
    await pool.open(wait=True)
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with as_user(pool, supporter.id) as conn:
                await conn.execute("SELECT * FROM oros_credit_tip('evt_x', %s, NULL, NULL, 5.00, 'usd', 0, 0)",
                                   (tip["stripe_payment_intent_id"],))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # a creator is no supporter
            async with as_user(pool, creator.id) as conn:
                await conn.execute("SELECT oros_open_tip(gen_random_uuid(), %s, 5.00, 'one_time', NULL, NULL,"
                                   " 'pi_forged', NULL)", (supporter.id,))
    finally:
        await pool.close()
    assert flows.pg.execute("SELECT count(*) AS n FROM tips").fetchone()["n"] == 0



@pytest.mark.parametrize(("query", "field"), [
    ("status=bogus", "status"), ("status=", "status"), ("status=ACTIVE", "status"), ("status=%FF%FE", "status"),
    ("status=active%00", "status"), ("status=ａｃｔｉｖｅ", "status"), ("limit=0", "limit"), ("limit=-1", "limit"),
    ("limit=1e3", "limit"), ("limit=%D9%A1", "limit"),  # an Arabic-Indic one: int() would read 1
    ("limit=99999999999999999999999", "limit"), ("cursor=%FF", "cursor"), ("cursor=AAAA", "cursor"),
    ("cursor=MjAyNi0wMS0wMXxub3QtYS11dWlk", "cursor"),  # base64 of "2026-01-01|not-a-uuid"
])
async def test_a_bad_monthly_tips_query_is_a_4xx_naming_the_field(flows, query, field):
    """The attack: values and bytes the list does not expect (the tips page's ?status=) answer 422, never 500."""
    supporter = flows.user("supporter")
    resp = await flows.api.get(f"/v1/tips/monthly?{query}", headers=supporter.headers)
    body = await resp.json()
    assert (resp.status, body["error"]["field"]) == (422, field), body


async def test_a_refund_racing_its_payments_credit_is_applied_once_both_commit(flows):
    """The refund's webhook runs while the payment's (credited, not committed) holds the payment: it waits, then
    finds the tip and reverses it (before 0171's lock each missed the other and the tip kept all its money)."""
    quick_deadlocks(flows.pg)
    supporter, creator = flows.user("supporter"), flows.user("creator")
    pi = (await flows.open_tip(supporter, creator, "10.00"))["stripe_payment_intent_id"]
    credit = "SELECT outcome FROM oros_credit_tip('evt_credit', %s, NULL, NULL, 10.00, 'usd', 5, 14)"
    refund = "SELECT kind, outcome FROM oros_record_refund(%s, 'ch_x', 2.00)"

    with pg_connect(flows.settings) as paying, pg_connect(flows.settings) as refunding:
        assert paying.execute(credit, (pi,)).fetchone()["outcome"] == "credited"  # not committed yet
        racing = Writer(lambda: (refunding.execute(refund, (pi,)).fetchone(), refunding.commit())[0])
        racing.start()
        until(lambda: waiting(flows.pg) == 1 or not racing.is_alive())  # on the payment, until it commits
        paying.commit()
        assert racing.finish() == {"kind": "tip", "outcome": "reversed_in_hold"}

    [tip] = flows.pg.execute("SELECT * FROM tips").fetchall()
    assert (tip["reversed_amount"], tip["reversed_fee"]) == (D("2.00"), D("0.10"))
    assert flows.wallet(creator) == (D("0.00"), D("7.60"))
    flows.assert_books()


async def test_a_refund_and_a_dispute_at_once_take_back_both(flows):
    """Each records its side, then brings the tip to what Stripe took back in all: the second waits for the first
    and reads both (before 0171's lock it had read only its own, and wrote that stale target over the first's)."""
    quick_deadlocks(flows.pg)
    supporter, creator = flows.user("supporter"), flows.user("creator")
    paid = await flows.paid_tip(supporter, creator, "10.00")
    pi = flows.tip_row(paid["tip_id"])["stripe_payment_intent_id"]
    refund = "SELECT kind, outcome, taken FROM oros_record_refund(%s, 'ch_x', 2.00)"
    dispute = ("SELECT kind, outcome, taken FROM oros_record_dispute('dp_x', %s, 'ch_x', 3.00, 'needs_response',"
               " true, false)")

    with pg_connect(flows.settings) as refunding, pg_connect(flows.settings) as disputing:
        assert refunding.execute(refund, (pi,)).fetchone()["taken"] == D("2.00")  # not committed yet
        racing = Writer(lambda: (disputing.execute(dispute, (pi,)).fetchone(), disputing.commit())[0])
        racing.start()
        until(lambda: waiting(flows.pg) == 1)
        refunding.commit()
        assert racing.finish()["taken"] == D("5.00")

    tip = flows.tip_row(paid["tip_id"])
    assert tip["reversed_amount"] == D("5.00")  # refunded 2.00 + disputed 3.00
    assert flows.wallet(creator) == (D("0.00"), D("4.75"))  # net 9.50 less round(9.50 x 5/10)
    flows.assert_books()


async def test_a_retried_tip_request_with_its_idempotency_key_asks_and_books_once(flows):
    """A supporter's client retrying POST /v1/tips (a lost answer) must not tip twice."""
    supporter, creator = flows.user("supporter"), flows.user("creator")
    body = {"to_creator_id": creator.id, "amount": "6.00", "frequency": "one_time"}
    headers = {**supporter.headers, "Idempotency-Key": "tip-6"}

    answers = [await flows.api.post("/v1/tips", json=body, headers=headers) for _ in range(2)]

    assert [r.status for r in answers] == [201, 201]
    first, again = [await r.json() for r in answers]
    assert (again["id"], again["stripe_payment_intent_id"]) == (first["id"], first["stripe_payment_intent_id"])
    assert flows.pg.execute("SELECT count(*) AS n FROM tip_intents").fetchone()["n"] == 1
    other = await flows.api.post("/v1/tips", json={**body, "amount": "7.00"}, headers=headers)
    assert (other.status, (await other.json())["error"]["code"]) == (422, "idempotency_key_reused")
    paid = await flows.send(*flows.succeeded(first["stripe_payment_intent_id"], 600))
    assert paid[1]["status"] == "applied"
    assert flows.pg.execute("SELECT count(*) AS n FROM tips").fetchone()["n"] == 1
    assert flows.wallet(creator) == (D("0.00"), D("5.70"))
    flows.assert_books()


async def test_a_won_dispute_gives_the_unlock_back(flows):
    supporter, creator = flows.user("supporter"), flows.user("creator")
    post = flows.post(creator, min_tip_to_unlock="5.00")
    paid = await flows.paid_tip(supporter, creator, "5.00", post_id=post)
    pi = flows.tip_row(paid["tip_id"])["stripe_payment_intent_id"]
    unlocks = "SELECT count(*) AS n FROM tip_unlocks WHERE tip_id = %s"

    await flows.send(*flows.disputed("charge.dispute.created", pi, "5.00", "needs_response", "dp_unlock"))
    assert flows.pg.execute(unlocks, (paid["tip_id"],)).fetchone()["n"] == 0  # the money is gone: so is the unlock
    status, won = await flows.send(*flows.disputed("charge.dispute.closed", pi, "5.00", "won", "dp_unlock"))

    assert (status, won["outcome"]) == (200, "reversed_in_hold"), won
    assert flows.tip_row(paid["tip_id"])["reversed_amount"] == D("0.00")
    assert flows.pg.execute(unlocks, (paid["tip_id"],)).fetchone()["n"] == 1
    assert flows.wallet(creator) == (D("0.00"), D("4.75"))
    flows.assert_books()
