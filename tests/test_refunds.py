"""Partial refunds reverse a sale's commission pro rata, cumulatively, never more than was paid.

Before, any refund -- even of one cent -- reversed the whole commission. Each
test settles a sale through ClickHouse and the real settler (``World`` from
test_settle), then refunds, and checks the money and ``reconcile`` after each step.
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from oros.connections import pg_connect
from oros.events import Event, uuid7
from oros.reasons import UNKNOWN_CAMPAIGN
from settler.refunds import apply_refund, reversal
from settler.run import settle_once
from settler.verify import Candidate

from factories import SYSTEM, World, now_ms

D = Decimal

# A report's refunds that took back no supporter's reward.
NO_REWARDS_BACK = {"share_rewards": {"count": 0, "amount": "0.00"}, "boost_rewards": {"count": 0, "amount": "0.00"}}


@pytest.fixture
def world(pg, settings) -> World:
    return World(pg, settings)


def sell(world: World, order_id: str = "O-1") -> dict:
    """A paid sale: payout 10.00 (fee 1.00, net 9.00) on an 80.00 order, its campaign funded 100.00."""
    campaign = world.campaign(objective="sale", payout="10.00", fund="100.00")
    creator = world.creator(campaign)
    click = world.click(campaign, creator, ts_ms=now_ms() - 60_000)
    sale = world.conversion(click, kind="sale", order_id=order_id, value="80.00")
    world.put([click, sale])
    assert settle_once(world.settings)["events_paid"] == 1
    return {"campaign": campaign, "creator": creator[0], "sale": sale, "business": world.business_of(campaign),
            "order": order_id}


@pytest.fixture
def sold(world):
    return sell(world)


def refund(sold: dict, total: str | None, *, source: str = "api") -> Event:
    return Event(event_id=str(uuid7()), event_type="refund", ts_ms=now_ms(), campaign_id=UNKNOWN_CAMPAIGN,
                 order_id=sold.get("order", "O-1"), business_id=sold["business"], value=total, source=source)


def money(world: World, sold: dict) -> dict:
    sale = world.pg.execute("SELECT status, payout_amount - reversed_payout AS still_paid FROM events WHERE id = %s",
                            (sold["sale"].event_id,)).fetchone()
    earned = world.pg.execute("SELECT total_earned FROM campaign_creators WHERE campaign_id = %s",
                              (sold["campaign"],)).fetchone()["total_earned"]
    return {"sale": sale["status"], "still_paid": sale["still_paid"],
            "creator": world.wallet(sold["creator"])["pending_balance"], "earned": earned,
            "fees": world.wallet(SYSTEM, "fees")["pending_balance"],
            "budget": world.campaign_row(sold["campaign"])["remaining_budget"]}


def state(sale: str, still_paid: str, creator: str, fees: str, budget: str) -> dict:
    return {"sale": sale, "still_paid": D(still_paid), "creator": D(creator), "earned": D(creator), "fees": D(fees),
            "budget": D(budget)}


def settle_refunds(world: World, *events: Event) -> dict:
    world.put(list(events))
    report = settle_once(world.settings)
    world.assert_books()
    return report


def test_partial_refunds_reverse_pro_rata_and_cumulatively(world, sold):
    assert money(world, sold) == state("paid", "10.00", "9.00", "1.00", "90.00")

    # One cent of 80.00 is worth 0.00125 of the commission: nothing moves (before: all 10.00 went back).
    report = settle_refunds(world, refund(sold, "0.01"))
    assert report["refunds"] == {"reversed": 1, "rejected": 0, "amount": "0.00", **NO_REWARDS_BACK}
    assert money(world, sold) == state("paid", "10.00", "9.00", "1.00", "90.00")

    # 20.00 refunded in all: 10.00 x 20/80 = 2.50 back; the fee shrinks alike (0.25).
    settle_refunds(world, refund(sold, "20.00"))
    assert money(world, sold) == state("paid", "7.50", "6.75", "0.75", "92.50")

    # 50.00 in all: 6.25 back in total, so 3.75 more; the 3.75 left earns a fee of 0.375, half-up 0.38.
    report = settle_refunds(world, refund(sold, "50.00", source="stripe"))
    assert report["refunds"]["amount"] == "3.75"
    assert money(world, sold) == state("paid", "3.75", "3.37", "0.38", "96.25")

    # Refunded in full (no value): the rest.
    settle_refunds(world, refund(sold, None))
    assert money(world, sold) == state("reversed", "0.00", "0.00", "0.00", "100.00")
    live = world.pg.execute("SELECT count(*) AS n FROM ledger_entries WHERE source_type = 'campaign' AND source_id = %s"
                            " AND status <> 'reversed'", (sold["campaign"],)).fetchone()["n"]
    assert live == 0


def test_a_dry_run_plans_the_refunds_it_would_apply_and_moves_no_money(world, sold):
    """A dry run once planned no refund (it called only the settlement plan): its report said 0 reversed."""
    world.put([refund(sold, "20.00")])
    before = money(world, sold)
    report = settle_once(world.settings, dry_run=True)
    assert report["refunds"] == {"reversed": 1, "rejected": 0, "amount": "2.50", **NO_REWARDS_BACK}
    assert money(world, sold) == before
    assert world.pg.execute("SELECT count(*) AS n FROM events WHERE event_type = 'refund'").fetchone()["n"] == 0
    world.assert_books()
    # The real run then applies what the dry run planned.
    assert settle_once(world.settings)["refunds"] == report["refunds"]
    assert money(world, sold) == state("paid", "7.50", "6.75", "0.75", "92.50")
    world.assert_books()


def test_the_remainder_keeps_its_hold(world, sold):
    before = world.pg.execute("SELECT hold_until FROM ledger_entries WHERE hold_until IS NOT NULL LIMIT 1").fetchone()
    settle_refunds(world, refund(sold, "40.00"))
    holds = world.pg.execute("SELECT DISTINCT hold_until FROM ledger_entries WHERE status = 'pending'"
                             " AND hold_until IS NOT NULL").fetchall()
    assert holds == [before]


def test_replays_and_stale_totals_reverse_nothing_more(world, sold):
    first = refund(sold, "40.00")
    settle_refunds(world, first)
    assert money(world, sold) == state("paid", "5.00", "4.50", "0.50", "95.00")

    # The same event again (a replay), the same total in another event, an older total arriving late.
    world.put([first])
    report = settle_refunds(world, refund(sold, "40.00"), refund(sold, "20.00", source="stripe"))
    assert report["refunds"] == {"reversed": 0, "rejected": 2, "amount": "0.00", **NO_REWARDS_BACK}
    assert report["rejected_by_reason"] == {"already_refunded": 2}
    assert money(world, sold) == state("paid", "5.00", "4.50", "0.50", "95.00")


def test_a_refund_above_the_sale_reverses_only_what_was_paid(world, sold):
    settle_refunds(world, refund(sold, "500.00"))
    assert money(world, sold) == state("reversed", "0.00", "0.00", "0.00", "100.00")
    report = settle_refunds(world, refund(sold, "900.00"))
    assert report["rejected_by_reason"] == {"already_refunded": 1}
    assert money(world, sold) == state("reversed", "0.00", "0.00", "0.00", "100.00")


def test_two_settlers_at_once_reverse_once(world, sold):
    world.put([refund(sold, "20.00"), refund(sold, "60.00")])
    reports = []
    threads = [threading.Thread(target=lambda: reports.append(settle_once(world.settings))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(r["refunds"]["reversed"] + r["refunds"]["rejected"] for r in reports) == 2
    # 10.00 x 60/80 = 7.50 back in all, whichever settler applied which refund.
    assert money(world, sold) == state("paid", "2.50", "2.25", "0.25", "97.50")
    world.assert_books()


def test_concurrent_refunds_of_one_sale_never_double_reverse(world, sold):
    """Two producers applying refunds of one sale at once (no settler lock): the sale's lock orders them."""
    start = threading.Barrier(2)
    run = world.pg.execute("INSERT INTO settlement_runs (status) VALUES ('succeeded') RETURNING id::text AS id"
                           ).fetchone()["id"]

    def apply(total: str) -> None:
        event = refund(sold, total)
        candidate = Candidate(event_id=event.event_id, event_type="refund", ts_ms=event.ts_ms, campaign_id=None,
                              business_id=sold["business"], order_id="O-1", value=D(total), source="api")
        with pg_connect(world.settings, autocommit=True) as conn:
            start.wait()
            with conn.transaction():
                apply_refund(conn, candidate, run_id=run, now=datetime.now(UTC))

    threads = [threading.Thread(target=apply, args=(total,)) for total in ("20.00", "60.00")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert money(world, sold) == state("paid", "2.50", "2.25", "0.25", "97.50")
    world.assert_books()


@pytest.mark.parametrize(("payout", "fee", "value", "refunded", "back", "fee_back"), [
    ("0.15", "0.02", "2.00", "1.00", "0.08", "0.01"),  # 0.075 and 0.01 half-up
    ("10.00", "1.00", "80.00", "0.01", "0.00", "0.00"),
    ("10.00", "1.00", "80.00", "80.00", "10.00", "1.00"),
    ("10.00", "1.00", "80.00", "81.00", "10.00", "1.00"),
    ("10.00", "10.00", "80.00", "40.00", "5.00", "5.00"),  # a 100% fee: the creator had nothing to give back
    ("10.00", "1.00", None, "5.00", "10.00", "1.00"),  # a sale without a value: any refund is whole
])
def test_reversal_arithmetic(payout, fee, value, refunded, back, fee_back):
    result = reversal(payout=D(payout), fee=D(fee), sale_value=D(value) if value else None, refunded=D(refunded),
                      reversed_payout=D(0), reversed_fee=D(0))
    assert (result.payout_back, result.fee_back) == (D(back), D(fee_back))
    assert result.payout_left == D(payout) - D(back) and 0 <= result.fee_left <= result.payout_left


def test_a_refund_step_never_moves_the_fee_without_the_payout(world, sold):
    """0.36 then 0.43 refunded of 80.00: the second step took back 0.00 of the payout but 0.01 of the fee,
    so nothing was rebooked and total_earned no longer matched the sale's net."""
    settle_refunds(world, refund(sold, "0.36"))  # 10 x 0.36/80 = 0.045: 0.05 back
    assert money(world, sold) == state("paid", "9.95", "8.95", "1.00", "90.05")
    report = settle_refunds(world, refund(sold, "0.43"))  # 0.05375: still 0.05 in all, nothing more
    assert report["refunds"] == {"reversed": 1, "rejected": 0, "amount": "0.00", **NO_REWARDS_BACK}
    assert money(world, sold) == state("paid", "9.95", "8.95", "1.00", "90.05")
    reversed_fee = world.pg.execute("SELECT reversed_fee FROM events WHERE id = %s",
                                    (sold["sale"].event_id,)).fetchone()["reversed_fee"]
    assert reversed_fee == 0


def _refund_totals(rng: random.Random, value: Decimal) -> list[Decimal]:
    """A rising sequence of refunded totals, small steps and large, often ending at or past the sale's value."""
    totals, total = [], D(0)
    for _ in range(rng.randrange(1, 8)):
        step = D(rng.choice([1, 1, 2, 7, 50, 999, 5000])) / 100
        total += step * (D(rng.randrange(1, 40)) if rng.random() < 0.3 else 1)
        totals.append(min(total, value + D("5.00")))
    if rng.random() < 0.5:
        totals.append(value)
    return totals


def test_reversal_over_many_refund_sequences_never_takes_back_more_than_was_paid():
    """Property: whatever the totals, each step gives back payout and fee together (never a fee alone),
    the creator's net never grows, nothing goes back beyond what was paid, and a full refund takes back
    exactly what was paid."""
    rng = random.Random(11)
    for _ in range(3000):
        payout = D(rng.randrange(1, 100_000)) / 100
        fee = min(payout, (payout * rng.choice([0, 3, 10, 15, 50, 100]) / 100).quantize(D("0.01")))
        value = D(rng.randrange(1, 200_000)) / 100
        reversed_payout = reversed_fee = D(0)
        for total in [*_refund_totals(rng, value), value]:
            back = reversal(payout=payout, fee=fee, sale_value=value, refunded=total,
                            reversed_payout=reversed_payout, reversed_fee=reversed_fee)
            assert back.payout_back >= 0 and back.fee_back >= 0, (payout, fee, value, total, back)
            assert back.fee_back == 0 or back.payout_back > 0, (payout, fee, value, total, back)
            assert back.payout_back - back.fee_back >= 0, (payout, fee, value, total, back)  # the net shrinks
            assert 0 <= back.fee_left <= back.payout_left
            reversed_payout += back.payout_back
            reversed_fee += back.fee_back
            assert (back.payout_left, back.fee_left) == (payout - reversed_payout, fee - reversed_fee)
            assert reversed_payout <= payout and reversed_fee <= fee
        assert (reversed_payout, reversed_fee) == (payout, fee)  # refunded in full: exactly what was paid


def test_refund_sequences_keep_the_books(world):
    """The same property end to end: reconcile after every step, and each sale gives back exactly what it was paid."""
    for seed in range(3):
        rng = random.Random(seed)
        sale = sell(world, f"S-{seed}")
        for total in _refund_totals(rng, D("80.00"))[:4]:
            settle_refunds(world, refund(sale, str(total)))
        settle_refunds(world, refund(sale, None))
        assert money(world, sale) == state("reversed", "0.00", "0.00", "0.00", "100.00")


@pytest.mark.parametrize(("total", "after"), [
    ("20.00", state("paid", "7.50", "6.75", "0.75", "92.50")),  # 10.00 x 20/80 back, as after the sale
    ("0.01", state("paid", "10.00", "9.00", "1.00", "90.00")),  # worth 0.00: the sale keeps all of it
    (None, state("reversed", "0.00", "0.00", "0.00", "100.00")),  # refunded in full
])
def test_a_refund_that_reached_the_settler_before_its_sale_is_applied_pro_rata(world, total, after):
    """Before, the late sale was rejected order_refunded whatever the refund's amount (0.01 voided 10.00)."""
    campaign = world.campaign(objective="sale", payout="10.00", fund="100.00")
    creator = world.creator(campaign)
    click = world.click(campaign, creator, ts_ms=now_ms() - 60_000)
    sale = world.conversion(click, kind="sale", order_id="O-1", value="80.00")
    sold = {"campaign": campaign, "creator": creator[0], "sale": sale, "business": world.business_of(campaign)}
    early = refund(sold, total, source="stripe")  # the sale sat in a tracker's spool, say
    assert settle_refunds(world, click, early)["rejected_by_reason"] == {"no_such_order": 1, "wrong_type": 1}

    report = settle_refunds(world, sale)

    assert report["events_paid"] == 1 and report["refunds"]["reversed"] == 1
    assert money(world, sold) == after
    row = world.pg.execute("SELECT status, rejection_reason, metadata->>'refunds' AS sale FROM events WHERE id = %s",
                           (early.event_id,)).fetchone()
    assert row == {"status": "reversed", "rejection_reason": None, "sale": sale.event_id}
    # Applied once: it no longer waits for a sale, and a later refund counts from its total.
    assert settle_refunds(world, refund(sold, total))["rejected_by_reason"] == {"already_refunded": 1}
