"""Sale refunds: reverse a paid sale's commission, pro rata to what was refunded, while it is still on hold.

A ``refund`` event names an order and the business that reported it or the
campaign (the edge may know only one). It is matched against paid sale
events of that business's campaigns, or of that campaign. Its ``value`` is
the order's refunded total so far (Stripe's ``amount_refunded``; the API
takes the same); no value means refunded in full. Policy:

* creator's credit still ``pending`` (inside the hold): the commission
  shrinks to what the unrefunded part of the sale earns (``reversal``, the
  fee and a supporter's share reward following the payout left).
  ``oros_reverse_sale`` (SQL, 0111) writes
  it: the sale's live transfer is reversed in one statement and, unless
  nothing is left, the remainder is booked again as a new transfer with the
  same hold: ledger entries never change amount. The difference goes back to
  the campaign's ``remaining_budget``, and off the creator's ``total_earned``.
  A sale refunded in full becomes ``reversed``. On a completed campaign the
  boost rewards fixed at completion that counted the sale fall with the
  money it gave back to the pool, in the same transaction
  (``oros_take_back_boost_rewards``, 0155: booked again while held, owed
  once released).
* hold already released (credit ``settled``): the commission stands -- the
  creator may have withdrawn it, and the hold exists to bound the
  business's refund risk. The refund is recorded, rejected as
  ``refund_after_hold``.
* no paid sale for that order: rejected as ``no_such_order``, keeping the
  campaign or business it named. When a sale for that order is paid later
  (it reached the settler after its refund), the refund is decided again
  against it, pro rata like any other, and its row records the new outcome.
  A refund whose total is not above what was already refunded (a replay, or
  an older total arriving late): ``already_refunded``.

Stripe's ``charge.refunded`` takes the same path: the webhook appends a
``refund`` event (source ``stripe``) to the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg
from psycopg.types.json import Jsonb

from oros.money import fmt, round_money
from oros.reasons import ALREADY_REFUNDED, NO_SUCH_ORDER, REFUND_AFTER_HOLD

from . import ledger
from .records import insert_event
from .verify import Candidate

ZERO = Decimal("0.00")

# The business's own sale of the order before an unsigned pixel's that named it too (sql/postgres/0167).
FIND_SALE = """
SELECT e.id::text AS id, e.campaign_id::text AS campaign_id
  FROM events e JOIN campaigns c ON c.id = e.campaign_id
 WHERE e.event_type = 'sale' AND e.order_id = %(order_id)s
   AND (%(business_id)s::uuid IS NULL OR c.business_id = %(business_id)s::uuid)
   AND e.status IN ('paid', 'reversed')
   AND (%(campaign_id)s::uuid IS NULL OR e.campaign_id = %(campaign_id)s::uuid)
 ORDER BY e.unsigned_pixel, e.status = 'paid' DESC, e.occurred_at
 LIMIT 1
"""

# An early refund (no_such_order) decided again against the sale found now.
REDECIDE_REFUND = """
UPDATE events SET campaign_id = %s, status = %s, rejection_reason = %s, settlement_run_id = %s, verified_at = %s,
                  metadata = %s
 WHERE id = %s
"""

# Read again under the campaign's lock: another refund of this sale may have just committed.
LOCK_SALE = """
SELECT id::text AS id, campaign_id::text AS campaign_id, creator_id::text AS creator_id, status,
       transfer_id::text AS transfer_id, value, payout_amount, platform_fee, refunded_value, reversed_payout,
       reversed_fee, coalesce(share_reward, 0) AS share_reward, reversed_reward, supporter_id::text AS supporter_id,
       created_at, EXISTS (SELECT 1 FROM live_sales s WHERE s.event_id = events.id) AS live
  FROM events WHERE id = %s FOR UPDATE
"""

# The boosters' rewards a reversal may lower: a completed campaign's, paid already (sql/postgres/0155), and the
# transfers that pay them now.
BOOSTERS = """
SELECT coalesce(array_agg(w.user_id::text ORDER BY w.user_id), '{}') AS users,
       coalesce(array_agg(w.transfer_id::text) FILTER (WHERE w.transfer_id IS NOT NULL), '{}') AS transfers
  FROM rewards w JOIN campaigns c ON c.id = w.campaign_id
 WHERE w.campaign_id = %s AND w.source = 'boost' AND w.status = 'paid' AND w.amount > 0 AND c.status = 'completed'
"""

# Every leg of the sale's and the rewards' transfers, in one statement, in id order (sql/postgres/0161).
LOCK_LEGS = """
SELECT transfer_id::text AS transfer_id, status, hold_until FROM ledger_entries
 WHERE transfer_id = ANY(%(transfers)s::uuid[]) ORDER BY id FOR UPDATE
