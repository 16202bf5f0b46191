"""Act: post a read's decisions to Postgres, one transaction per campaign; apply refunds; tell the trackers.

Each campaign's transaction locks the campaign row, plans the campaign
again against the ``remaining_budget`` it locked (``plan.settle_campaign``:
the budget may have moved since it was loaded), records every decided event
with one COPY and books the ledger through ``oros_post_settlement``
(``settler.ledger``). ``settle_workers`` connections post campaigns at once: they touch
disjoint rows except the escrow and fee wallets, which the ledger trigger
locks in id order at the end of each transaction. Events no known campaign
owns are recorded last, rejected, without foreign keys. Refunds follow,
once the read's sales are paid, so a sale and its refund in one read net
out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from redis.exceptions import RedisError

from oros.connections import redis_client
from oros.fees import FeeSchedule
from oros.links import CAMPAIGN_CODES_SQL, publish

from . import ledger, live, refunds, state, supersede
from .plan import CampaignPlan, Counts, Decided, Decisions, Share, settle_campaign
from .records import copy_events, copy_lines, paid_lines

if TYPE_CHECKING:
    from .run import RunContext

log = logging.getLogger(__name__)

LOCK_CAMPAIGN = """
SELECT status, remaining_budget, payout_per_action FROM campaigns WHERE id = %s FOR UPDATE
"""

# The trackers' view of links disabled since the last publish (settler_state 'disabled_links'): the
# admin API publishes when a campaign's hosts narrow, and this repeats it until Redis took it.
DISABLED_STATE = "disabled_links"
# disabled_at is the disabling transaction's start: one still open at a publish commits behind it.
DISABLED_OVERLAP = timedelta(minutes=10)
DISABLED_SQL = """
SELECT code, disabled_at FROM tracking_links
 WHERE disabled_at >= coalesce(%(mark)s::timestamptz, '-infinity') - %(overlap)s
"""


def post_decisions(ctx: RunContext, conn: psycopg.Connection, decisions: Decisions,
                   done: Callable[[CampaignPlan], None]) -> None:
    """Post every campaign's decisions, calling ``done`` with each campaign's plan as it commits."""
    owned = [d for d in decisions.campaigns if d.campaign is not None]

    def post(decided: Decided) -> CampaignPlan:
        with pool.connection() as worker:
            return post_campaign(ctx, worker, decided, decisions.fees, decisions.shares, decisions.pixel_sales)

    with _worker_pool(ctx) as pool, ThreadPoolExecutor(ctx.settings.settle_workers) as threads:
        for plan in threads.map(post, owned):
            done(plan)
    for decided in decisions.campaigns:
        if decided.campaign is None:
            done(post_unowned(ctx, conn, decided, decisions.fees))


def post_campaign(ctx: RunContext, conn: psycopg.Connection, decided: Decided, fees: FeeSchedule,
                  shares: dict[str, Share] | None = None,
                  pixel_sales: supersede.PixelSales | None = None) -> CampaignPlan:
    """One campaign's transaction: lock, plan against the locked budget, mark the unsigned pixels its paid
    posts supersede, record its events, book the ledger."""
    with conn.transaction():
        locked = conn.execute(LOCK_CAMPAIGN, (decided.campaign.id,)).fetchone()
        plan = settle_campaign(decided, remaining=locked["remaining_budget"], payout=locked["payout_per_action"],
                               status=locked["status"], fees=fees, shares=shares)
        if pixel_sales:
            supersede.mark(conn, plan.campaign_id, plan.paid, pixel_sales)
        copy_events(conn, lambda clean: _lines(ctx, plan, clean))
        unmark_later_visits(conn, decided)
        if plan.paid or plan.completes:
            ledger.post_settlement(conn, plan, run_id=ctx.run_id, hold_until=ctx.hold_until)
    return plan


# A click decided before an earlier click of its visitor arrived was marked the day's first visit: no longer.
# The hourly sums' UPDATE trigger (sql/postgres/0140) moves it out of their unique count.
UNMARK_LATER_VISITS_SQL = "UPDATE events SET first_visit = false WHERE id = ANY(%s::uuid[]) AND first_visit"


def unmark_later_visits(conn: psycopg.Connection, decided: Decided) -> None:
    """Take the first-visit mark from each decided click a late click of this read now precedes."""
    events = (*decided.accepted, *(e for e, _ in decided.rejected))
    # A next click of this same read was decided unmarked already: only those decided earlier need the update.
    fresh = {e.event_id for e in events}
    later = [e.later_visit_id for e in events if e.later_visit_id and e.later_visit_id not in fresh]
    if later:
        conn.execute(UNMARK_LATER_VISITS_SQL, ("{" + ",".join(later) + "}",))


def post_unowned(ctx: RunContext, conn: psycopg.Connection, decided: Decided, fees: FeeSchedule) -> CampaignPlan:
    """Events no known campaign (or creator) owns: recorded as rejected, with no campaign link."""
    plan = settle_campaign(decided, remaining=Decimal(0), payout=Decimal(0), status="", fees=fees)
    with conn.transaction():
        copy_events(conn, lambda clean: _lines(ctx, plan, clean))
    return plan


def _lines(ctx: RunContext, plan: CampaignPlan, clean: bool) -> list[str]:
    lines = copy_lines(plan.rejected, campaign_id=plan.campaign_id, run_id=ctx.run_id, now=ctx.now, clean=clean)
    for transfer in plan.transfers:
        lines += paid_lines(transfer.events, campaign_id=plan.campaign_id, transfer_id=transfer.id,
                            payout=plan.payout, fee=transfer.fee, reward=transfer.reward if transfer.share else None,
                            run_id=ctx.run_id, now=ctx.now, clean=clean)
    return lines


def post_live_sales(ctx: RunContext, conn: psycopg.Connection, decided: list[live.LiveDecided],
                    fees: FeeSchedule) -> list[live.LivePlan]:
    """Each campaign's live sales in one transaction: lock the campaign row, plan against the budget it
    locked, record the sales' events, book them (``oros_post_live_sales``); the unowned recorded rejected."""
    plans = []
    for group in decided:
        with conn.transaction():
            if group.campaign is None:
                plan = live.plan_campaign(group, remaining=Decimal(0), payout=Decimal(0), fees=fees)
            else:
                locked = conn.execute(LOCK_CAMPAIGN, (group.campaign.id,)).fetchone()
                plan = live.plan_campaign(group, remaining=locked["remaining_budget"],
                                          payout=locked["payout_per_action"], fees=fees)
            copy_events(conn, lambda clean, plan=plan: _live_lines(ctx, plan, clean))
            if plan.paid:
                ledger.post_live_sales(conn, plan, run_id=ctx.run_id, hold_until=ctx.hold_until)
        plans.append(plan)
    return plans


