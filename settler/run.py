"""One settlement run: load what arrived since the watermark, verify, pay; then prove nothing was missed.

Read (ClickHouse events since ``watermark - overlap``, Postgres campaigns),
decide (``verify``, ``budget.allocate``), act (``ledger.post_campaign``, one
Postgres transaction per campaign). Then ``completeness.prove`` finds the
hours still holding an event no window will read (its ``ingested_at`` fell
behind the watermark), and those hours are settled the same way. A session
advisory lock makes runs serial: a second settler waits, then finds
everything decided. The Postgres ``events`` primary key is the record of
what was decided, so a run killed at any point is simply run again:
committed campaigns are skipped, the rest are paid once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from redis.exceptions import RedisError

from oros import fees
from oros.connections import clickhouse_client, pg_connect, redis_client
from oros.links import CAMPAIGN_CODES_SQL, publish
from oros.locks import SETTLE_LOCK
from oros.money import fmt, split_fee
from oros.reasons import BUDGET_EXHAUSTED, NO_SUCH_ORDER, UNKNOWN_CAMPAIGN
from oros.settings import Settings

from . import completeness, ledger
from .budget import allocate
from .refunds import apply_refund
from .verify import Campaign, Candidate, Rules, verify

log = logging.getLogger(__name__)

WATERMARK = "settle"
# An insert that began before the watermark may become visible after it; re-read this far back.
OVERLAP = timedelta(minutes=2)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LOOKUP_CHUNK = 50_000
DAY_MS = 86_400_000
# Connections posting campaigns at once (each campaign is still one transaction).
POST_WORKERS = 2

# Which events a read settles ({fresh} in the queries below): the window since the watermark,
# the hours the completeness proof named, or an operator's rescan since a time.
WINDOW = "ingested_at >= {since:DateTime64(3, 'UTC')}"
HOURS = "toStartOfHour(ts) IN {hours:Array(DateTime('UTC'))}"
RESCAN = "ingested_at >= {since:DateTime64(3, 'UTC')} OR ts >= {rescan_from:DateTime64(3, 'UTC')}"

FRESH_SQL = """
SELECT toString(event_id), event_type, toUnixTimestamp64Milli(ts), toString(campaign_id),
       toString(link_id), toString(creator_id), toString(supporter_id), toString(business_id),
       toString(click_id), order_id, value, currency, ip, user_agent, is_bot, source,
       JSONExtractString(metadata, 'sig'), country, device_type, browser, os, referrer_host
  FROM events
 WHERE {fresh}
 LIMIT 1 BY event_id
