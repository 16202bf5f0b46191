"""Sale refunds: reverse a paid sale's commission, pro rata to what was refunded, while it is still on hold.

A ``refund`` event names an order and the business that reported it or the
campaign (the edge may know only one). It is matched against paid sale
events of that business's campaigns, or of that campaign. Its ``value`` is
the order's refunded total so far (Stripe's ``amount_refunded``; the API
takes the same); no value means refunded in full. Policy:

* creator's credit still ``pending`` (inside the hold): the commission
  shrinks to what the unrefunded part of the sale earns (``reversal``, the
  fee and a supporter's share reward following the payout left).
  ``oros_reverse_sale`` (SQL: its core ``oros_reverse_and_rebook``, sql/postgres/0190) writes
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

Three stages, as a settlement's: ``load_refund`` reads the sale and whether
it is still held (locking what a reversal moves, unless a dry run),
``plan_refund`` decides (pure, on ``reversal``), ``post_refund`` reverses. A
dry run (``dry_run``) loads and plans every refund and posts nothing.

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
from .plan import Counts
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

# The sale the refund matched, read again (under the campaign's lock when applying: another refund of this sale
# may have just committed).
SALE = """
SELECT id::text AS id, campaign_id::text AS campaign_id, creator_id::text AS creator_id, status,
       transfer_id::text AS transfer_id, value, payout_amount, platform_fee, refunded_value, reversed_payout,
       reversed_fee, coalesce(share_reward, 0) AS share_reward, reversed_reward, supporter_id::text AS supporter_id,
       created_at, EXISTS (SELECT 1 FROM live_sales s WHERE s.event_id = events.id) AS live
  FROM events WHERE id = %s
"""

POOL = "SELECT pool_price, pool_epoch FROM campaigns WHERE id = %s"

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
SELECT 1 FROM ledger_entries WHERE transfer_id = ANY(%(transfers)s::uuid[]) ORDER BY id FOR UPDATE
"""

# The one "still held" rule (sql/postgres/0190): held until released, whatever the clock says.
IS_HELD = "SELECT oros_sale_held_until(%s) IS NOT NULL AS held"

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


@dataclass(frozen=True)
class RefundFacts:
    """What the database says about a refund's sale (``load_refund``); ``sale`` None: no paid sale of its order."""

    sale: dict | None
    held: bool = False  # the sale's credit is still held (sql/postgres/0190)
    pool: dict | None = None  # the campaign's boost pool (price, epoch) before the reversal
    boosters: dict | None = None  # the boost rewards a reversal may lower (BOOSTERS)


@dataclass(frozen=True)
class RefundPlan:
    """What a refund does (``plan_refund``): ``reason`` None: ``back`` is reversed, ``refunded`` the new total."""

    refund: Candidate
    facts: RefundFacts
    reason: str | None
    refunded: Decimal | None = None
    back: Reversal | None = None


def find_sale(conn: psycopg.Connection, refund: Candidate) -> dict | None:
    """The paid sale of the refund's order, within its business or its campaign (the edge knows at least one)."""
    if not refund.order_id or not (refund.business_id or refund.campaign_id):
        return None
    return conn.execute(FIND_SALE, {
        "order_id": refund.order_id, "business_id": refund.business_id, "campaign_id": refund.campaign_id,
    }).fetchone()


