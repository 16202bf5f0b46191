"""The settler's ledger writes: calls of the SQL functions that own them (sql/postgres/0041, 0111).

``oros_post_settlement`` books one campaign's settlement (the three legs per
transfer, each at its own fee, and a supporter's share reward out of the
creator's net with its ``rewards`` row; ``total_earned``, the link counters,
the budget); ``oros_reverse_sale`` takes back part of a sale's commission and
books the rest again. Both pay a creator who owes the platform its debt
first (a receivable, sql/postgres/0075), by the rule tips follow too. Python
decides what to pay or take back; the database writes it, checking its
arguments, inside the caller's transaction.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from decimal import Decimal

import psycopg

from .plan import CampaignPlan
from .records import LedgerError

POST_SETTLEMENT = """
SELECT oros_post_settlement(%(campaign)s, %(run)s, %(hold_until)s, %(complete)s,
                            %(transfers)s::uuid[], %(creators)s::uuid[], %(counts)s::int[], %(fees)s::numeric[],
                            %(links)s::uuid[], %(clicks)s::int[], %(conversions)s::int[],
                            %(shares)s::uuid[], %(rewards)s::numeric[]) AS spent
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