"""

# Who a click came from, for deduplication and unique visitors: the IP as stored, or while it is
# truncated (OROS_ANONYMIZE_IP) the keyed hash of the full IP (sql/clickhouse/0003). An event
# stored before the hash existed, or whose hash expired, falls back to the stored IP.
VISITOR = {False: "ip", True: "if(ip_hash = '', ip, ip_hash)"}

# For each fresh human click: the previous human click from the same visitor on the same link.
PREV_CLICK_SQL = """
SELECT toString(event_id), prev FROM (
  SELECT event_id, ts,
         lagInFrame(toNullable(toUnixTimestamp64Milli(ts))) OVER (
           PARTITION BY link_id, visitor ORDER BY ts, event_id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev
    FROM (SELECT event_id, link_id, {visitor} AS visitor, ts FROM events
           WHERE event_type = 'click' AND NOT is_bot AND source != 'head'
             AND ts >= {lo:DateTime64(3, 'UTC')}
             AND campaign_id IN (SELECT campaign_id FROM events
                                  WHERE {fresh} AND event_type = 'click')
           LIMIT 1 BY event_id)
)
WHERE prev IS NOT NULL
  AND event_id IN (SELECT event_id FROM events WHERE {fresh} AND event_type = 'click')
"""

# For each fresh conversion or sale: the click it names.
CLICKS_SQL = """
SELECT toString(event_id), toString(campaign_id), toUnixTimestamp64Milli(ts), toString(link_id), toString(creator_id)
  FROM events
 WHERE event_type = 'click'
   AND event_id IN (SELECT click_id FROM events
                     WHERE {fresh} AND click_id IS NOT NULL
                       AND event_type IN ('conversion', 'sale'))
 LIMIT 1 BY event_id
"""

CAMPAIGNS_SQL = """
SELECT c.id::text AS id, c.business_id::text AS business_id, c.objective, c.payout_per_action,
       c.remaining_budget, c.status, c.start_date, c.end_date, c.pixel_billable,
       coalesce((SELECT array_agg(cc.creator_id::text) FROM campaign_creators cc
                  WHERE cc.campaign_id = c.id AND cc.status = 'accepted'), '{}') AS accepted,
       coalesce((SELECT jsonb_agg(jsonb_build_array(floor(extract(epoch FROM h.changed_at) * 1000)::bigint, h.status)
                                  ORDER BY h.changed_at, h.id)
                   FROM campaign_status_history h WHERE h.campaign_id = c.id), '[]') AS history
  FROM campaigns c WHERE c.id = ANY(%s::uuid[])
"""

# Every pixel secret of these businesses that was still valid at ``since`` (NULL expires_at: current).
PIXEL_SECRETS_SQL = """
SELECT business_id::text AS business_id, secret, floor(extract(epoch FROM expires_at) * 1000)::bigint AS until_ms
  FROM pixel_secrets
 WHERE business_id = ANY(%(businesses)s::uuid[]) AND (expires_at IS NULL OR expires_at > %(since)s)
"""

# What the named clicks were already paid for: their conversion, or their sales by order id ('' for
# none). The predicates are those of the unique indexes of 0030, which serve these lookups.
PAID_CLICKS_SQL = """
SELECT click_id::text AS click_id, '' AS order_key FROM events
 WHERE click_id = ANY(%(clicks)s::uuid[]) AND event_type = 'conversion' AND status IN ('paid', 'reversed')
   AND duplicate_of IS NULL
UNION ALL
SELECT click_id::text, coalesce(order_id, '') FROM events
 WHERE click_id = ANY(%(clicks)s::uuid[]) AND event_type = 'sale' AND status IN ('paid', 'reversed')
   AND duplicate_of IS NULL
"""


def current_time() -> datetime:
    """The settler's clock; tests pass ``now`` instead."""
    return datetime.now(UTC)


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def load_fresh(settings: Settings, params: dict, fresh: str = WINDOW) -> list[Candidate]:
    """The events ``fresh`` selects (default: arrived since ``params["since"]``), each with the
    ClickHouse-only facts its rules need."""
    client = clickhouse_client(settings)

    def query(sql: str, parameters: dict) -> list:
        sql = sql.replace("{fresh}", f"({fresh})").replace("{visitor}", VISITOR[settings.anonymize_ip])
        return client.query(sql, parameters=parameters).result_rows

    rows = query(FRESH_SQL, params)
    if not rows:
        return []
    click_ts = [r[2] for r in rows if r[1] == "click"]
    prev: dict[str, int] = {}
    if click_ts:
        # Back to the dedupe window before the first click, and to its UTC day's start (first visits).
        first = min(click_ts)
        lo = datetime.fromtimestamp(min(first - settings.click_dedupe_s * 1000, first - first % DAY_MS) / 1000, tz=UTC)
        prev = dict(query(PREV_CLICK_SQL, {**params, "lo": lo}))
    clicks = {r[0]: r[1:] for r in query(CLICKS_SQL, params)}
    return [_candidate(r, prev, clicks) for r in rows]


def first_visit(event_type: str, ts_ms: int, human: bool, prev_ms: int | None) -> bool:
    """A human click with no earlier human click from its visitor on its link that UTC day."""
    return event_type == "click" and human and (prev_ms is None or prev_ms // DAY_MS != ts_ms // DAY_MS)


def _candidate(r: tuple, prev: dict[str, int], clicks: dict[str, tuple]) -> Candidate:
    (event_id, event_type, ts_ms, campaign_id, link_id, creator_id, supporter_id, business_id,
     click_id, order_id, value, currency, ip, user_agent, is_bot, source, pixel_sig,
     country, device_type, browser, os, referrer_host) = r
    click = clicks.get(click_id) if click_id else None
    if click is not None and event_type != "click":
        # The click, not the reporter, says which link and creator earned the conversion.
        link_id, creator_id = click[2] or link_id, click[3] or creator_id
    return Candidate(
        event_id=event_id, event_type=event_type, ts_ms=ts_ms,
        campaign_id=None if campaign_id == UNKNOWN_CAMPAIGN else campaign_id,
        link_id=link_id, creator_id=creator_id, supporter_id=supporter_id, business_id=business_id,
        click_id=click_id, order_id=order_id, value=value, currency=currency, ip=ip, user_agent=user_agent,
        is_bot=bool(is_bot), source=source, pixel_sig=pixel_sig or None, prev_click_ms=prev.get(event_id),
        first_visit=first_visit(event_type, ts_ms, not is_bot and source != "head", prev.get(event_id)),
        country=country, device_type=device_type, browser=browser, os=os, referrer_host=referrer_host,
        click_ts_ms=click[1] if click else None, click_campaign_id=click[0] if click else None,
    )


def load_campaigns(conn: psycopg.Connection, ids: list[str], events: list[Candidate] = ()) -> dict[str, Campaign]:
    """The campaigns, with the pixel secrets their signed pixels among ``events`` may need."""
    rows = conn.execute(CAMPAIGNS_SQL, (ids,)).fetchall()
    secrets = _pixel_secrets(conn, rows, [e for e in events if e.pixel_sig is not None])
    campaigns = {}
    for row in rows:
        campaigns[row["id"]] = Campaign(
            id=row["id"], business_id=row["business_id"], objective=row["objective"],
            payout=row["payout_per_action"], remaining=row["remaining_budget"], status=row["status"],
            start_ms=_ms(row["start_date"]), end_ms=_ms(row["end_date"]),
            history=tuple((int(ms), status) for ms, status in row["history"]),
            accepted=frozenset(row["accepted"]), pixel_billable=row["pixel_billable"],
            pixel_secrets=tuple(secrets.get(row["business_id"], ())),
        )
    return campaigns


def _pixel_secrets(conn: psycopg.Connection, rows: list[dict], signed: list[Candidate]) -> dict[str, list]:
    """business id -> [(secret, valid until ms or None)], for the businesses whose campaigns got signed pixels."""
    wanted = {e.campaign_id for e in signed}
    businesses = sorted({r["business_id"] for r in rows if r["id"] in wanted})
    if not businesses:
        return {}
    since = datetime.fromtimestamp(min(e.ts_ms for e in signed) / 1000, tz=UTC)
    found: dict[str, list] = defaultdict(list)
    for r in conn.execute(PIXEL_SECRETS_SQL, {"businesses": businesses, "since": since}):
        found[r["business_id"]].append((r["secret"], r["until_ms"]))
    return found


def decided_ids(conn: psycopg.Connection, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), LOOKUP_CHUNK):
        chunk = ids[i:i + LOOKUP_CHUNK]
        found.update(r["id"] for r in conn.execute(
            "SELECT id::text AS id FROM events WHERE id = ANY(%s::uuid[])", (chunk,)))
    return found


def paid_orders(conn: psycopg.Connection, events: list[Candidate]) -> set[tuple[str, str]]:
    orders = sorted({e.order_id for e in events if e.order_id and e.event_type != "click"})
    if not orders:
        return set()
    rows = conn.execute(
        "SELECT campaign_id::text AS c, order_id FROM events WHERE order_id = ANY(%s)"
        " AND event_type IN ('conversion', 'sale') AND status IN ('paid', 'reversed')",
        (orders,),
    )
    return {(r["c"], r["order_id"]) for r in rows}


def paid_clicks(conn: psycopg.Connection, events: list[Candidate]) -> set[tuple[str, str]]:
    """(click id, order id or '') already paid for the clicks these conversions and sales name."""
    clicks = sorted({e.click_id for e in events if e.click_id and e.event_type in ("conversion", "sale")})
    found: set[tuple[str, str]] = set()
    for i in range(0, len(clicks), LOOKUP_CHUNK):
        rows = conn.execute(PAID_CLICKS_SQL, {"clicks": clicks[i:i + LOOKUP_CHUNK]})
        found.update((r["click_id"], r["order_key"]) for r in rows)
    return found


def refunded_orders(conn: psycopg.Connection, events: list[Candidate]) -> set[tuple[str, str]]:
    """(campaign or business id, order id) of earlier refunds that found no sale to reverse."""
    orders = sorted({e.order_id for e in events if e.order_id and e.event_type == "sale"})
    if not orders:
        return set()
    # The reason is written into the SQL, not bound, so the planner can match the partial index
    # idx_events_orphan_refund_order (0022) whatever plan it caches.
    rows = conn.execute(
        "SELECT metadata->>'campaign_id' AS c, metadata->>'business_id' AS b, order_id FROM events"
        f" WHERE order_id = ANY(%s) AND event_type = 'refund' AND rejection_reason = '{NO_SUCH_ORDER}'",
        (orders,),
    )
    return {(owner, r["order_id"]) for r in rows for owner in (r["c"], r["b"]) if owner}


def _known_users(conn: psycopg.Connection, events: list[Candidate]) -> set[str]:
    ids = sorted({e.creator_id for e in events if e.creator_id})
    return {r["id"] for r in conn.execute("SELECT id::text AS id FROM users WHERE id = ANY(%s::uuid[])", (ids,))}


def _known_links(conn: psycopg.Connection, campaign_ids: list[str]) -> set[str]:
    return {r["id"] for r in conn.execute(
        "SELECT id::text AS id FROM tracking_links WHERE campaign_id = ANY(%s::uuid[])", (campaign_ids,))}


class Report:
    """The run report: JSON-able, money as two-place decimal strings."""

    def __init__(self, run_id: str, dry_run: bool) -> None:
        self.run_id, self.dry_run = run_id, dry_run
        self.seen = self.paid = self.rejected = 0
        self.amount = self.fees = Decimal("0.00")
        self.by_reason: dict[str, int] = defaultdict(int)
        self.campaigns: dict[str, dict] = {}
        self.refunds = {"reversed": 0, "rejected": 0, "amount": Decimal("0.00")}
        self.timings_s: dict[str, float] = {}
        self.completeness: dict = {}
        self._lap = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Time spent in ``phase`` since the previous lap, summed over the run's reads (reported, for tuning)."""
        now = time.perf_counter()
        self.timings_s[phase] = round(self.timings_s.get(phase, 0.0) + now - self._lap, 3)
        self._lap = now

    def add(self, posted: ledger.Posted) -> None:
        self.paid += posted.paid
        self.rejected += posted.rejected
        self.amount += posted.amount
        self.fees += posted.fees
        for reason, n in posted.rejected_by_reason.items():
            self.by_reason[reason] += n
        if posted.campaign_id:
            # A campaign can be posted twice in a run: by the window, then by an hour the proof re-read.
            before = self.campaigns.get(posted.campaign_id, {})
            self.campaigns[posted.campaign_id] = {
                "paid": before.get("paid", 0) + posted.paid, "rejected": before.get("rejected", 0) + posted.rejected,
                "amount_paid": fmt(Decimal(before.get("amount_paid", "0")) + posted.amount),
                "fees": fmt(Decimal(before.get("fees", "0")) + posted.fees),
                "completed": before.get("completed", False) or posted.completed,
            }

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id, "dry_run": self.dry_run, "events_seen": self.seen,
            "events_paid": self.paid, "events_rejected": self.rejected,
            "rejected_by_reason": dict(sorted(self.by_reason.items())),
            "amount_paid": fmt(self.amount), "fees": fmt(self.fees),
            "refunds": {**self.refunds, "amount": fmt(self.refunds["amount"])},
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
    now = now or current_time()
    with pg_connect(settings, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SETTLE_LOCK,))
        try:
            # Holding the lock, any run still marked running died mid-way.
            conn.execute("UPDATE settlement_runs SET status = 'failed', error = 'interrupted', finished_at = now()"
                         " WHERE kind = 'settle' AND status = 'running'")
            return _settle_locked(settings, conn, dry_run=dry_run, now=now, progress=progress,
                                  rescan_from=rescan_from)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SETTLE_LOCK,))


