"""Sale refunds: reverse a paid sale's commission, pro rata to what was refunded, while it is still on hold.

A ``refund`` event names an order and the business that reported it or the
campaign (the edge may know only one). It is matched against paid sale
events of that business's campaigns, or of that campaign. Its ``value`` is
the order's refunded total so far (Stripe's ``amount_refunded``; the API
takes the same); no value means refunded in full. Policy:

* creator's credit still ``pending`` (inside the hold): the commission
  shrinks to what the unrefunded part of the sale earns (``reversal``). The
  sale's live transfer is reversed in one statement and, unless nothing is
  left, the remainder is booked again as a new transfer with the same hold:
  ledger entries never change amount. The difference goes back to the
  campaign's ``remaining_budget``, and off the creator's ``total_earned``.
  A sale refunded in full becomes ``reversed``.
* hold already released (credit ``settled``): the commission stands -- the
  creator may have withdrawn it, and the hold exists to bound the
  business's refund risk. The refund is recorded, rejected as
  ``refund_after_hold``.
* no paid sale for that order: rejected as ``no_such_order``, keeping the
  campaign or business it named; a sale for that order settled later (it
  reached the settler after its refund) is rejected as ``order_refunded``.
  A refund whose total is not above what was already refunded (a replay, or
  an older total arriving late): ``already_refunded``.

Stripe's ``charge.refunded`` takes the same path: the webhook appends a
``refund`` event (source ``stripe``) to the stream.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg

from oros.money import fmt, round_money
from oros.reasons import ALREADY_REFUNDED, NO_SUCH_ORDER, REFUND_AFTER_HOLD

from .ledger import (
    EVENT_COLUMNS,
    IP_COLUMN,
    clean_ip,
    creator_credit_legs,
    creator_wallets,
    event_row,
    platform_wallets,
)
from .verify import Candidate

ZERO = Decimal("0.00")

FIND_SALE = """
SELECT e.id::text AS id, e.campaign_id::text AS campaign_id
  FROM events e JOIN campaigns c ON c.id = e.campaign_id
 WHERE e.event_type = 'sale' AND e.order_id = %(order_id)s
   AND (%(business_id)s::uuid IS NULL OR c.business_id = %(business_id)s::uuid)
   AND e.status IN ('paid', 'reversed')
   AND (%(campaign_id)s::uuid IS NULL OR e.campaign_id = %(campaign_id)s::uuid)
 ORDER BY e.status = 'paid' DESC, e.occurred_at
 LIMIT 1
"""

# Read again under the campaign's lock: another refund of this sale may have just committed.
LOCK_SALE = """
SELECT id::text AS id, campaign_id::text AS campaign_id, creator_id::text AS creator_id, status,
       transfer_id::text AS transfer_id, value, payout_amount, platform_fee, refunded_value, reversed_payout,
       reversed_fee
  FROM events WHERE id = %s FOR UPDATE
"""

REBOOK_LEGS = """
INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction, status, hold_until,
                            description, metadata)
SELECT w, %(transfer)s, 'campaign', %(campaign_id)s, a, d, s, CASE WHEN s = 'pending' THEN %(hold_until)s END, descr,
       jsonb_build_object('run_id', %(run_id)s::text, 'events', 1, 'rebooked_from', %(previous)s::text,
                          'refund', %(refund)s::text)
  FROM unnest(%(wallets)s::uuid[], %(amounts)s::numeric[], %(directions)s::text[], %(statuses)s::text[],
              %(descrs)s::text[]) AS l(w, a, d, s, descr)
 WHERE a > 0
"""


@dataclass(frozen=True)
class Reversal:
    """What a sale still pays after a refund, and what goes back now."""

    payout_back: Decimal
    fee_back: Decimal
    payout_left: Decimal
    fee_left: Decimal


def reversal(*, payout: Decimal, fee: Decimal, sale_value: Decimal | None, refunded: Decimal,
             reversed_payout: Decimal, reversed_fee: Decimal) -> Reversal:
    """The reversal for a sale whose order is now refunded ``refunded`` in total.

    The commission taken back in all is ``payout x refunded / sale value``,
    rounded half-up to cents and never more than the payout (the fee likewise,
    never more than what is left of the payout); this refund takes back that
    total minus what earlier refunds took. A sale without a value, or refunded
    at or beyond it, is taken back whole.
    """
    if sale_value is None or sale_value <= 0 or refunded >= sale_value:
        payout_target, fee_target = payout, fee
    else:
        payout_target = min(payout, round_money(payout * refunded / sale_value))
        fee_target = min(fee, round_money(fee * refunded / sale_value))
    payout_left = payout - max(payout_target, reversed_payout)
    fee_left = min(fee - max(fee_target, reversed_fee), payout_left)
    return Reversal(payout_back=payout - reversed_payout - payout_left, fee_back=fee - reversed_fee - fee_left,
                    payout_left=payout_left, fee_left=fee_left)


@dataclass
class RefundOutcome:
    event_id: str
    reason: str | None  # None: applied
    sale_id: str | None = None
    amount: str | None = None  # the payout taken back


def apply_refund(conn: psycopg.Connection, refund: Candidate, *, run_id: str, now: datetime) -> RefundOutcome:
    """Decide and apply one refund inside the caller's transaction; records the refund event."""
    sale = None
    # The order is matched within its business or its campaign, whichever the edge knew (at least one).
    if refund.order_id and (refund.business_id or refund.campaign_id):
        sale = conn.execute(FIND_SALE, {
            "order_id": refund.order_id, "business_id": refund.business_id, "campaign_id": refund.campaign_id,
        }).fetchone()
    outcome = _reverse(conn, refund, sale, run_id=run_id) if sale else RefundOutcome(refund.event_id, NO_SUCH_ORDER)
    campaign_id = sale["campaign_id"] if sale else None
    status = "rejected" if outcome.reason else "reversed"
    row = event_row(refund, campaign_id=campaign_id, status=status, reason=outcome.reason, run_id=run_id, now=now)
    row = row[:IP_COLUMN] + (clean_ip(row[IP_COLUMN]),) + row[IP_COLUMN + 1:]
    conn.execute(
        f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}, metadata) VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))}, %s)"
        " ON CONFLICT (id) DO NOTHING",
        (*row, psycopg.types.json.Jsonb(_metadata(refund, outcome))),
    )
    return outcome


