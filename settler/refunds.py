"""Sale refunds: reverse a paid sale's commission while it is still on hold.

A ``refund`` event names an order and the business that reported it or the
campaign (the edge may know only one). It is matched against paid sale
events of that business's campaigns, or of that campaign. Policy:

* creator's credit still ``pending`` (inside the hold): every leg of the
  sale's transfer is reversed in one statement, which returns the payout to
  escrow, and the campaign's ``remaining_budget`` and the creator's
  ``total_earned`` are restored; the sale becomes ``reversed``.
* hold already released (credit ``settled``): the commission stands -- the
  creator may have withdrawn it, and the hold exists to bound the
  business's refund risk. The refund is recorded, rejected as
  ``refund_after_hold``.
* no paid sale for that order: rejected as ``no_such_order``, keeping the
  campaign or business it named; a sale for that order settled later (it
  reached the settler after its refund) is rejected as ``order_refunded``.
  A second refund of an order already reversed: ``already_refunded``.

Stripe's ``charge.refunded`` takes the same path: the webhook appends a
``refund`` event (source ``stripe``) to the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from .ledger import EVENT_COLUMNS, IP_COLUMN, clean_ip, event_row
from .verify import Candidate

NO_SUCH_ORDER = "no_such_order"
ALREADY_REFUNDED = "already_refunded"
REFUND_AFTER_HOLD = "refund_after_hold"

FIND_SALE = """
SELECT e.id::text AS id, e.campaign_id::text AS campaign_id, e.creator_id::text AS creator_id,
       e.status, e.transfer_id::text AS transfer_id, e.payout_amount, e.payout_amount - e.platform_fee AS net
  FROM events e JOIN campaigns c ON c.id = e.campaign_id
 WHERE e.event_type = 'sale' AND e.order_id = %(order_id)s
   AND (%(business_id)s::uuid IS NULL OR c.business_id = %(business_id)s::uuid)
   AND e.status IN ('paid', 'reversed')
   AND (%(campaign_id)s::uuid IS NULL OR e.campaign_id = %(campaign_id)s::uuid)
 ORDER BY e.status = 'paid' DESC, e.occurred_at
 LIMIT 1
"""


@dataclass
class RefundOutcome:
    event_id: str
    reason: str | None  # None: reversed
    sale_id: str | None = None
    amount: str | None = None


def apply_refund(conn: psycopg.Connection, refund: Candidate, *, run_id: str, now: datetime) -> RefundOutcome:
    """Decide and apply one refund inside the caller's transaction; records the refund event."""
    sale = None
    # The order is matched within its business or its campaign, whichever the edge knew (at least one).
    if refund.order_id and (refund.business_id or refund.campaign_id):
        sale = conn.execute(FIND_SALE, {
            "order_id": refund.order_id, "business_id": refund.business_id, "campaign_id": refund.campaign_id,
        }).fetchone()
    outcome = _reverse(conn, refund, sale)
    campaign_id = sale["campaign_id"] if sale else None
    status = "rejected" if outcome.reason else "reversed"
    row = event_row(refund, campaign_id=campaign_id, status=status, reason=outcome.reason, run_id=run_id, now=now,
                    transfer_id=sale["transfer_id"] if sale and not outcome.reason else None)
    row = row[:IP_COLUMN] + (clean_ip(row[IP_COLUMN]),) + row[IP_COLUMN + 1:]
    conn.execute(
        f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}, metadata) VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))}, %s)"
        " ON CONFLICT (id) DO NOTHING",
        (*row, psycopg.types.json.Jsonb(_metadata(refund, outcome))),
    )
    return outcome


def _metadata(refund: Candidate, outcome: RefundOutcome) -> dict:
    if outcome.sale_id:
        return {"refunds": outcome.sale_id}
    # Whom the refund named, so a sale arriving after it is matched and not paid (verify.ORDER_REFUNDED).
    return {"campaign_id": refund.campaign_id, "business_id": refund.business_id}


def _reverse(conn: psycopg.Connection, refund: Candidate, sale: dict | None) -> RefundOutcome:
    if sale is None:
        return RefundOutcome(refund.event_id, NO_SUCH_ORDER)
    if sale["status"] == "reversed":
        return RefundOutcome(refund.event_id, ALREADY_REFUNDED, sale["id"])
    # Campaign row first, then the legs: the same lock order as settlement.
    conn.execute("SELECT 1 FROM campaigns WHERE id = %s FOR UPDATE", (sale["campaign_id"],))
    # Locking the legs makes a concurrent hold release wait, so "still held" stays true until we reverse.
    legs = conn.execute(
        "SELECT status, hold_until FROM ledger_entries WHERE transfer_id = %s ORDER BY id FOR UPDATE",
        (sale["transfer_id"],),
    ).fetchall()
    # The creator's credit is the held leg; once released it is settled and the hold is over.
    held = any(leg["hold_until"] is not None and leg["status"] == "pending" for leg in legs)
    if not held:
        return RefundOutcome(refund.event_id, REFUND_AFTER_HOLD, sale["id"])
    conn.execute(
        "UPDATE ledger_entries SET status = 'reversed' WHERE transfer_id = %s AND status IN ('pending', 'settled')",
        (sale["transfer_id"],),
    )
    conn.execute(
        "UPDATE campaigns SET remaining_budget = remaining_budget + %s WHERE id = %s",
        (sale["payout_amount"], sale["campaign_id"]),
    )
    conn.execute(
        "UPDATE campaign_creators SET total_earned = total_earned - %s WHERE campaign_id = %s AND creator_id = %s",
        (sale["net"], sale["campaign_id"], sale["creator_id"]),
    )
    conn.execute("UPDATE events SET status = 'reversed' WHERE id = %s", (sale["id"],))
    return RefundOutcome(refund.event_id, None, sale["id"], str(sale["payout_amount"]))