def _settle_locked(settings, conn, *, dry_run, now, progress, rescan_from) -> dict:
    row = conn.execute("SELECT watermark FROM settler_state WHERE name = %s", (WATERMARK,)).fetchone()
    watermark = row["watermark"] if row else EPOCH
    run_id = str(uuid.uuid4())
    conn.execute("INSERT INTO settlement_runs (id, kind, dry_run, watermark_from) VALUES (%s, 'settle', %s, %s)",
                 (run_id, dry_run, watermark))
    report = Report(run_id, dry_run)
    try:
        newest = clickhouse_client(settings).query("SELECT max(ingested_at) FROM events").result_rows[0][0]
        new_watermark = newest.replace(tzinfo=UTC) if newest is not None else None
        _settle_undecided(settings, conn, report, watermark=watermark, new_watermark=new_watermark,
                          rescan_from=rescan_from, dry_run=dry_run, now=now, progress=progress)
        if not dry_run and new_watermark is not None:
            conn.execute(
                "INSERT INTO settler_state (name, watermark) VALUES (%s, %s) ON CONFLICT (name)"
                " DO UPDATE SET watermark = greatest(settler_state.watermark, EXCLUDED.watermark), updated_at = now()",
                (WATERMARK, new_watermark),
            )
    except Exception as exc:
        conn.execute("UPDATE settlement_runs SET status = 'failed', error = %s, finished_at = now() WHERE id = %s",
                     (str(exc)[:2000], run_id))
        raise
    result = report.as_dict()
    conn.execute(
        """UPDATE settlement_runs SET status = 'succeeded', watermark_to = %s, events_seen = %s, events_paid = %s,
                  events_rejected = %s, amount_paid = %s, fees = %s, rejected_by_reason = %s, report = %s,
                  finished_at = now() WHERE id = %s""",
        (new_watermark, report.seen, report.paid, report.rejected, report.amount, report.fees,
         Jsonb(dict(report.by_reason)), Jsonb(orjson.loads(orjson.dumps(result))), run_id),
    )
    return result


