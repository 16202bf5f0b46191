"""One settlement run: read what arrived since the watermark, decide, act; then prove nothing was missed.

Orchestration only: the session advisory lock (runs are serial: a second
settler waits, then finds everything decided), the run record, the
watermark, and the completeness proof. Each read goes through the three
stages: ``settler.load`` (ClickHouse events and the Postgres facts about
them), ``settler.plan`` (pure: verify and allocate into a plan with its
counts) and ``settler.post`` (one Postgres transaction per campaign, then
refunds). A dry run plans and does not post. ``completeness.prove`` then
finds the hours still holding an event no window will read (its
``ingested_at`` fell behind the watermark), and those hours are read the
same way. The Postgres ``events`` primary key is the record of what was
decided, so a run killed at any point is simply run again: committed
campaigns are skipped, the rest are paid once.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson

from oros.clientip import ip_hash_key, ip_hash_key_id
from oros.connections import pg_connect
from oros.locks import SETTLE_LOCK
from oros.money import fmt
from oros.settings import Settings

from . import completeness, live, load, post, refunds, state
from .plan import CampaignPlan, Counts, decide, plan_all
from .verify import Rules

log = logging.getLogger(__name__)

WATERMARK = "settle"
# An insert that began before the watermark may become visible after it; re-read this far back.
OVERLAP = timedelta(minutes=2)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def current_time() -> datetime:
    """The settler's clock; tests pass ``now`` instead."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class RunContext:
    """What every stage of one run shares; made once per run."""

    settings: Settings
    run_id: str
    now: datetime  # the run's clock: hold start, future-event guard, decision times
    dry_run: bool = False
    progress: bool = False

    @property
    def rules(self) -> Rules:
        return Rules.from_settings(self.settings)

    @property
    def fee_pct(self) -> Decimal:
        """The base platform fee on campaign earnings, before a creator tier lowers it (oros/fees.py)."""
        return self.settings.platform_fee_pct

    @property
    def ip_key_id(self) -> str:
        """The fingerprint of the key the clicks' address hashes are made under: a share link's hash counts only
        under it (sql/postgres/0180)."""
        return ip_hash_key_id(ip_hash_key(self.settings.ip_hash_key))

    @property
    def hold_until(self) -> datetime:
        # From the settlement, not the event: a backlog settled late still gets the full refund window.
        return self.now + timedelta(days=self.settings.hold_days)

    @property
    def now_ms(self) -> int:
        return int(self.now.timestamp() * 1000)


class Report:
    """The run report: JSON-able, money as two-place decimal strings; its numbers are ``plan.Counts``."""

    def __init__(self, run_id: str, dry_run: bool) -> None:
        self.run_id, self.dry_run = run_id, dry_run
        self.seen = 0
        self.counts = Counts()
        self.campaigns: dict[str, dict] = {}
        self.timings_s: dict[str, float] = {}
        self.completeness: dict = {}
        self._lap = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Time spent in ``phase`` since the previous lap, summed over the run's reads (reported, for tuning)."""
        now = time.perf_counter()
        self.timings_s[phase] = round(self.timings_s.get(phase, 0.0) + now - self._lap, 3)
        self._lap = now

    def add(self, plan: CampaignPlan) -> None:
        self.counts.add(plan.counts)
        if plan.campaign_id is None:
            return
        # A campaign can be posted twice in a run: by the window, then by an hour the proof re-read.
        before = self.campaigns.get(plan.campaign_id, {})
        self.campaigns[plan.campaign_id] = {
            "paid": before.get("paid", 0) + plan.counts.paid,
            "rejected": before.get("rejected", 0) + plan.counts.rejected,
            "amount_paid": fmt(Decimal(before.get("amount_paid", "0")) + plan.counts.amount),
            "fees": fmt(Decimal(before.get("fees", "0")) + plan.counts.fees),
            "completed": before.get("completed", False) or plan.completes,
        }

    def as_dict(self) -> dict:
        c = self.counts
        return {
            "run_id": self.run_id, "dry_run": self.dry_run, "events_seen": self.seen,
            "events_paid": c.paid, "events_rejected": c.rejected,
            "rejected_by_reason": dict(sorted(c.by_reason.items())),
            "amount_paid": fmt(c.amount), "fees": fmt(c.fees),
            "refunds": {"reversed": c.refunds_reversed, "rejected": c.refunds_rejected,
                        "amount": fmt(c.refunds_amount),
                        # What those refunds took back from supporters (share rewards are part of "amount").
                        "share_rewards": {"count": c.refunds_share_rewards,
                                          "amount": fmt(c.refunds_share_reward_amount)},
                        "boost_rewards": {"count": c.refunds_boost_rewards,
                                          "amount": fmt(c.refunds_boost_reward_amount)}},
            # Parts of events_paid and amount_paid: what supporters' share links earned, and the live sales.
            "share_rewards": {"events": c.share_rewarded, "rewards": c.share_rewards,
                              "amount": fmt(c.share_reward_amount)},
            "live_sales": {"paid": c.live_paid, "amount": fmt(c.live_amount)},
            "campaigns": self.campaigns, "completeness": self.completeness, "timings_s": self.timings_s,
        }