"""

# Every wallet the reversal and what follows it may move (those legs', and the users' main wallets the money
# left is booked to), in id order, before the first movement: the movements lock them statement by statement,
# each in id order but not all together, so a release's trigger (all at once) could hold one while waiting for
# another. The receivables are locked before these (oros_lock_receivables).
LOCK_WALLETS = """
SELECT 1 FROM wallets
 WHERE id IN (SELECT wallet_id FROM ledger_entries WHERE transfer_id = ANY(%(transfers)s::uuid[]))
    OR (purpose = 'main' AND user_id = ANY(%(users)s::uuid[]))
 ORDER BY id FOR NO KEY UPDATE
"""

@dataclass(frozen=True)
class Reversal:
    """What a sale still pays after a refund, and what goes back now."""

    payout_back: Decimal
    fee_back: Decimal
    payout_left: Decimal
    fee_left: Decimal
    reward_back: Decimal = ZERO
    reward_left: Decimal = ZERO


def reversal(*, payout: Decimal, fee: Decimal, sale_value: Decimal | None, refunded: Decimal,
             reversed_payout: Decimal, reversed_fee: Decimal, reward: Decimal = ZERO,
             reversed_reward: Decimal = ZERO) -> Reversal:
    """The reversal for a sale whose order is now refunded ``refunded`` in total.

    The commission taken back in all is ``payout x refunded / sale value``,
    rounded half-up to cents and never more than the payout; this refund
    takes back that total minus what earlier refunds took. A sale without a
    value, or refunded at or beyond it, is taken back whole. The fee is then
    what the payout left earns at the sale's own fee rate, so it moves only
    when the payout does (rounding it on its own let a step take back a cent
    of fee and nothing of the payout), and the creator's net never grows. A
    supporter's share ``reward`` (out of the creator's net) follows the payout
    left the same way, within the net left.
    """
    if sale_value is None or sale_value <= 0 or refunded >= sale_value:
        payout_left = ZERO
    else:
        payout_left = payout - max(reversed_payout, min(payout, round_money(payout * refunded / sale_value)))
    # Never more fee than is left: a sale reversed under the older rule may have given back more already.
    fee_left = min(fee - reversed_fee, round_money(fee * payout_left / payout) if payout > 0 else ZERO)
    reward_left = min(reward - reversed_reward, round_money(reward * payout_left / payout) if payout > 0 else ZERO,
                      payout_left - fee_left)
    return Reversal(payout_back=payout - reversed_payout - payout_left, fee_back=fee - reversed_fee - fee_left,
                    payout_left=payout_left, fee_left=fee_left, reward_back=reward - reversed_reward - reward_left,
                    reward_left=reward_left)


@dataclass
class RefundOutcome:
    event_id: str
    reason: str | None  # None: applied
    sale_id: str | None = None
    amount: str | None = None  # the payout taken back
    share_reward_back: Decimal = ZERO  # of it, the supporter's share reward
    boost_rewards: int = 0  # boost rewards this reversal lowered (sql/postgres/0155)
    boost_reward_back: Decimal = ZERO  # and what they gave back, held or owed


def apply_refund(conn: psycopg.Connection, refund: Candidate, *, run_id: str, now: datetime,
                 recorded: bool = False) -> RefundOutcome | None:
    """Decide and apply one refund inside the caller's transaction; records the refund event.

    :param recorded: the refund was decided before (``no_such_order``): it is decided again only
        against a sale found now (None otherwise), and its row is updated.
    """
    sale = None
    # The order is matched within its business or its campaign, whichever the edge knew (at least one).
    if refund.order_id and (refund.business_id or refund.campaign_id):
        sale = conn.execute(FIND_SALE, {
            "order_id": refund.order_id, "business_id": refund.business_id, "campaign_id": refund.campaign_id,
        }).fetchone()
    if recorded and sale is None:
        return None
    outcome = _reverse(conn, refund, sale, run_id=run_id) if sale else RefundOutcome(refund.event_id, NO_SUCH_ORDER)
    campaign_id = sale["campaign_id"] if sale else None
    status = "rejected" if outcome.reason else "reversed"
    if recorded:
        conn.execute(REDECIDE_REFUND, (campaign_id, status, outcome.reason, run_id, now,
                                       Jsonb(_metadata(refund, outcome)), refund.event_id))
    else:
        insert_event(conn, refund, campaign_id=campaign_id, status=status, reason=outcome.reason, run_id=run_id,
                     now=now, metadata=_metadata(refund, outcome))
    return outcome


def _metadata(refund: Candidate, outcome: RefundOutcome) -> dict:
    if outcome.sale_id:
        return {"refunds": outcome.sale_id, "reversed_payout": outcome.amount}
    # Whom the refund named, so a sale arriving after it is matched and the refund applied to it then.
    return {"campaign_id": refund.campaign_id, "business_id": refund.business_id}


def _reverse(conn: psycopg.Connection, refund: Candidate, found: dict, *, run_id: str) -> RefundOutcome:
    held = _HeldSale.lock(conn, found)
    sale = held.sale
    refunded = sale["value"] if refund.value is None else refund.value
    if sale["status"] == "reversed" or (refunded is not None and refunded <= sale["refunded_value"]):
        return RefundOutcome(refund.event_id, ALREADY_REFUNDED, sale["id"])
    if not held.held:
        return RefundOutcome(refund.event_id, REFUND_AFTER_HOLD, sale["id"])
    back = reversal(payout=sale["payout_amount"], fee=sale["platform_fee"], sale_value=sale["value"],
                    refunded=refunded if refunded is not None else sale["value"] or ZERO,
                    reversed_payout=sale["reversed_payout"], reversed_fee=sale["reversed_fee"],
                    reward=sale["share_reward"], reversed_reward=sale["reversed_reward"])
    lowered = held.take_back(conn, back, refunded=refunded, run_id=run_id, cause_id=refund.event_id)
    return RefundOutcome(refund.event_id, None, sale["id"], fmt(back.payout_back), share_reward_back=back.reward_back,
                         boost_rewards=len(lowered), boost_reward_back=sum((r["taken"] for r in lowered), ZERO))


def reverse_superseded(conn: psycopg.Connection, found: dict, *, run_id: str, cause_id: str) -> Decimal | None:
    """Take back all that a paid sale still pays while it is held, as a refund of its whole value would
    (``settler.supersede``: an unsigned pixel's sale the business's own sale of its order replaced). Returns
    the payout taken back, or None when the sale is no longer paid or no longer held (it then stands)."""
    held = _HeldSale.lock(conn, found)
    sale = held.sale
    if sale["status"] != "paid" or not held.held:
        return None
    back = reversal(payout=sale["payout_amount"], fee=sale["platform_fee"], sale_value=None, refunded=ZERO,
                    reversed_payout=sale["reversed_payout"], reversed_fee=sale["reversed_fee"],
                    reward=sale["share_reward"], reversed_reward=sale["reversed_reward"])
    held.take_back(conn, back, refunded=None, run_id=run_id, cause_id=cause_id)
    return back.payout_back


@dataclass
class _HeldSale:
    """A paid sale locked for a reversal, in the lock order of sql/postgres/0161: the campaign and the sale,
    then every held leg a reversal may move (the sale's and the boost rewards'); ``take_back`` locks the
    receivables and the other wallets before moving anything."""

    pool: dict
    sale: dict
    boosters: dict
    legs: list[dict]

    @classmethod
    def lock(cls, conn: psycopg.Connection, found: dict) -> _HeldSale:
        # Campaign row first, then the sale and its legs: the same lock order as settlement.
        pool = conn.execute("SELECT pool_price, pool_epoch FROM campaigns WHERE id = %s FOR UPDATE",
                            (found["campaign_id"],)).fetchone()
        sale = conn.execute(LOCK_SALE, (found["id"],)).fetchone()
        # Money given back to a completed campaign lowers its boosters' rewards (sql/postgres/0155).
        boosters = conn.execute(BOOSTERS, (sale["campaign_id"],)).fetchone()
        # Locking the legs makes a concurrent hold release wait, so "still held" stays true until we reverse,
        # and the release cannot hold a reward's legs while waiting for the sale's.
        legs = conn.execute(LOCK_LEGS, {"transfers": [sale["transfer_id"], *boosters["transfers"]]}).fetchall()
        return cls(pool, sale, boosters, legs)

    @property
    def held(self) -> bool:
        """The creator's credit is the held leg; once released it is settled and the hold is over."""
        return any(leg["transfer_id"] == self.sale["transfer_id"] and leg["hold_until"] is not None
                   and leg["status"] == "pending" for leg in self.legs)

    def take_back(self, conn: psycopg.Connection, back: Reversal, *, refunded: Decimal | None, run_id: str,
                  cause_id: str) -> list[dict]:
        """Reverse ``back``; returns the boost rewards lowered."""
        sale = self.sale
        transfers = [sale["transfer_id"], *self.boosters["transfers"]]
        users = [*self.boosters["users"], *(u for u in (sale["creator_id"], sale["supporter_id"]) if u)]
        conn.execute("SELECT oros_lock_receivables(%s::uuid[])", (users,))
        conn.execute(LOCK_WALLETS, {"transfers": transfers, "users": users})
        # A live sale's rest is booked again as a live sale, and its live_sales row follows (sql/postgres/0115);
        # live sales pay no share reward.
        if sale["live"]:
            ledger.reverse_live_sale(conn, sale["id"], refunded=refunded, payout_back=back.payout_back,
                                     fee_back=back.fee_back, run_id=run_id, refund_id=cause_id)
        else:
            ledger.reverse_sale(conn, sale["id"], refunded=refunded, payout_back=back.payout_back,
                                fee_back=back.fee_back, reward_back=back.reward_back, run_id=run_id,
                                refund_id=cause_id)
        # The rewards fixed after the sale was booked counted it (its events row is written with its first payout).
        if not self.boosters["users"]:
            return []
        return ledger.take_back_boost_rewards(conn, sale["campaign_id"], price_before=self.pool["pool_price"],
                                              epoch=self.pool["pool_epoch"], booked_at=sale["created_at"])