def load_refund(conn: psycopg.Connection, found: dict | None, *, lock: bool) -> RefundFacts:
    """Read the sale ``found`` and whether it is still held; with ``lock``, lock what a reversal moves.

    The lock order of sql/postgres/0161: the campaign and the sale, every held leg this may move (the sale's and
    the rewards'); the receivables and the other wallets follow in ``post_refund``. Locking the legs makes a
    concurrent hold release wait, so "still held" stays true until we reverse, and the release cannot hold a
    reward's legs while waiting for the sale's. Without ``lock`` (a dry run) the same facts, read as they are.
    """
    if found is None:
        return RefundFacts(None)
    for_update = " FOR UPDATE" if lock else ""
    pool = conn.execute(POOL + for_update, (found["campaign_id"],)).fetchone()
    sale = conn.execute(SALE + for_update, (found["id"],)).fetchone()
    # Money given back to a completed campaign lowers its boosters' rewards (sql/postgres/0155).
    boosters = conn.execute(BOOSTERS, (sale["campaign_id"],)).fetchone()
    if lock:
        conn.execute(LOCK_LEGS, {"transfers": [sale["transfer_id"], *boosters["transfers"]]})
    held = conn.execute(IS_HELD, (sale["transfer_id"],)).fetchone()["held"]
    return RefundFacts(sale, held=held, pool=pool, boosters=boosters)


def plan_refund(refund: Candidate, facts: RefundFacts) -> RefundPlan:
    """Pure: the refund's outcome against its sale's facts, and what a reversal gives back (``reversal``)."""
    sale = facts.sale
    if sale is None:
        return RefundPlan(refund, facts, NO_SUCH_ORDER)
    refunded = sale["value"] if refund.value is None else refund.value
    if sale["status"] == "reversed" or (refunded is not None and refunded <= sale["refunded_value"]):
        return RefundPlan(refund, facts, ALREADY_REFUNDED)
    if not facts.held:
        return RefundPlan(refund, facts, REFUND_AFTER_HOLD)
    back = reversal(payout=sale["payout_amount"], fee=sale["platform_fee"], sale_value=sale["value"],
                    refunded=refunded if refunded is not None else sale["value"] or ZERO,
                    reversed_payout=sale["reversed_payout"], reversed_fee=sale["reversed_fee"],
                    reward=sale["share_reward"], reversed_reward=sale["reversed_reward"])
    return RefundPlan(refund, facts, None, refunded, back)


def outcome_of(plan: RefundPlan, boost_rewards: list[dict] = ()) -> RefundOutcome:
    """The plan's outcome as the report counts it (with the boost rewards a reversal lowered, when posted)."""
    sale_id = plan.facts.sale["id"] if plan.facts.sale else None
    if plan.reason is not None:
        return RefundOutcome(plan.refund.event_id, plan.reason, sale_id)
    return RefundOutcome(plan.refund.event_id, None, sale_id, fmt(plan.back.payout_back),
                         share_reward_back=plan.back.reward_back, boost_rewards=len(boost_rewards),
                         boost_reward_back=sum((r["taken"] for r in boost_rewards), ZERO))


def counts(outcomes: list[RefundOutcome]) -> Counts:
    """What the report adds up of these refunds."""
    total = Counts()
    for o in outcomes:
        total.refund(o.reason, Decimal(o.amount or 0), share_reward=o.share_reward_back,
                     boost_rewards=o.boost_rewards, boost_reward_amount=o.boost_reward_back)
    return total


def dry_run(conn: psycopg.Connection, refunds: list[Candidate], early: frozenset[str]) -> list[RefundOutcome]:
    """Plan every refund of a read without writing: each as ``apply_refund`` would decide it now. A sale paid
    in the same read is not paid yet (``no_such_order``), and the boost rewards a reversal would lower are
    not counted: they are computed by the SQL that lowers them (sql/postgres/0155)."""
    outcomes = []
    for refund in refunds:
        found = find_sale(conn, refund)
        if refund.event_id in early and found is None:
            continue
        outcomes.append(outcome_of(plan_refund(refund, load_refund(conn, found, lock=False))))
    return outcomes