def _metadata(refund: Candidate, outcome: RefundOutcome) -> dict:
    if outcome.sale_id:
        return {"refunds": outcome.sale_id, "reversed_payout": outcome.amount}
    # Whom the refund named, so a sale arriving after it is matched and not paid (reasons.ORDER_REFUNDED).
    return {"campaign_id": refund.campaign_id, "business_id": refund.business_id}


def _reverse(conn: psycopg.Connection, refund: Candidate, found: dict, *, run_id: str) -> RefundOutcome:
    # Campaign row first, then the sale and its legs: the same lock order as settlement.
    conn.execute("SELECT 1 FROM campaigns WHERE id = %s FOR UPDATE", (found["campaign_id"],))
    sale = conn.execute(LOCK_SALE, (found["id"],)).fetchone()
    refunded = sale["value"] if refund.value is None else refund.value
    if sale["status"] == "reversed" or (refunded is not None and refunded <= sale["refunded_value"]):
        return RefundOutcome(refund.event_id, ALREADY_REFUNDED, sale["id"])
    # Locking the legs makes a concurrent hold release wait, so "still held" stays true until we reverse.
    legs = conn.execute(
        "SELECT status, hold_until FROM ledger_entries WHERE transfer_id = %s ORDER BY id FOR UPDATE",
        (sale["transfer_id"],),
    ).fetchall()
    # The creator's credit is the held leg; once released it is settled and the hold is over.
    held = [leg for leg in legs if leg["hold_until"] is not None and leg["status"] == "pending"]
    if not held:
        return RefundOutcome(refund.event_id, REFUND_AFTER_HOLD, sale["id"])
    back = reversal(payout=sale["payout_amount"], fee=sale["platform_fee"], sale_value=sale["value"],
                    refunded=refunded if refunded is not None else sale["value"] or ZERO,
                    reversed_payout=sale["reversed_payout"], reversed_fee=sale["reversed_fee"])
    transfer_id = sale["transfer_id"]
    if back.payout_back > 0:
        transfer_id = _rebook(conn, sale, back, hold_until=held[0]["hold_until"], run_id=run_id,
                              refund_id=refund.event_id)
        conn.execute("UPDATE campaigns SET remaining_budget = remaining_budget + %s WHERE id = %s",
                     (back.payout_back, sale["campaign_id"]))
        conn.execute(
            "UPDATE campaign_creators SET total_earned = total_earned - %s WHERE campaign_id = %s AND creator_id = %s",
            (back.payout_back - back.fee_back, sale["campaign_id"], sale["creator_id"]),
        )
    conn.execute(
        """UPDATE events SET refunded_value = %(refunded)s, reversed_payout = reversed_payout + %(payout)s,
                  reversed_fee = reversed_fee + %(fee)s, transfer_id = %(transfer)s,
                  status = CASE WHEN %(left)s = 0 THEN 'reversed' ELSE status END
            WHERE id = %(id)s""",
        {"refunded": refunded if refunded is not None else sale["refunded_value"], "payout": back.payout_back,
         "fee": back.fee_back, "transfer": transfer_id, "left": back.payout_left, "id": sale["id"]},
    )
    return RefundOutcome(refund.event_id, None, sale["id"], fmt(back.payout_back))


def _rebook(conn: psycopg.Connection, sale: dict, back: Reversal, *, hold_until: datetime, run_id: str,
            refund_id: str) -> str:
    """Reverse the sale's live transfer; book what it still pays as a new one. Returns the live transfer id."""
    # The creator's receivable first: the reversal may give back a repayment, which the new transfer repays again.
    conn.execute("SELECT oros_lock_receivables(%s::uuid[])", ([sale["creator_id"]],))
    conn.execute(
        "UPDATE ledger_entries SET status = 'reversed' WHERE transfer_id = %s AND status IN ('pending', 'settled')",
        (sale["transfer_id"],),
    )
    if back.payout_left == 0:
        return sale["transfer_id"]
    platform = platform_wallets(conn)
    transfer_id = str(uuid.uuid4())
    wallet = creator_wallets(conn, [sale["creator_id"]])[sale["creator_id"]]
    [creator_legs] = creator_credit_legs(conn, [(sale["creator_id"], wallet, back.payout_left - back.fee_left)])
    legs = [(platform["escrow"], back.payout_left, "debit", "settled", "campaign payout from escrow"),
            *((w, a, "credit", st, d) for w, a, st, d in creator_legs),
            (platform["fees"], back.fee_left, "credit", "pending", "platform fee")]
    conn.execute(REBOOK_LEGS, {
        "transfer": transfer_id, "campaign_id": sale["campaign_id"], "hold_until": hold_until, "run_id": run_id,
        "previous": sale["transfer_id"], "refund": refund_id,
        **dict(zip(("wallets", "amounts", "directions", "statuses", "descrs"), map(list, zip(*legs, strict=True)),
                   strict=True)),
    })
    return transfer_id
