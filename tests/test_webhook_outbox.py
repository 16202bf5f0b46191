"""The outbox is written by Postgres with each fact (sql/postgres/0066): what a settlement, a ledger credit
and a withdrawal's outcome announce, to whom, and that a rolled-back fact announces nothing.

Facts are made the real way (ClickHouse events settled by the settler, the
withdrawal functions the payout job calls); subscriptions are inserted as
the owner. Delivering is tests/test_webhooks.py's.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from oros.connections import pg_connect
from settler.run import settle_once

from factories import BUSINESS_EVENTS, now_ms, subscribe


def outbox(pg, owner: str | None = None) -> list[dict]:
    return pg.execute(
        "SELECT event_id::text AS event_id, endpoint_id::text AS endpoint_id, event_type, payload, status"
        " FROM webhook_deliveries WHERE %(owner)s::uuid IS NULL OR owner_id = %(owner)s"
        " ORDER BY event_type, payload ->> 'reason'", {"owner": owner}).fetchall()


def run_totals(pg) -> int:
    return pg.execute("SELECT count(*) AS n FROM webhook_run_totals").fetchone()["n"]


@pytest.fixture
def conversions(world):
    """A conversion campaign with: a paid conversion, a second one for the same click, one posted by
    another business, and the click itself (rejected on a conversion campaign: not announced)."""
    campaign = world.campaign(objective="conversion", payout="2.00", fund="100.00")
    creator = world.creator(campaign)
    click = world.click(campaign, creator, ts_ms=now_ms() - 60_000)
    paid = world.conversion(click, order_id="A-1")
    again = world.conversion(click, order_id="A-2", ts_ms=paid.ts_ms + 1)
    stranger = world.conversion(click, order_id="A-3", ts_ms=paid.ts_ms + 2, business_id=world.user("business"))
    world.put([click, paid, again, stranger])
    return {"campaign": campaign, "business": world.business_of(campaign), "creator": creator[0], "click": click,
            "paid": paid, "again": again, "stranger": stranger}


def test_a_settlement_announces_each_fact_to_its_listeners(world, pg, conversions):
    c = conversions
    hooks = [subscribe(pg, c["business"], BUSINESS_EVENTS), subscribe(pg, c["business"], ["conversion.recorded"])]
    earnings = subscribe(pg, c["creator"], ["earning.credited"])
    other_business = world.user("business")
    subscribe(pg, other_business, BUSINESS_EVENTS)
    subscribe(pg, world.user("creator"), ["earning.credited"])

    report = settle_once(world.settings)
    assert report["events_paid"] == 1 and report["events_rejected"] == 3

    rows = outbox(pg, c["business"])
    assert [(r["event_type"], r["payload"].get("reason")) for r in rows] == [
        ("conversion.recorded", None), ("conversion.recorded", None),
        ("event.rejected", "duplicate_conversion"), ("event.rejected", "wrong_business"),
        ("settlement.completed", None)]
    recorded = rows[0]["payload"]
    assert recorded["id"] == c["paid"].event_id and recorded["click_id"] == c["click"].event_id
    assert (recorded["order_id"], recorded["payout_amount"], recorded["platform_fee"]) == ("A-1", "2.00", "0.20")
    assert recorded["campaign_id"] == c["campaign"] and recorded["creator_id"] == c["creator"]
    assert recorded["settlement_run_id"] == report["run_id"] and recorded["event_type"] == "conversion"
    # One event, one id: the business's two endpoints get the same event id; each fact its own UUIDv7.
    assert rows[0]["event_id"] == rows[1]["event_id"] and {rows[0]["endpoint_id"], rows[1]["endpoint_id"]} == set(hooks)
    assert len({r["event_id"] for r in rows}) == 4 and all(uuid.UUID(r["event_id"]).version == 7 for r in rows)
    assert rows[3]["payload"]["id"] == c["stranger"].event_id

    settled = rows[4]["payload"]
    assert settled["settlement_run_id"] == report["run_id"] and settled["run_status"] == "succeeded"
    assert settled["campaigns"] == [{
        "campaign_id": c["campaign"], "events_paid": 1, "events_rejected": 3, "amount_paid": "2.00", "fees": "0.20",
        "rejected_by_reason": {"wrong_type": 1, "duplicate_conversion": 1, "wrong_business": 1},
        "remaining_budget": "98.00", "campaign_status": "active"}]

    [earning] = outbox(pg, c["creator"])
    assert earning["endpoint_id"] == earnings and earning["event_type"] == "earning.credited"
    assert {k: earning["payload"][k] for k in ("amount", "status", "source_type", "source_id", "events")} == {
        "amount": "1.80", "status": "pending", "source_type": "campaign", "source_id": c["campaign"], "events": 1}
    assert earning["payload"]["hold_until"] is not None
    assert len(outbox(pg)) == 6  # nothing for the other business or the other creator
    assert run_totals(pg) == 0  # folded into settlement.completed when the run ended

    # A run with nothing new announces nothing.
    settle_once(world.settings)
    assert len(outbox(pg)) == 6
    world.assert_books()


def test_without_listeners_nothing_is_written(world, pg, conversions):
    subscribe(pg, world.user("creator"), ["earning.credited", "withdrawal.paid"])  # someone else's interests
    settle_once(world.settings)
    assert outbox(pg) == [] and run_totals(pg) == 0
    world.assert_books()


def test_a_rolled_back_settlement_announces_nothing(world, pg, conversions):
    c = conversions
    subscribe(pg, c["business"], BUSINESS_EVENTS)
    subscribe(pg, c["creator"], ["earning.credited"])
    # The campaign's transaction fails after its events and legs are written (the ledger refuses).
    pg.execute("""CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN RAISE EXCEPTION 'refused by the test'; END $$""")
    pg.execute("CREATE TRIGGER test_refuse AFTER INSERT ON ledger_entries FOR EACH STATEMENT"
               " EXECUTE FUNCTION test_refuse()")
    with pytest.raises(Exception, match="refused by the test"):
        settle_once(world.settings)
    assert pg.execute("SELECT count(*) AS n FROM events").fetchone()["n"] == 0
    assert outbox(pg) == [] and run_totals(pg) == 0
    assert pg.execute("SELECT status FROM settlement_runs").fetchone()["status"] == "failed"

    pg.execute("DROP TRIGGER test_refuse ON ledger_entries")
    settle_once(world.settings)
    assert sorted(r["event_type"] for r in outbox(pg)) == [
        "conversion.recorded", "earning.credited", "event.rejected", "event.rejected", "settlement.completed"]
    world.assert_books()


def test_a_creator_is_told_once_per_settlement_however_many_clicks(world, pg):
    campaign = world.campaign(payout="0.50")
    other = world.campaign(world.business_of(campaign), payout="0.50")
    creator = world.creator(campaign)
    pg.execute("INSERT INTO campaign_creators (campaign_id, creator_id, status) VALUES (%s, %s, 'accepted')",
               (other, creator[0]))
    link = pg.execute("INSERT INTO tracking_links (campaign_id, creator_id, code, url, destination_url)"
                      " VALUES (%s, %s, 'other-link', 'http://t/x', 'https://example.com') RETURNING id::text AS id",
                      (other, creator[0])).fetchone()["id"]
    world.put([world.click(campaign, creator) for _ in range(40)] + [world.click(other, (creator[0], link))])
    subscribe(pg, creator[0], ["earning.credited"])
    business = world.business_of(campaign)
    subscribe(pg, business, ["settlement.completed"])

    settle_once(world.settings)
    earnings = {r["payload"]["source_id"]: r["payload"] for r in outbox(pg, creator[0])}
    assert {k: (v["amount"], v["events"]) for k, v in earnings.items()} == {campaign: ("18.00", 40),
                                                                            other: ("0.45", 1)}
    [settled] = outbox(pg, business)  # both campaigns are this business's: one event, two campaigns
    assert sorted((x["campaign_id"], x["events_paid"]) for x in settled["payload"]["campaigns"]) == sorted(
        [(campaign, 40), (other, 1)])

    # A partial refund's re-booked remainder is what is left of an earning, not a new one.
    pg.execute("""INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction,
                                              status, metadata)
                  SELECT w, t, 'campaign', %(c)s, 1.00, d, 'pending', '{"rebooked_from": "x"}'
                    FROM (VALUES ((SELECT id FROM wallets WHERE user_id = %(u)s AND purpose = 'main'), 'credit'),
                                 (oros_platform_wallet('escrow'), 'debit')) AS legs(w, d),
                         (SELECT gen_random_uuid() AS t) AS tr""", {"c": campaign, "u": creator[0]})
    assert len(outbox(pg, creator[0])) == 2


def test_withdrawal_outcomes_are_announced_to_their_creator(world, pg, settings):
    creator = world.user("creator")
    pg.execute("UPDATE users SET kyc_status = 'approved' WHERE id = %s", (creator,))
    paid_only = subscribe(pg, creator, ["withdrawal.paid"])
    both = subscribe(pg, creator, ["withdrawal.paid", "withdrawal.failed", "earning.credited"])
    pg.execute("""INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, amount, direction, status)
                  SELECT w, t, 'adjustment', 100.00, d, 'settled'
                    FROM (VALUES ((SELECT id FROM wallets WHERE user_id = %s AND purpose = 'main'), 'credit'),
                                 (oros_platform_wallet('clearing'), 'debit')) AS legs(w, d),
                         (SELECT gen_random_uuid() AS t) AS tr""", (creator,))
    ids = []
    for amount in ("30.00", "20.00"):
        with pg_connect(settings) as conn, conn.transaction():
            conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (creator,))
            ids.append(str(conn.execute("SELECT (oros_request_withdrawal(%s, 'ach')).id", (Decimal(amount),))
                           .fetchone()["id"]))
    pg.execute("UPDATE withdrawals SET status = 'processing'")  # what the payout job does first: no event
    assert [r["event_type"] for r in outbox(pg, creator)] == ["earning.credited"]
    pg.execute("SELECT oros_finish_withdrawal(%s, true, 'tr_1', NULL)", (ids[0],))
    pg.execute("SELECT oros_finish_withdrawal(%s, false, NULL, 'account closed')", (ids[1],))

    rows = [r for r in outbox(pg, creator) if r["event_type"] != "earning.credited"]
    assert sorted((r["endpoint_id"] == both, r["event_type"]) for r in rows) == [
        (False, "withdrawal.paid"), (True, "withdrawal.failed"), (True, "withdrawal.paid")]
    by_type = {r["event_type"]: r["payload"] for r in rows}
    assert by_type["withdrawal.paid"]["id"] == ids[0] and by_type["withdrawal.paid"]["amount"] == "30.00"
    assert by_type["withdrawal.paid"]["stripe_transfer_id"] == "tr_1"
    assert by_type["withdrawal.failed"]["failure_reason"] == "account closed"
    assert paid_only in {r["endpoint_id"] for r in rows}
    # Updating a finished withdrawal again (nothing changes status) announces nothing new.
    pg.execute("UPDATE withdrawals SET failure_reason = failure_reason")
    assert len(outbox(pg, creator)) == 4