def apply_refund(conn: psycopg.Connection, refund: Candidate, *, run_id: str, now: datetime,
                 recorded: bool = False) -> RefundOutcome | None:
    """Decide and apply one refund inside the caller's transaction; records the refund event.

    :param recorded: the refund was decided before (``no_such_order``): it is decided again only
        against a sale found now (None otherwise), and its row is updated.
    """
    found = find_sale(conn, refund)
    if recorded and found is None:
        return None
    plan = plan_refund(refund, load_refund(conn, found, lock=True))
    result = outcome_of(plan, post_refund(conn, plan, run_id=run_id) if plan.reason is None else [])
    campaign_id = found["campaign_id"] if found else None
    status = "rejected" if result.reason else "reversed"
    if recorded:
        conn.execute(REDECIDE_REFUND, (campaign_id, status, result.reason, run_id, now,
                                       Jsonb(_metadata(refund, result)), refund.event_id))
    else:
        insert_event(conn, refund, campaign_id=campaign_id, status=status, reason=result.reason, run_id=run_id,
                     now=now, metadata=_metadata(refund, result))
    return result


def _metadata(refund: Candidate, outcome: RefundOutcome) -> dict:
    if outcome.sale_id:
        return {"refunds": outcome.sale_id, "reversed_payout": outcome.amount}
    # Whom the refund named, so a sale arriving after it is matched and the refund applied to it then.
    return {"campaign_id": refund.campaign_id, "business_id": refund.business_id}


def post_refund(conn: psycopg.Connection, plan: RefundPlan, *, run_id: str) -> list[dict]:
    """Reverse a planned refund (its sale and legs locked by ``load_refund``); the boost rewards it lowered."""
    return _take_back(conn, plan.facts, plan.back, refunded=plan.refunded, run_id=run_id,
                      cause_id=plan.refund.event_id)


def reverse_superseded(conn: psycopg.Connection, found: dict, *, run_id: str, cause_id: str) -> Decimal | None:
    """Take back all that a paid sale still pays while it is held, as a refund of its whole value would
    (``settler.supersede``: an unsigned pixel's sale the business's own sale of its order replaced). Returns
    the payout taken back, or None when the sale is no longer paid or no longer held (it then stands)."""
    facts = load_refund(conn, found, lock=True)
    sale = facts.sale
    if sale["status"] != "paid" or not facts.held:
        return None
    back = reversal(payout=sale["payout_amount"], fee=sale["platform_fee"], sale_value=None, refunded=ZERO,
                    reversed_payout=sale["reversed_payout"], reversed_fee=sale["reversed_fee"],
                    reward=sale["share_reward"], reversed_reward=sale["reversed_reward"])
    _take_back(conn, facts, back, refunded=None, run_id=run_id, cause_id=cause_id)
    return back.payout_back


def _take_back(conn: psycopg.Connection, facts: RefundFacts, back: Reversal, *, refunded: Decimal | None,
               run_id: str, cause_id: str) -> list[dict]:
    sale, boosters = facts.sale, facts.boosters
    transfers = [sale["transfer_id"], *boosters["transfers"]]
    users = [*boosters["users"], *(u for u in (sale["creator_id"], sale["supporter_id"]) if u)]
    conn.execute("SELECT oros_lock_receivables(%s::uuid[])", (users,))
    conn.execute(LOCK_WALLETS, {"transfers": transfers, "users": users})
    # A live sale's rest is booked again as a live sale, and its live_sales row follows (sql/postgres/0190);
    # live sales pay no share reward.
    if sale["live"]:
        ledger.reverse_live_sale(conn, sale["id"], refunded=refunded, payout_back=back.payout_back,
                                 fee_back=back.fee_back, run_id=run_id, refund_id=cause_id)
    else:
        ledger.reverse_sale(conn, sale["id"], refunded=refunded, payout_back=back.payout_back,
                            fee_back=back.fee_back, reward_back=back.reward_back, run_id=run_id,
                            refund_id=cause_id)
    # The rewards fixed after the sale was booked counted it (its events row is written with its first payout).
    if not boosters["users"]:
        return []
    return ledger.take_back_boost_rewards(conn, sale["campaign_id"], price_before=facts.pool["pool_price"],
                                          epoch=facts.pool["pool_epoch"], booked_at=sale["created_at"])
