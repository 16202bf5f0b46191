"""Settlement end to end: ClickHouse events -> verified -> paid in Postgres, exactly once
(``world``: tests/factories.py)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from oros.events import Event, uuid7
from oros.reasons import UNKNOWN_CAMPAIGN
from settler.holds import release_due
from settler.run import settle_once

from factories import SYSTEM, D, now_ms

# A report's refunds that took back no supporter's reward.
NO_REWARDS_BACK = {"share_rewards": {"count": 0, "amount": "0.00"}, "boost_rewards": {"count": 0, "amount": "0.00"}}


def test_pays_a_click_with_the_designed_split(world):
    campaign = world.campaign(payout="0.55", fund="10.00")
    creator = world.creator(campaign)
    click = world.click(campaign, creator)
    world.put([click])

    report = settle_once(world.settings)

    assert report["events_paid"] == 1 and report["events_rejected"] == 0
    # fee = round_half_up(0.55 * 10 / 100) = 0.06 (0.055 rounds up); net = 0.49
    assert report["amount_paid"] == "0.55" and report["fees"] == "0.06"
    assert world.decision(click)["status"] == "paid"
    creator_wallet = world.wallet(creator[0])
    assert creator_wallet["pending_balance"] == D("0.49") and creator_wallet["available_balance"] == 0
    assert world.wallet(SYSTEM, "fees")["pending_balance"] == D("0.06")
    assert world.wallet(SYSTEM, "escrow")["available_balance"] == D("9.45")
    row = world.campaign_row(campaign)
    assert row["remaining_budget"] == D("9.45")
    earned = world.pg.execute("SELECT total_earned FROM campaign_creators WHERE creator_id = %s",
                              (creator[0],)).fetchone()["total_earned"]
    assert earned == D("0.49")
    link = world.pg.execute("SELECT click_count FROM tracking_links WHERE id = %s", (creator[1],)).fetchone()
    assert link["click_count"] == 1
    runs = world.pg.execute("SELECT status, events_paid FROM settlement_runs WHERE kind = 'settle'").fetchall()
    assert runs == [{"status": "succeeded", "events_paid": 1}]
    world.assert_books()


def test_replay_pays_nothing_twice(world):
    campaign = world.campaign()
    creator = world.creator(campaign)
    clicks = [world.click(campaign, creator) for _ in range(5)]
    world.put(clicks)
    assert settle_once(world.settings)["events_paid"] == 5
    # The same events ingested again (a replayed stream) and a rerun from scratch (watermark lost).
    world.put(clicks)
    world.pg.execute("DELETE FROM settler_state")
    again = settle_once(world.settings)
    assert again["events_seen"] == 0 and again["events_paid"] == 0
    assert world.campaign_row(campaign)["remaining_budget"] == D("95.00")
    world.assert_books()


def test_dry_run_writes_no_money(world):
    campaign = world.campaign()
    creator = world.creator(campaign)
    world.put([world.click(campaign, creator) for _ in range(3)])
    report = settle_once(world.settings, dry_run=True)
    assert report["dry_run"] and report["events_paid"] == 3 and report["amount_paid"] == "3.00"
    assert world.pg.execute("SELECT count(*) AS n FROM events").fetchone()["n"] == 0
    assert world.campaign_row(campaign)["remaining_budget"] == D("100.00")
    assert settle_once(world.settings)["events_paid"] == 3


def test_budget_exhausted_mid_batch_completes_campaign(world):
    campaign = world.campaign(payout="2.00", fund="5.00")
    creator = world.creator(campaign)
    base = now_ms() - 60_000
    clicks = [world.click(campaign, creator, ts_ms=base + i) for i in range(4)]
    world.put(clicks)

    report = settle_once(world.settings)

    assert report["events_paid"] == 2
    assert report["rejected_by_reason"] == {"budget_exhausted": 2}
    # The earliest two are paid; the budget stops at 1.00, never below zero.
    assert [world.decision(c)["status"] for c in clicks] == ["paid", "paid", "rejected", "rejected"]
    row = world.campaign_row(campaign)
    assert row["remaining_budget"] == D("1.00") and row["status"] == "completed"
    world.assert_books()


def test_two_concurrent_settlers_pay_once(world):
    campaigns = [world.campaign(fund="50.00") for _ in range(4)]
    events = []
    for campaign in campaigns:
        creators = [world.creator(campaign) for _ in range(3)]
        events += [world.click(campaign, creators[i % 3]) for i in range(30)]
    world.put(events)
    reports: list[dict] = []
    threads = [threading.Thread(target=lambda: reports.append(settle_once(world.settings))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(r["events_paid"] for r in reports) == [0, 120]
    assert world.pg.execute("SELECT count(*) AS n FROM events WHERE status = 'paid'").fetchone()["n"] == 120
    world.assert_books()


def test_zero_campaign_conversion_is_recorded_without_campaign(world):
    campaign = world.campaign(objective="conversion")
    creator = world.creator(campaign)
    orphan = Event(event_id=str(uuid7()), event_type="conversion", ts_ms=now_ms(),
                   campaign_id=UNKNOWN_CAMPAIGN, click_id=str(uuid7()),
                   business_id=world.business_of(campaign), source="api")
    world.put([orphan, world.click(campaign, creator)])
    report = settle_once(world.settings)
    assert report["rejected_by_reason"] == {"no_such_click": 1, "wrong_type": 1}
    row = world.pg.execute("SELECT campaign_id, status, rejection_reason FROM events WHERE id = %s",
                           (orphan.event_id,)).fetchone()
    assert row == {"campaign_id": None, "status": "rejected", "rejection_reason": "no_such_click"}


def test_refund_inside_hold_reverses_and_returns_budget(world):
    campaign = world.campaign(objective="sale", payout="10.00", fund="100.00")
    creator = world.creator(campaign)
    click = world.click(campaign, creator, ts_ms=now_ms() - 60_000)
    sale = world.conversion(click, kind="sale", order_id="A-1", value="80.00")
    world.put([click, sale])
    assert settle_once(world.settings)["events_paid"] == 1
    assert world.wallet(creator[0])["pending_balance"] == D("9.00")

    refund = Event(event_id=str(uuid7()), event_type="refund", ts_ms=now_ms(),
                   campaign_id=UNKNOWN_CAMPAIGN, order_id="A-1",
                   business_id=world.business_of(campaign), source="api")
    world.put([refund])
    report = settle_once(world.settings)

    assert report["refunds"] == {"reversed": 1, "rejected": 0, "amount": "10.00", **NO_REWARDS_BACK}
    assert world.decision(sale)["status"] == "reversed"
    assert world.wallet(creator[0])["pending_balance"] == 0
    assert world.wallet(SYSTEM, "fees")["pending_balance"] == 0
    assert world.campaign_row(campaign)["remaining_budget"] == D("100.00")
    legs = world.pg.execute("SELECT DISTINCT status FROM ledger_entries WHERE transfer_id = %s",
                            (world.decision(sale)["transfer_id"],)).fetchall()
    assert legs == [{"status": "reversed"}]
    world.assert_books()


def test_refund_after_hold_keeps_commission(world):
    campaign = world.campaign(objective="sale", payout="10.00", fund="100.00")
    creator = world.creator(campaign)
    click = world.click(campaign, creator, ts_ms=now_ms() - 60_000)
    sale = world.conversion(click, kind="sale", order_id="B-7")
    world.put([click, sale])
    settle_once(world.settings)
    released = release_due(world.settings, now=datetime.now(UTC) + timedelta(days=15))
    assert released == 2  # the creator's credit and the platform fee
    assert world.wallet(creator[0])["available_balance"] == D("9.00")

    refund = Event(event_id=str(uuid7()), event_type="refund", ts_ms=now_ms(), campaign_id=campaign,
                   order_id="B-7", business_id=world.business_of(campaign), source="stripe")
    world.put([refund])
    report = settle_once(world.settings)

    assert report["refunds"]["rejected"] == 1 and report["rejected_by_reason"] == {"refund_after_hold": 1}
    assert world.decision(sale)["status"] == "paid"
    assert world.decision(refund)["rejection_reason"] == "refund_after_hold"
    assert world.wallet(creator[0])["available_balance"] == D("9.00")
    world.assert_books()


def test_release_due_waits_for_the_hold(world):
    campaign = world.campaign()
    creator = world.creator(campaign)
    world.put([world.click(campaign, creator)])
    settle_once(world.settings)
    assert release_due(world.settings, now=datetime.now(UTC) + timedelta(days=13)) == 0
    assert release_due(world.settings, now=datetime.now(UTC) + timedelta(days=14, minutes=1)) == 2
    wallet = world.wallet(creator[0])
    assert wallet["available_balance"] == D("0.90") and wallet["pending_balance"] == 0
    world.assert_books()


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_many_campaigns_and_creators_aggregate_legs(world, workers):
    """The same books whatever the number of connections posting campaigns at once."""
    campaigns = [world.campaign(fund="1000.00", payout="0.25") for _ in range(3)]
    events = []
    for campaign in campaigns:
        creators = [world.creator(campaign) for _ in range(4)]
        events += [world.click(campaign, creators[i % 4], ip=f"10.1.{i}.1") for i in range(200)]
    world.put(events)
    report = settle_once(replace(world.settings, settle_workers=workers))
    # The fee of 0.025 rounds half up to 0.03.
    assert report["events_paid"] == 600 and report["amount_paid"] == "150.00" and report["fees"] == "18.00"
    # One transfer per (campaign, creator): 12 transfers x 3 legs, plus 3 fundings x 2 legs.
    assert world.pg.execute("SELECT count(*) AS n FROM ledger_entries").fetchone()["n"] == 12 * 3 + 3 * 2
    world.assert_books()


def test_run_command_prints_report(world, capsys):
    from settler.run import run_settle_command

    campaign = world.campaign(payout="1.25")
    click = world.click(campaign, world.creator(campaign))
    world.put([click])

    assert run_settle_command(world.settings, dry_run=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["dry_run"], report["events_seen"], report["events_paid"], report["events_rejected"]) == (
        True, 1, 1, 0)
    assert (report["amount_paid"], report["fees"]) == ("1.25", "0.13")
    assert world.decision(click) is None  # a dry run writes nothing


async def test_scheduler_has_coalesced_jobs(settings):
    from settler.scheduler import build_scheduler

    scheduler = build_scheduler(replace(settings, settle_interval_s=7))
    scheduler.start(paused=True)  # job defaults apply once the scheduler starts
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert set(jobs) == {"settle", "release_holds", "payouts", "refund_unspent", "refunds", "reconcile",
                             "fold_report_sums", "api_key_revocations"}
        assert jobs["settle"].trigger.interval == timedelta(seconds=7)
        assert all(job.coalesce and job.max_instances == 1 for job in jobs.values())
    finally:
        scheduler.shutdown(wait=False)


def test_odd_edge_values_are_recorded(world):
    """A malformed IP is stored as NULL; tabs, newlines and backslashes survive COPY."""
    campaign = world.campaign()
    creator = world.creator(campaign)
    odd = world.click(campaign, creator, ip="not-an-ip", user_agent="a\tb\nc\\d\re\u00a0f\x0bg\\N")
    world.put([odd, world.click(campaign, creator)])
    assert settle_once(world.settings)["events_paid"] == 2
    row = world.pg.execute("SELECT ip_address, user_agent FROM events WHERE id = %s", (odd.event_id,)).fetchone()
    assert row == {"ip_address": None, "user_agent": "a\tb\nc\\d\re\u00a0f\x0bg\\N"}


def test_links_disabled_while_redis_was_down_leave_the_trackers_at_the_next_run(world):
    """The admin API publishes a campaign's disabled links when its hosts narrow, and only logs a failure;
    the settler publishes every link disabled since its last successful publish, until Redis takes it."""
    import redis

    campaign = world.campaign()
    _, link = world.creator(campaign)
    code = world.pg.execute("SELECT code FROM tracking_links WHERE id = %s", (link,)).fetchone()["code"]
    cache = redis.Redis.from_url(world.settings.redis_url)
    cache.set(world.settings.keys.link(code), b"what the trackers held before")
    world.pg.execute("UPDATE campaigns SET allowed_destination_hosts = ARRAY['shop.example'],"
                     " destination_url = 'https://shop.example/' WHERE id = %s", (campaign,))  # no publish

    settle_once(replace(world.settings, redis_url="redis://127.0.0.1:1/0"))  # Redis down for this run too
    assert cache.exists(world.settings.keys.link(code))
    settle_once(world.settings)
    assert not cache.exists(world.settings.keys.link(code))
    cache.close()
