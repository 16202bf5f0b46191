"""The settler's ledger writes: calls of the SQL functions that own them (current bodies: tests/schema/functions.txt).

``oros_post_settlement`` books one campaign's settlement (the three legs per
transfer, each at its own fee, and a supporter's share reward out of the
creator's net with its ``rewards`` row; ``total_earned``, the link counters,
the budget); ``oros_reverse_sale`` takes back part of a sale's commission and
books the rest again (``oros_reverse_live_sale`` for a live sale; both around
one core, ``oros_reverse_and_rebook``, sql/postgres/0190), and ``oros_take_back_boost_rewards`` lowers the boost
rewards of a completed campaign that counted it (0155). Both pay a creator who owes the platform its debt
first (a receivable, sql/postgres/0075), by the rule tips follow too. Python
decides what to pay or take back; the database writes it, checking its
arguments, inside the caller's transaction.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from decimal import Decimal

import psycopg

from .live import LivePlan
from .plan import CampaignPlan
from .records import LedgerError

POST_SETTLEMENT = """
SELECT oros_post_settlement(%(campaign)s, %(run)s, %(hold_until)s, %(complete)s,
                            %(transfers)s::uuid[], %(creators)s::uuid[], %(counts)s::int[], %(fees)s::numeric[],
                            %(links)s::uuid[], %(clicks)s::int[], %(conversions)s::int[],
                            %(shares)s::uuid[], %(rewards)s::numeric[]) AS spent
"""

POST_LIVE_SALES = """
SELECT oros_post_live_sales(%(campaign)s, %(run)s, %(hold_until)s, %(sales)s::uuid[], %(events)s::uuid[],
                            %(live_events)s::uuid[], %(transfers)s::uuid[], %(creators)s::uuid[], %(links)s::uuid[],
                            %(payouts)s::numeric[], %(fees)s::numeric[]) AS spent
"""

TAKE_BACK_BOOST_REWARDS = """
SELECT reward_id::text AS reward_id, taken, held
  FROM oros_take_back_boost_rewards(%(campaign)s, %(price_before)s, %(epoch)s, %(booked_at)s)
"""

REVERSE_LIVE_SALE = """
SELECT oros_reverse_live_sale(%(sale)s, %(refunded)s, %(payout_back)s, %(fee_back)s, %(run)s, %(refund)s)::text
       AS transfer_id
"""

REVERSE_SALE = """
SELECT oros_reverse_sale(%(sale)s, %(refunded)s, %(payout_back)s, %(fee_back)s, %(run)s, %(refund)s,
                         %(reward_back)s)::text
       AS transfer_id
"""


def post_settlement(conn: psycopg.Connection, plan: CampaignPlan, *, run_id: str, hold_until: datetime) -> None:
    """Book ``plan``'s transfers, earnings, link counters and budget (its events are already recorded)."""
    clicks: Counter = Counter()
    conversions: Counter = Counter()
    for event in plan.paid:
        if event.link_id:
            (clicks if event.event_type == "click" else conversions)[event.link_id] += 1
    links = sorted(clicks.keys() | conversions.keys())
    spent = conn.execute(POST_SETTLEMENT, {
        "campaign": plan.campaign_id, "run": run_id, "hold_until": hold_until, "complete": plan.completes,
        "transfers": [t.id for t in plan.transfers], "creators": [t.creator_id for t in plan.transfers],
        "counts": [len(t.events) for t in plan.transfers], "fees": [t.fee for t in plan.transfers],
        "links": links, "clicks": [clicks[link] for link in links],
        "conversions": [conversions[link] for link in links],
        "shares": [t.share for t in plan.transfers], "rewards": [t.reward for t in plan.transfers],
    }).fetchone()["spent"]
    if spent != plan.counts.amount:
        raise LedgerError(f"campaign {plan.campaign_id}: the ledger spent {spent}, the plan {plan.counts.amount}")


def reverse_sale(conn: psycopg.Connection, sale_id: str, *, refunded: Decimal | None, payout_back: Decimal,
                 fee_back: Decimal, reward_back: Decimal, run_id: str, refund_id: str) -> str:
    """Take back ``payout_back`` (``fee_back`` of it the fee, ``reward_back`` the supporter's share) of a paid
    sale; returns its live transfer."""
    return conn.execute(REVERSE_SALE, {
        "sale": sale_id, "refunded": refunded, "payout_back": payout_back, "fee_back": fee_back, "run": run_id,
        "refund": refund_id, "reward_back": reward_back,
    }).fetchone()["transfer_id"]


def post_live_sales(conn: psycopg.Connection, plan: LivePlan, *, run_id: str, hold_until: datetime) -> None:
    """Book ``plan``'s live sales (their events are already recorded): rows, transfers, earnings, budget."""
    sales = plan.paid
    spent = conn.execute(POST_LIVE_SALES, {
        "campaign": plan.campaign_id, "run": run_id, "hold_until": hold_until, "sales": [s.sale_id for s in sales],
        "events": [s.event.event_id for s in sales], "live_events": [s.live.id for s in sales],
        "transfers": [s.transfer_id for s in sales], "creators": [s.event.creator_id for s in sales],
        "links": [s.live.link_id for s in sales], "payouts": [s.payout for s in sales], "fees": [s.fee for s in sales],
    }).fetchone()["spent"]
    if spent != plan.counts.amount:
        raise LedgerError(f"campaign {plan.campaign_id}: the ledger spent {spent} on live sales, the plan "
                          f"{plan.counts.amount}")


def reverse_live_sale(conn: psycopg.Connection, sale_id: str, *, refunded: Decimal | None, payout_back: Decimal,
                      fee_back: Decimal, run_id: str, refund_id: str) -> str:
    """``reverse_sale`` for a live sale: its rebooked rest stays a live-sale transfer, its live_sales row follows."""
    return conn.execute(REVERSE_LIVE_SALE, {
        "sale": sale_id, "refunded": refunded, "payout_back": payout_back, "fee_back": fee_back, "run": run_id,
        "refund": refund_id,
    }).fetchone()["transfer_id"]


def take_back_boost_rewards(conn: psycopg.Connection, campaign_id: str, *, price_before: Decimal, epoch: int,
                            booked_at: datetime) -> list[dict]:
    """After a reversal raised the pool's price from ``price_before``: lower the boost rewards that counted the
    payout booked at ``booked_at``; each lowered one with what it gave back (``taken``) and whether it was held."""
    return conn.execute(TAKE_BACK_BOOST_REWARDS, {
        "campaign": campaign_id, "price_before": price_before, "epoch": epoch, "booked_at": booked_at,
    }).fetchall()