def _settle_undecided(settings, conn, report: Report, *, watermark: datetime, new_watermark: datetime | None,
                      rescan_from: datetime | None, dry_run: bool, now: datetime, progress: bool) -> None:
    """The window since the watermark (or an operator's rescan), then every hour the proof finds incomplete."""
    since = max(EPOCH, watermark - OVERLAP)
    if rescan_from is None:
        read = (WINDOW, {"since": since})
    else:
        read = (RESCAN, {"since": min(since, rescan_from), "rescan_from": rescan_from})
    read_ids, settled = _settle_read(settings, conn, *read, report, dry_run=dry_run, now=now, progress=progress)
    # Where the next run's window starts: an undecided event ingested before it is this run's to find.
    horizon = (watermark if dry_run or new_watermark is None else max(watermark, new_watermark)) - OVERLAP
    proof = completeness.prove(settings, conn, read_ids=read_ids, horizon=horizon,
                               pending=settled if dry_run else Counter(),  # a dry run wrote no decisions
                               is_decided=lambda ids: decided_ids(conn, ids))
    report.lap("prove_complete")
    if proof.late_hours:
        log.warning("events behind the watermark found", extra={"hours": [h.isoformat() for h in proof.late_hours]})
        _, late = _settle_read(settings, conn, HOURS, {"hours": proof.late_hours}, report, dry_run=dry_run, now=now,
                               progress=progress)
        report.completeness["late_events"] = late.total()
    report.completeness.update(proof.as_dict())
    if not dry_run:
        completeness.record(conn, proof.proven)