def _live_lines(ctx: RunContext, plan: live.LivePlan, clean: bool) -> list[str]:
    lines = copy_lines(plan.rejected, campaign_id=plan.campaign_id, run_id=ctx.run_id, now=ctx.now, clean=clean)
    for sale in plan.paid:
        lines += paid_lines([sale.event], campaign_id=plan.campaign_id, transfer_id=sale.transfer_id,
                            payout=sale.payout, fee=sale.fee, reward=None, run_id=ctx.run_id, now=ctx.now, clean=clean)
    return lines


def _worker_pool(ctx: RunContext) -> ConnectionPool:
    workers = ctx.settings.settle_workers
    return ConnectionPool(ctx.settings.database_url, min_size=workers, max_size=workers,
                          kwargs={"row_factory": dict_row, "autocommit": True}, name="settler")


def apply_refunds(ctx: RunContext, conn: psycopg.Connection, decisions: Decisions) -> Counts:
    """Each refund of the read (and each early one whose sale may now be paid) in its own transaction; first,
    the unsigned pixels' sales the read's paid posts superseded are taken back (``settler.supersede``)."""
    taken = supersede.reverse(conn, decisions.pixel_sales, run_id=ctx.run_id, now=ctx.now)
    if taken:
        log.info("superseded unsigned pixel sales taken back", extra={"sales": taken})
    outcomes = []
    for refund in decisions.refunds:
        with conn.transaction():
            outcome = refunds.apply_refund(conn, refund, run_id=ctx.run_id, now=ctx.now,
                                           recorded=refund.event_id in decisions.early_refunds)
        if outcome is not None:
            outcomes.append(outcome)
    return refunds.counts(outcomes)


def publish_links(ctx: RunContext, conn: psycopg.Connection, completed: list[str]) -> None:
    """Trackers forget the links of campaigns this run completed, and of links disabled since the last publish.

    A failure is logged: completed campaigns' links expire from the trackers'
    caches on their own, and disabled links are published again by the next
    run (their mark moves only once Redis took them). Money never depends on
    it: the settler pays nothing through a disabled link (``link_disabled``)
    or beyond a campaign's budget, whatever a tracker still serves.
    """
    codes = [r["code"] for c in completed for r in conn.execute(CAMPAIGN_CODES_SQL, {"campaign_id": c})]
    disabled = conn.execute(DISABLED_SQL, {"mark": state.read_mark(conn, DISABLED_STATE),
                                           "overlap": DISABLED_OVERLAP}).fetchall()
    codes += [r["code"] for r in disabled]
    if not codes:
        return

    async def _publish() -> None:
        redis = redis_client(ctx.settings)
        try:
            await publish(redis, ctx.settings.keys, codes)
        finally:
            await redis.aclose()

    try:
        asyncio.run(_publish())
    except (OSError, RedisError):
        log.warning("could not publish link invalidation", extra={"campaigns": completed, "disabled": len(disabled)})
        return
    if disabled:
        state.advance_mark(conn, DISABLED_STATE, max(r["disabled_at"] for r in disabled).astimezone(UTC))