def settle_once(settings: Settings, *, dry_run: bool = False, now: datetime | None = None,
                progress: bool = False, rescan_from: datetime | None = None) -> dict:
    """Settle everything that arrived since the watermark, and every event still undecided; return the run report.

    :param dry_run: verify and allocate, write nothing but the run record.
    :param now: the clock (hold start, future-event guard); defaults to the wall clock.
    :param rescan_from: also re-read every event with ``ts`` or ``ingested_at`` since then
        (``oros settle --rescan --since``); what is already decided is skipped.
    """
    ctx = RunContext(settings, run_id=str(uuid.uuid4()), now=now or current_time(), dry_run=dry_run,
                     progress=progress)
    with pg_connect(settings, autocommit=True) as conn, _collector_paused():
        conn.execute("SELECT pg_advisory_lock(%s)", (SETTLE_LOCK,))
        try:
            # Holding the lock, any run still marked running died mid-way.
            state.fail_interrupted(conn, "settle")
            return _settle_locked(ctx, conn, rescan_from)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SETTLE_LOCK,))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """A run allocates a few tuples per event and frees them all at its end: Python's cycle collector
    would rescan the million live ones every few thousand allocations (measured: four times the cost
    of building them). Other threads of the process (``oros dev``) run without it meanwhile."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _settle_locked(ctx: RunContext, conn, rescan_from: datetime | None) -> dict:
    watermark = state.read_mark(conn, WATERMARK) or EPOCH
    state.open_run(conn, ctx.run_id, "settle", dry_run=ctx.dry_run, watermark_from=watermark)
    report = Report(ctx.run_id, ctx.dry_run)
    try:
        new_watermark = load.newest_ingested(ctx.settings)
        _settle_undecided(ctx, conn, report, watermark=watermark, new_watermark=new_watermark,
                          rescan_from=rescan_from)
        if not ctx.dry_run and new_watermark is not None:
            state.advance_mark(conn, WATERMARK, new_watermark)
    except Exception as exc:
        state.fail_run(conn, ctx.run_id, str(exc))
        raise
    result = report.as_dict()
    c = report.counts
    state.finish_run(conn, ctx.run_id, watermark_to=new_watermark, seen=report.seen, paid=c.paid,
                     rejected=c.rejected, amount=c.amount, fees=c.fees, by_reason=dict(c.by_reason), report=result)
    return result


def _settle_undecided(ctx: RunContext, conn, report: Report, *, watermark: datetime,
                      new_watermark: datetime | None, rescan_from: datetime | None) -> None:
    """The window since the watermark (or an operator's rescan), then every hour the proof finds incomplete."""
    since = max(EPOCH, watermark - OVERLAP)
    overlap: list[str] = []
    if rescan_from is None:
        overlap = load.ingested_ids(ctx.settings, since, watermark)
        report.lap("load_clickhouse")
        undecided = sorted(set(overlap) - load.decided_ids(conn, overlap))
        report.lap("skip_decided")
        read = load.Read.window(since, watermark, undecided)
    else:
        read = load.Read.rescan(since, rescan_from)
    read_ids, settled = _settle_read(ctx, conn, report, read)
    read_ids.update(overlap)
    # Where the next run's window starts: an undecided event ingested before it is this run's to find.
    horizon = (watermark if ctx.dry_run or new_watermark is None else max(watermark, new_watermark)) - OVERLAP
    proof = completeness.prove(ctx.settings, conn, read_ids=read_ids, horizon=horizon,
                               pending=settled if ctx.dry_run else Counter(),  # a dry run wrote no decisions
                               is_decided=lambda ids: load.decided_ids(conn, ids))
    report.lap("prove_complete")
    if proof.late_hours:
        log.warning("events behind the watermark found", extra={"hours": [h.isoformat() for h in proof.late_hours]})
        _, late = _settle_read(ctx, conn, report, load.Read.hours(proof.late_hours))
        report.completeness["late_events"] = late.total()
    report.completeness.update(proof.as_dict())
    if not ctx.dry_run:
        completeness.record(conn, proof.proven)


def _settle_read(ctx: RunContext, conn, report: Report, read: load.Read) -> tuple[set[str], Counter]:
    """Load what ``read`` selects, drop what is decided, decide the rest and post it (a dry run: plan it).

    Returns every id read, and per hour of event time how many this read settled.
    """
    events = load.load_events(ctx.settings, read)
    report.lap("load_clickhouse")
    read_ids = {e.event_id for e in events}
    done = load.decided_ids(conn, list(read_ids))
    report.lap("skip_decided")
    events = [e for e in events if e.event_id not in done]
    report.seen += len(events)
    facts = load.load_facts(conn, [e for e in events if e.event_type != "refund"], ctx.fee_pct, ctx.ip_key_id)
    live_events = live.load_live_events(conn, events)
    report.lap("load_postgres")
    rest, live_sales = live.split(events, live_events)
    live_decided = live.decide(live_sales, live_events, facts, ctx.rules, ctx.now_ms)
    decisions = decide(rest, live.with_orders(facts, live_decided), ctx.rules, ctx.now_ms)
    report.lap("verify")
    if ctx.dry_run:
        for plan in [*plan_all(decisions), *live.plan_all(live_decided, decisions.fees)]:
            report.add(plan)
        report.lap("post_ledger")
        report.counts.add(refunds.counts(refunds.dry_run(conn, decisions.refunds, decisions.early_refunds)))
        report.lap("refunds")
    else:
        completed: list[str] = []
        bar = _progress(len(decisions.campaigns), ctx.progress)

        def done_posting(plan: CampaignPlan) -> None:
            report.add(plan)
            if plan.completes:
                completed.append(plan.campaign_id)
            bar.update(1)

        post.post_decisions(ctx, conn, decisions, done_posting)
        bar.close()
        # Before the refunds: a refund read with its live sale finds it paid.
        for plan in post.post_live_sales(ctx, conn, live_decided, decisions.fees):
            report.add(plan)
        report.lap("post_ledger")
        report.counts.add(post.apply_refunds(ctx, conn, decisions))
        post.publish_links(ctx, conn, completed)
        report.lap("refunds")
    hours = Counter(e.ts_ms // completeness.HOUR_MS for e in events)
    return read_ids, Counter({completeness.hour_of(h * completeness.HOUR_MS): n for h, n in hours.items()})


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="campaign", disable=not enabled, file=sys.stderr)


def run_settle_command(settings: Settings, dry_run: bool, rescan_from: datetime | None = None) -> int:
    """``oros settle --once [--dry-run] [--rescan --since T]``: settle, print the report as JSON."""
    report = settle_once(settings, dry_run=dry_run, progress=sys.stderr.isatty(), rescan_from=rescan_from)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0
