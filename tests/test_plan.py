"""The settlement plan, pure: verdicts grouped per campaign, budgets allocated, transfers and counts.

No store: ``decide`` and ``settle_campaign`` take what ``settler.load`` would have read.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

from oros import reasons
from oros.events import uuid7
from oros.fees import FeeSchedule
from settler import plan as p
from settler import verify as v

D = Decimal
NOW = 1_800_000_000_000
DAY_MS = 86_400_000
RULES = v.Rules(click_dedupe_s=3600, attribution_days=30)
BIZ = "b0000000-0000-0000-0000-000000000000"
ALICE, BOB = "c0000000-0000-0000-0000-00000000000a", "c0000000-0000-0000-0000-00000000000b"
BASE = FeeSchedule(D(10))  # no creator holds a tier


def campaign(cid: str = "a0000000-0000-0000-0000-000000000001", objective: str = "click", **kw) -> v.Campaign:
    fields = {"id": cid, "business_id": BIZ, "objective": objective, "payout": D("1.00"), "remaining": D("10.00"),
              "status": "active", "start_ms": None, "end_ms": None,
              "history": ((NOW - 90 * DAY_MS, "active"),), "accepted": frozenset({ALICE, BOB})}
    return v.Campaign(**{**fields, **kw})


def click(c: v.Campaign, creator: str = ALICE, ts_ms: int = NOW - 1000, **kw) -> v.Candidate:
    return v.Candidate(**{"event_id": str(uuid7(ts_ms)), "event_type": "click", "ts_ms": ts_ms, "campaign_id": c.id,
                          "creator_id": creator, "link_id": "l-" + creator[-1], **kw})


def sale(c: v.Campaign, order_id: str, creator: str = ALICE, ts_ms: int = NOW - 500) -> v.Candidate:
    return v.Candidate(event_id=str(uuid7(ts_ms)), event_type="sale", ts_ms=ts_ms, campaign_id=c.id,
                       creator_id=creator, link_id="l-a", business_id=BIZ, click_id=str(uuid7(ts_ms - 60_000)),
                       order_id=order_id, value=D("80.00"), source="api", click_ts_ms=ts_ms - 60_000,
                       click_campaign_id=c.id)


def facts(*campaigns: v.Campaign, **kw) -> p.Facts:
    return p.Facts(**{"campaigns": {c.id: c for c in campaigns}, "users": {ALICE, BOB}, "links": {"l-a", "l-b"},
                      "fees": BASE, **kw})


def test_decide_groups_verdicts_per_campaign_and_sets_aside_refunds():
    a, b = campaign(), campaign("a0000000-0000-0000-0000-000000000002")
    refund = v.Candidate(event_id=str(uuid7()), event_type="refund", ts_ms=NOW, campaign_id=None, order_id="o")
    early = v.Candidate(event_id=str(uuid7(NOW - DAY_MS)), event_type="refund", ts_ms=NOW - DAY_MS,
                        campaign_id=a.id, order_id="o")
    events = [click(a), click(a, is_bot=True), click(b, BOB), refund]

    decisions = p.decide(events, facts(a, b, early_refunds=[early]), RULES, NOW)

    assert [(d.campaign.id, len(d.accepted), [r for _, r in d.rejected]) for d in decisions.campaigns] == [
        (a.id, 1, [reasons.BOT]), (b.id, 1, [])]
    assert decisions.refunds == [early, refund]  # in time order, the early one first
    assert decisions.early_refunds == {early.event_id}


def test_events_no_known_campaign_or_creator_owns_are_grouped_last_without_a_campaign():
    a = campaign()
    stranger = "c0000000-0000-0000-0000-0000000000ff"  # not a user Postgres knows
    unknown = click(a, campaign_id=None)
    ghost = click(a, stranger)
    decisions = p.decide([unknown, click(a), ghost], facts(a), RULES, NOW)
    assert decisions.campaigns[-1].campaign is None
    assert sorted(r for _, r in decisions.campaigns[-1].rejected) == [reasons.NO_SUCH_CLICK, reasons.NOT_ACCEPTED]
    plan = p.settle_campaign(decisions.campaigns[-1], remaining=D(0), payout=D(0), status="", fees=BASE)
    assert (plan.campaign_id, plan.counts.rejected, plan.transfers) == (None, 2, [])


def test_a_link_postgres_does_not_know_is_kept_out_of_the_foreign_key():
    a = campaign()
    decisions = p.decide([click(a, link_id="deleted-link")], facts(a), RULES, NOW)
    assert decisions.campaigns[0].accepted[0].link_id is None


def test_settle_campaign_pays_the_earliest_within_budget_and_counts_once():
    a = campaign(payout=D("0.55"), remaining=D("1.20"))
    events = [click(a, ALICE, NOW - 3000), click(a, BOB, NOW - 2000), click(a, ALICE, NOW - 1000),
              click(a, BOB, is_bot=True)]
    decided = p.decide(events, facts(a), RULES, NOW).campaigns[0]

    plan = p.settle_campaign(decided, remaining=D("1.20"), payout=D("0.55"), status="active", fees=BASE)

    assert [e.ts_ms for e in plan.paid] == [NOW - 3000, NOW - 2000]
    assert {t.fee for t in plan.transfers} == {D("0.06")}  # 0.055 half-up
    assert plan.counts == p.Counts(paid=2, rejected=2, amount=D("1.10"), fees=D("0.12"),
                                   by_reason=Counter({reasons.BUDGET_EXHAUSTED: 1, reasons.BOT: 1}))
    # One transfer per creator for clicks, creators in id order.
    assert [(t.creator_id, len(t.events)) for t in plan.transfers] == [(ALICE, 1), (BOB, 1)]
    assert plan.completes  # 0.10 left cannot pay 0.55


def test_only_an_active_campaign_completes():
    a = campaign(remaining=D("0.50"))
    decided = p.decide([click(a)], facts(a), RULES, NOW).campaigns[0]
    assert p.settle_campaign(decided, remaining=D("0.50"), payout=D("1.00"), status="active", fees=BASE).completes
    assert not p.settle_campaign(decided, remaining=D("0.50"), payout=D("1.00"), status="paused",
                                 fees=BASE).completes


def test_each_paid_sale_is_its_own_transfer():
    a = campaign(objective="sale", payout=D("7.25"), remaining=D("100.00"))
    decided = p.decide([sale(a, "o-1"), sale(a, "o-2", BOB), sale(a, "o-3")], facts(a), RULES, NOW).campaigns[0]
    plan = p.settle_campaign(decided, remaining=D("100.00"), payout=D("7.25"), status="active", fees=BASE)
    assert [len(t.events) for t in plan.transfers] == [1, 1, 1]
    assert len({t.id for t in plan.transfers}) == 3


def test_each_event_pays_the_fee_of_its_creators_tier_at_its_time():
    """A span [from, until) caps ALICE's fee at 5 %: her clicks inside it pay 0.05, those outside 0.10, and each
    fee is its own transfer; BOB, without a tier, pays the base."""
    a = campaign(payout=D("1.00"), remaining=D("100.00"))
    fees = FeeSchedule.from_rows(D(10), [{"user_id": ALICE, "fee_pct": D(5),
                                          "effective_from": _at(NOW - 5000), "effective_until": _at(NOW - 2000)}])
    events = [click(a, ALICE, NOW - 6000), click(a, ALICE, NOW - 5000), click(a, ALICE, NOW - 2001),
              click(a, ALICE, NOW - 2000), click(a, BOB, NOW - 4000)]
    decided = p.decide(events, facts(a, fees=fees), RULES, NOW).campaigns[0]

    plan = p.settle_campaign(decided, remaining=D("100.00"), payout=D("1.00"), status="active", fees=fees)

    assert sorted((t.creator_id, t.fee, sorted(e.ts_ms for e in t.events)) for t in plan.transfers) == [
        (ALICE, D("0.05"), [NOW - 5000, NOW - 2001]), (ALICE, D("0.10"), [NOW - 6000, NOW - 2000]),
        (BOB, D("0.10"), [NOW - 4000])]
    assert plan.counts.fees == D("0.40")
    sales = campaign(objective="sale", payout=D("7.25"), remaining=D("100.00"))
    decided = p.decide([sale(sales, "o-1", ts_ms=NOW - 3000), sale(sales, "o-2", ts_ms=NOW - 1000)],
                       facts(sales, fees=fees), RULES, NOW).campaigns[0]
    plan = p.settle_campaign(decided, remaining=D("100.00"), payout=D("7.25"), status="active", fees=fees)
    assert [t.fee for t in plan.transfers] == [D("0.36"), D("0.73")]  # 0.3625 and 0.725, half-up


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def test_a_dry_run_plans_against_the_loaded_budgets_with_the_same_counts():
    rich, poor = campaign(), campaign("a0000000-0000-0000-0000-000000000002", remaining=D("1.00"))
    events = [click(rich), click(rich, BOB), click(poor), click(poor, BOB, NOW - 500)]
    decisions = p.decide(events, facts(rich, poor), RULES, NOW)

    plans = p.plan_all(decisions)

    total = p.Counts()
    for plan in plans:
        total.add(plan.counts)
    assert (total.paid, total.rejected, total.amount, total.fees) == (3, 1, D("3.00"), D("0.30"))
    assert total.by_reason == Counter({reasons.BUDGET_EXHAUSTED: 1})
    assert [plan.completes for plan in plans] == [False, True]


def test_refund_outcomes_are_counted_with_the_events():
    counts = p.Counts()
    counts.refund(None, D("2.50"))
    counts.refund(reasons.ALREADY_REFUNDED, D(0))
    assert (counts.refunds_reversed, counts.refunds_rejected, counts.refunds_amount) == (1, 1, D("2.50"))
    assert counts.by_reason == Counter({reasons.ALREADY_REFUNDED: 1})
    # What applied refunds took from supporters adds up across refunds and plans; a rejected one takes nothing.
    counts.refund(None, D("10.00"), share_reward=D("1.00"), boost_rewards=2, boost_reward_amount=D("0.67"))
    counts.refund(None, D("5.00"), boost_rewards=1, boost_reward_amount=D("0.10"))
    counts.refund(reasons.REFUND_AFTER_HOLD, D(0), share_reward=D("9.99"), boost_rewards=9)
    total = p.Counts()
    total.add(counts)
    assert (total.refunds_share_rewards, total.refunds_share_reward_amount) == (1, D("1.00"))
    assert (total.refunds_boost_rewards, total.refunds_boost_reward_amount) == (3, D("0.77"))