def _settle_read(settings, conn, fresh_sql: str, params: dict, report: Report, *, dry_run, now,
                 progress) -> tuple[set[str], Counter]:
    """Load what ``fresh_sql`` selects, drop what is decided, settle the rest.

    Returns every id read, and per hour of event time how many this read settled.
    """
    fresh = load_fresh(settings, params, fresh_sql)
    report.lap("load_clickhouse")
    read_ids = {e.event_id for e in fresh}
    done = decided_ids(conn, list(read_ids))
    report.lap("skip_decided")
    fresh = [e for e in fresh if e.event_id not in done]
    report.seen += len(fresh)
    _settle_events(settings, conn, fresh, report, dry_run=dry_run, now=now, progress=progress)
    hours = Counter(e.ts_ms // completeness.HOUR_MS for e in fresh)
    return read_ids, Counter({completeness.hour_of(h * completeness.HOUR_MS): n for h, n in hours.items()})


def _settle_events(settings, conn, fresh, report, *, dry_run, now, progress) -> None:
    refunds = [e for e in fresh if e.event_type == "refund"]
    billable = [e for e in fresh if e.event_type != "refund"]
    campaigns = load_campaigns(conn, sorted({e.campaign_id for e in billable if e.campaign_id}), billable)
    users = _known_users(conn, billable)
    links = _known_links(conn, list(campaigns))
    # A link id Postgres does not know (deleted since) is kept in ClickHouse, not as a foreign key.
    billable = [e if e.link_id is None or e.link_id in links else replace(e, link_id=None) for e in billable]
    # An event whose campaign (or creator) Postgres does not know can only be rejected, without its FKs.
    report.lap("load_postgres")
    verdict = verify(billable, campaigns, Rules.from_settings(settings), _ms(now), paid_orders(conn, billable),
                     refunded_orders(conn, billable), paid_clicks(conn, billable))
    report.lap("verify")
    accepted: dict[str, list[Candidate]] = defaultdict(list)
    rejected: dict[str | None, list] = defaultdict(list)
    for event in verdict.accepted:
        accepted[event.campaign_id].append(event)
    for event, reason in verdict.rejected:
        known = event.campaign_id in campaigns and (event.creator_id is None or event.creator_id in users)
        rejected[event.campaign_id if known else None].append((event, reason))

    platform = ledger.platform_wallets(conn)
    # Read after the events: a tier that starts from here on starts after every event this read holds.
    fee_pct_of = fees.load(conn, settings.platform_fee_pct,
                           sorted({e.creator_id for e in verdict.accepted if e.creator_id})).pct
    hold_until = now + timedelta(days=settings.hold_days)
    completed: list[str] = []
    ids = sorted(set(accepted) | {c for c in rejected if c is not None})
    bar = _progress(len(ids), progress)

    def post(campaign_id: str) -> ledger.Posted:
        with pool.connection() as worker:
            return _settle_campaign(settings, worker, campaigns[campaign_id], accepted.get(campaign_id, []),
                                    rejected.get(campaign_id, []), run_id=report.run_id, now=now,
                                    hold_until=hold_until, platform=platform, dry_run=dry_run,
                                    fee_pct_of=fee_pct_of)

    # Campaigns touch disjoint rows except the platform wallets, which the ledger trigger locks in id
    # order near each transaction's end: two connections overlap one's event COPY with the other's.
    with _worker_pool(settings) as pool, ThreadPoolExecutor(POST_WORKERS) as threads:
        for posted in threads.map(post, ids):
            report.add(posted)
            if posted.completed and campaigns[posted.campaign_id].status == "active":
                completed.append(posted.campaign_id)
            bar.update(1)
    bar.close()
    _settle_orphans(conn, rejected.get(None, []), report, run_id=report.run_id, now=now, dry_run=dry_run)
    report.lap("post_ledger")
    if not dry_run:
        _apply_refunds(conn, refunds, report, now=now)
        _invalidate_links(settings, conn, completed)
        report.lap("refunds")


def _worker_pool(settings: Settings) -> ConnectionPool:
    return ConnectionPool(settings.database_url, min_size=POST_WORKERS, max_size=POST_WORKERS,
                          kwargs={"row_factory": dict_row, "autocommit": True}, name="settler")


def _settle_campaign(settings, conn, campaign: Campaign, accepted, rejected, *, run_id, now, hold_until,
                     platform, dry_run, fee_pct_of: ledger.FeeOf) -> ledger.Posted:
    if dry_run:
        allocation = allocate(accepted, campaign.remaining, campaign.payout)
        fee = sum((split_fee(campaign.payout, fee_pct_of(e.creator_id, e.ts_ms))[1] for e in allocation.paid),
                  Decimal("0.00"))
        posted = ledger.Posted(campaign_id=campaign.id, paid=len(allocation.paid), amount=allocation.spent,
                               fees=fee,
                               rejected=len(rejected) + len(allocation.exhausted),
                               completed=allocation.exhausts(campaign.payout) and campaign.status == "active")
        for _, reason in rejected:
            posted.rejected_by_reason[reason] = posted.rejected_by_reason.get(reason, 0) + 1
        if allocation.exhausted:
            posted.rejected_by_reason[BUDGET_EXHAUSTED] = len(allocation.exhausted)
        return posted
    with conn.transaction():
        locked = ledger.lock_campaign(conn, campaign.id)
        allocation = allocate(accepted, locked["remaining_budget"], locked["payout_per_action"])
        return ledger.post_campaign(
            conn, campaign_id=campaign.id, objective=campaign.objective, allocation=allocation, rejected=rejected,
            fee_pct_of=fee_pct_of, payout=locked["payout_per_action"], run_id=run_id, now=now,
            hold_until=hold_until, platform=platform,
        )


def _settle_orphans(conn, rejected, report, *, run_id, now, dry_run) -> None:
    """Events no known campaign owns: recorded as rejected, with no campaign link."""
    if not rejected:
        return
    posted = ledger.Posted(campaign_id="", rejected=len(rejected))
    for _, reason in rejected:
        posted.rejected_by_reason[reason] = posted.rejected_by_reason.get(reason, 0) + 1
    if not dry_run:
        with conn.transaction():
            ledger.copy_events(conn, [ledger.event_row(e, campaign_id=None, status="rejected", reason=r,
                                                       run_id=run_id, now=now) for e, r in rejected])
    report.add(posted)


def _apply_refunds(conn, refunds: list[Candidate], report: Report, *, now) -> None:
    # After this run's sales are paid, so a sale and its refund in one batch net out.
    for refund in sorted(refunds, key=lambda e: (e.ts_ms, e.event_id)):
        with conn.transaction():
            outcome = apply_refund(conn, refund, run_id=report.run_id, now=now)
        if outcome.reason is None:
            report.refunds["reversed"] += 1
            report.refunds["amount"] += Decimal(outcome.amount)
        else:
            report.refunds["rejected"] += 1
            report.by_reason[outcome.reason] += 1


def _invalidate_links(settings: Settings, conn, campaign_ids: list[str]) -> None:
    """Completed campaigns: trackers must stop seeing them as active (their links' cache entries go)."""
    codes = [r["code"] for c in campaign_ids for r in conn.execute(CAMPAIGN_CODES_SQL, {"campaign_id": c})]
    if not codes:
        return

    async def _publish() -> None:
        redis = redis_client(settings)
        try:
            await publish(redis, settings.keys, codes)
        finally:
            await redis.aclose()

    try:
        asyncio.run(_publish())
    except (OSError, RedisError):
        # The budget is already closed in Postgres; the link cache expires on its own TTL.
        log.warning("could not publish link invalidation", extra={"campaigns": campaign_ids})


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="campaign", disable=not enabled, file=sys.stderr)


def run_settle_command(settings: Settings, dry_run: bool, rescan_from: datetime | None = None) -> int:
    """``oros settle --once [--dry-run] [--rescan --since T]``: settle, print the report as JSON."""
    report = settle_once(settings, dry_run=dry_run, progress=sys.stderr.isatty(), rescan_from=rescan_from)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0
