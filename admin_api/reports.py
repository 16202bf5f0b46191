"""Reports: a campaign's stats (``GET /v1/campaigns/{id}/stats``) and a creator's earnings (``GET /v1/me/earnings``).

Stats join two sources per time bucket: ClickHouse's raw events say what
happened (every click, bot hits, conversions, sales and their value), and
Postgres ``events`` say what the settler decided (billable, duplicate, every
rejection reason, what was spent). Events the settler has not reached yet
appear in the first and not the second. Buckets are UTC hours or days,
dense from ``from`` to ``to`` so a chart needs no gap filling.

Both stores keep hourly sums of the same numbers (``event_hours``: sql/clickhouse/0004,
sql/postgres/0140), per scope and per dimension. A report grouped by at most one dimension and
filtered by at most that one reads the sums for the whole hours of its range and the raw rows
only for the partial hours at either end; any other report reads the raw rows, as before.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from oros.connections import as_user, clickhouse_client
from oros.events import canonical_uuid
from oros.httperrors import ApiError, invalid, not_found
from oros.money import fmt
from oros.reasons import DUPLICATE_CLICK
from oros.settings import Settings
from oros.wire import Money, OneOf, Timestamp, Uuid, refuse, rule

from .auth import caller
from .payload import parse_query, path_id, respond
from .routing import Routes
from .typedefs import READ_POOL, SETTINGS

routes = Routes()

STEPS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
# A bound on buckets per answer: 31 days of hours, or a leap year of days.
MAX_SPAN = {"hour": timedelta(days=31), "day": timedelta(days=366)}
DEFAULT_SPAN = {"hour": timedelta(hours=24), "day": timedelta(days=7)}
EARNINGS_DEFAULT_SPAN = timedelta(days=30)

# What stats group by and filter on (``group_by=``, and a query parameter of the same name):
# the ClickHouse expression, the Postgres column, and whether the value is an id.
DIMENSIONS = {
    "country": ("country", "country", False),
    "device": ("device_type", "device_type", False),
    "browser": ("browser", "browser", False),
    "os": ("os", "os", False),
    "referrer": ("referrer_host", "referrer_host", False),
    "link": ("ifNull(toString(link_id), '')", "coalesce(tracking_link_id::text, '')", True),
    "creator": ("ifNull(toString(creator_id), '')", "coalesce(creator_id::text, '')", True),
    "campaign": ("toString(campaign_id)", "campaign_id::text", True),
}
CAMPAIGN_DIMENSIONS = ("country", "device", "browser", "os", "referrer", "link", "creator")
CREATOR_DIMENSIONS = ("country", "device", "browser", "os", "referrer", "link", "campaign")
MAX_FILTER_CHARS = 255
MAX_GROUPS = 200  # the most groups an answer lists, by clicks; ``groups_truncated`` says when there were more

# FINAL collapses replays not merged yet, so a redelivered event never counts twice. With a
# group_by, GROUPING SETS answer the time buckets and the groups in one scan. The time spans are a
# PREWHERE, which runs before FINAL merges (ts is not in the sort key: a WHERE would merge the
# campaign's every event first, ten times slower for an hour at each end); that is exact because
# a replay keeps its event's ts, so its copies are all kept or all left out.
_CH_STATS_SQL = """
SELECT toStartOfInterval(ts, INTERVAL 1 {unit}, 'UTC') AS bucket, {dimension} AS dim,
       countIf(event_type = 'click') AS clicks,
       countIf(event_type = 'click' AND is_bot) AS bot_clicks,
       countIf(event_type = 'conversion') AS conversions,
       countIf(event_type = 'sale') AS sales,
       ifNull(sumIf(value, event_type = 'sale'), 0) AS sales_value
  FROM events FINAL
 PREWHERE {spans}
 WHERE {scope}{filters}
 GROUP BY {grouping}
"""

# The same numbers from the hourly sums (sql/clickhouse/0004), for whole hours. Not "AS dim": a
# ClickHouse alias would stand for the column of that name in WHERE.
_CH_HOURS_SQL = """
SELECT toStartOfInterval(hour, INTERVAL 1 {unit}, 'UTC') AS bucket, {dimension} AS grp,
       sum(clicks), sum(bot_clicks), sum(conversions), sum(sales), sum(sales_value)
  FROM event_hours
 WHERE scope = {{scope:String}} AND scope_id = {{scope_id:UUID}} AND dim = {{dim:String}}{key}
   AND hour >= fromUnixTimestamp64Milli({{from_ms:Int64}}, 'UTC')
   AND hour < fromUnixTimestamp64Milli({{to_ms:Int64}}, 'UTC')
 GROUP BY {grouping}
"""

# Run as the caller: RLS shows a business its own campaigns' decisions, a creator its own events
# (and admins all). first_visit marks a unique visitor (settler.run.first_visit).
_PG_STATS_SQL = """
SELECT bucket, dim, event_type, status, reason, GROUPING(bucket) = 1 AS is_group,
       count(*) AS n, count(*) FILTER (WHERE first_visit) AS visitors,
       coalesce(sum(payout_amount - reversed_payout) FILTER (WHERE status = 'paid'), 0) AS spend
  FROM (SELECT date_trunc(%(unit)s, occurred_at, 'UTC') AS bucket, {dimension} AS dim, event_type, status,
               rejection_reason AS reason, first_visit, payout_amount, reversed_payout
          FROM events
         WHERE {scope} AND ({spans})
           AND event_type <> 'refund'{filters}) AS decided
 GROUP BY {grouping}
"""

# The same from the hourly sums of the decisions (sql/postgres/0140), for whole hours, as the caller.
_PG_HOURS_SQL = """
SELECT bucket, dim, event_type, status, nullif(reason, '') AS reason, GROUPING(bucket) = 1 AS is_group,
       sum(n)::bigint AS n, sum(visitors)::bigint AS visitors,
       coalesce(sum(spend) FILTER (WHERE status = 'paid'), 0) AS spend
  FROM (SELECT date_trunc(%(unit)s, hour, 'UTC') AS bucket, {dimension} AS dim, event_type, status, reason,
               n, visitors, spend
          FROM event_hours
         WHERE scope = %(scope)s AND scope_id = %(scope_id)s AND dim = %(dim)s{key}
           AND hour >= %(from)s AND hour < %(to)s) AS decided
 GROUP BY {grouping}
"""

_CAMPAIGN_SQL = "SELECT business_id::text AS business_id FROM campaigns WHERE id = %(id)s"

# A creator's own decided events (RLS: events_creator), net of the platform fee and a supporter's share.
_EARNINGS_SQL = """
SELECT e.campaign_id::text AS campaign_id, c.title AS campaign_title,
       date_trunc('day', e.occurred_at, 'UTC') AS day,
       count(*) FILTER (WHERE e.status = 'paid') AS events,
       coalesce(sum(e.payout_amount - e.platform_fee - coalesce(e.share_reward, 0)
                    - (e.reversed_payout - e.reversed_fee - e.reversed_reward))
                FILTER (WHERE e.status = 'paid'), 0) AS earned,
       coalesce(sum(e.reversed_payout - e.reversed_fee - e.reversed_reward), 0) AS reversed
  FROM events e LEFT JOIN campaigns c ON c.id = e.campaign_id
 WHERE e.creator_id = %(creator)s AND e.status IN ('paid', 'reversed') AND e.event_type <> 'refund'
   AND e.occurred_at >= %(from)s AND e.occurred_at < %(to)s
 GROUP BY 1, 2, 3
 ORDER BY 3, 1
"""

# A replay keeps its event's ts, so duplicates share a (monthly) partition and
# FINAL need not merge across partitions: about a quarter faster.
_FINAL_SETTINGS = {"do_not_merge_across_partitions_select_final": 1}

# Stats queries in flight, per caller and per process: a ClickHouse scan is the API's most
# expensive call, and each one waiting occupies a thread.
STATS_PER_CALLER = 2
STATS_PER_PROCESS = 8
STATS_RETRY_AFTER_S = 1
# Their own threads: stats waiting on ClickHouse never take the default executor's, which
# login (password hashing) and, in ``oros dev``, the settler's jobs run on.
_STATS_THREADS = ThreadPoolExecutor(STATS_PER_PROCESS, thread_name_prefix="oros-stats")


class StatsGate:
    """Admits a stats call while its caller and the process have room, else 429 / 503 with Retry-After.

    A concurrency gate (calls in flight in this process), not a rate limit over time (oros/ratelimit.py).
    """

    def __init__(self, per_caller: int = STATS_PER_CALLER, per_process: int = STATS_PER_PROCESS) -> None:
        self.per_caller, self.per_process = per_caller, per_process
        self.in_flight: Counter[str] = Counter()

    @contextmanager
    def admit(self, caller_id: str):
        if self.in_flight[caller_id] >= self.per_caller:
            raise ApiError(429, "too_many_requests", f"at most {self.per_caller} stats requests at a time",
                           retry_after_s=STATS_RETRY_AFTER_S)
        if self.in_flight.total() >= self.per_process:
            raise ApiError(503, "unavailable", "too many stats requests; retry shortly",
                           retry_after_s=STATS_RETRY_AFTER_S)
        self.in_flight[caller_id] += 1
        try:
            yield
        finally:
            self.in_flight[caller_id] -= 1
            if not self.in_flight[caller_id]:
                del self.in_flight[caller_id]


# One event loop per process serves every request, so a plain counter needs no lock.
stats_gate = StatsGate()

QueryTime = Timestamp(range(2000, 3000))


def _id_filter(raw: object) -> str:
    return canonical_uuid(raw) or refuse("must be an id")


def _text_filter(raw: object) -> str:
    if not isinstance(raw, str) or len(raw) > MAX_FILTER_CHARS:
        refuse(f"may be at most {MAX_FILTER_CHARS} characters")
    return raw


IdFilter = rule(str, _id_filter, {"type": "string", "format": "uuid"})
TextFilter = rule(str, _text_filter, {"type": "string", "maxLength": MAX_FILTER_CHARS})


def _only(name: str):
    return Field(None, description=f"only events whose {name} is this")


class RangeQuery(BaseModel):
    """A time range: ``to`` defaults to now, ``from`` to a span before it."""

    to: QueryTime = None
    from_: QueryTime = Field(None, alias="from")

    def span(self, default: timedelta, most: timedelta) -> tuple[datetime, datetime]:
        end = self.to or datetime.now(UTC)
        start = self.from_ or end - default
        if start >= end:
            raise invalid("from", "from must be before to")
        if end - start > most:
            raise invalid("from", f"the range may span at most {most.days} days")
        return start, end


class StatsParams(RangeQuery):
    """A stats report's query: granularity, range, grouping, and a filter per dimension."""

    granularity: OneOf(*STEPS) = "day"
    group_by: OneOf(*DIMENSIONS) = None
    country: TextFilter = _only("country")
    device: TextFilter = _only("device")
    browser: TextFilter = _only("browser")
    os: TextFilter = _only("os")
    referrer: TextFilter = _only("referrer")
    link: IdFilter = _only("link")


class CampaignStatsParams(StatsParams):
    group_by: OneOf(*CAMPAIGN_DIMENSIONS) = None
    creator: IdFilter = _only("creator")


class CreatorStatsParams(StatsParams):
    group_by: OneOf(*CREATOR_DIMENSIONS) = None
    campaign: IdFilter = _only("campaign")

Count = Annotated[int, Field(ge=0)]


class Clicks(BaseModel):
    all: Count
    billable: Count
    bot: Count
    duplicate: Count
    unique: Count


class Conversions(BaseModel):
    all: Count
    billable: Count


class Sales(BaseModel):
    all: Count
    billable: Count
    refunded: Count
    value: Money


class Stats(BaseModel):
    clicks: Clicks
    conversions: Conversions
    sales: Sales
    spend: Money
    rejections: dict[str, Count]


class Bucket(Stats):
    start: datetime


class Group(Stats):
    key: str


class Report(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime
    granularity: Literal["hour", "day"]
    filters: dict[str, str]
    totals: Stats
    buckets: list[Bucket]
    groups_truncated: bool = None
    groups: list[Group] = Field(None, max_length=MAX_GROUPS)


class CampaignStats(Report):
    """Totals, dense buckets and (with group_by) the groups by clicks"""

    campaign_id: Uuid
    group_by: OneOf(*CAMPAIGN_DIMENSIONS) = None


class CreatorStats(Report):
    """Totals, dense buckets and (with group_by) the groups by clicks"""

    creator_id: Uuid
    group_by: OneOf(*CREATOR_DIMENSIONS) = None


class CampaignEarned(BaseModel):
    campaign_id: Uuid
    earned: Money


class EarnedDay(BaseModel):
    campaign_id: Uuid
    campaign_title: str | None
    day: date
    events: Count
    earned: Money
    reversed: Money


class Earnings(BaseModel):
    """Earnings"""

    from_: datetime = Field(alias="from")
    to: datetime
    total_earned: Money
    total_reversed: Money
    by_campaign: list[CampaignEarned]
    items: list[EarnedDay]


@dataclass(frozen=True)
class StatsQuery:
    """One stats request, validated: whose events (scope), when, how bucketed, grouped and filtered."""

    scope: str  # "campaign" or "creator": the dimension the caller's events are selected by
    scope_id: str
    start: datetime
    end: datetime
    granularity: str
    group_by: str | None
    filters: dict[str, str]

    @classmethod
    def of(cls, params: StatsParams, scope: str, scope_id: str, dimensions: tuple[str, ...]) -> StatsQuery:
        start, end = params.span(DEFAULT_SPAN[params.granularity], MAX_SPAN[params.granularity])
        filters = {name: getattr(params, name) for name in dimensions if getattr(params, name) is not None}
        return cls(scope, scope_id, start, end, params.granularity, params.group_by, filters)

    def rollup_dim(self) -> str | None:
        """The dimension whose hourly sums answer this query ('' for none), or None: raw rows only."""
        names = set(self.filters) | ({self.group_by} if self.group_by else set())
        if len(names) > 1:
            return None
        return names.pop() if names else ""

    def split(self) -> tuple[tuple[datetime, datetime] | None, list[tuple[datetime, datetime]]]:
        """The whole hours the sums answer (or None) and the spans left to the raw rows."""
        first = _floor(self.start, "hour")
        first += STEPS["hour"] if first < self.start else timedelta(0)
        last = _floor(self.end, "hour")
        if self.rollup_dim() is None or first >= last:
            return None, [(self.start, self.end)]
        return (first, last), [(a, b) for a, b in ((self.start, first), (last, self.end)) if a < b]

    def _grouping(self, keys: str = "", dim: str = "dim") -> str:
        if self.group_by:
            return f"GROUPING SETS ((bucket{keys}), ({dim}{keys}))"
        return f"bucket, {dim}{keys}"

    def clickhouse(self, spans: list[tuple[datetime, datetime]]) -> tuple[str, dict]:
        dimension = DIMENSIONS[self.group_by][0] if self.group_by else "''"
        filters = "".join(f"\n   AND {DIMENSIONS[name][0]} = {{f_{name}:String}}" for name in self.filters)
        sql = _CH_STATS_SQL.format(
            unit=self.granularity.upper(), dimension=dimension, filters=filters,
            scope=f"{self.scope}_id = {{scope_id:UUID}}", grouping=self._grouping(),
            spans=" OR ".join(f"ts >= fromUnixTimestamp64Milli({{from{i}_ms:Int64}}, 'UTC')"
                              f" AND ts < fromUnixTimestamp64Milli({{to{i}_ms:Int64}}, 'UTC')"
                              for i in range(len(spans))))
        params = {"scope_id": self.scope_id, **{f"f_{name}": value for name, value in self.filters.items()}}
        for i, (start, end) in enumerate(spans):
            params.update({f"from{i}_ms": _ms(start), f"to{i}_ms": _ms(end)})
        return sql, params

    def clickhouse_hours(self, hours: tuple[datetime, datetime]) -> tuple[str, dict]:
        dim = self.rollup_dim()
        sql = _CH_HOURS_SQL.format(unit=self.granularity.upper(), dimension="key" if self.group_by else "''",
                                   key=" AND key = {key:String}" if self.filters else "",
                                   grouping=self._grouping(dim="grp"))
        params = {"scope": self.scope, "scope_id": self.scope_id, "dim": dim,
                  "from_ms": _ms(hours[0]), "to_ms": _ms(hours[1]), **self._key()}
        return sql, params

    def postgres(self, spans: list[tuple[datetime, datetime]]) -> tuple[str, dict]:
        dimension = DIMENSIONS[self.group_by][1] if self.group_by else "''"
        filters = "".join(f"\n           AND {DIMENSIONS[name][1]} = %(f_{name})s" for name in self.filters)
        sql = _PG_STATS_SQL.format(
            dimension=dimension, filters=filters, scope=f"{self.scope}_id = %(scope_id)s",
            grouping=self._grouping(", event_type, status, reason"),
            spans=" OR ".join(f"occurred_at >= %(from{i})s AND occurred_at < %(to{i})s" for i in range(len(spans))))
        params = {"unit": self.granularity, "scope_id": self.scope_id,
                  **{f"f_{name}": value for name, value in self.filters.items()}}
        for i, (start, end) in enumerate(spans):
            params.update({f"from{i}": start, f"to{i}": end})
        return sql, params

    def postgres_hours(self, hours: tuple[datetime, datetime]) -> tuple[str, dict]:
        sql = _PG_HOURS_SQL.format(dimension="key" if self.group_by else "''",
                                   key=" AND key = %(key)s" if self.filters else "",
                                   grouping=self._grouping(", event_type, status, reason"))
        params = {"unit": self.granularity, "scope": self.scope, "scope_id": self.scope_id,
                  "dim": self.rollup_dim(), "from": hours[0], "to": hours[1], **self._key()}
        return sql, params

    def _key(self) -> dict:
        return {"key": value for value in self.filters.values()}


@routes.get("/v1/campaigns/{id}/stats", "A campaign's clicks (with unique visitors), conversions, sales, spend and "
            "rejections per UTC hour or day, optionally grouped by one dimension and filtered by any (owner or admin; "
            "default the last 24 hours by hour, 7 days by day)", query=CampaignStatsParams,
            responses={200: CampaignStats})
async def campaign_stats(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business")
    campaign_id = path_id(request)
    params = parse_query(CampaignStatsParams, request)
    stats = StatsQuery.of(params, "campaign", campaign_id, CAMPAIGN_DIMENSIONS)
    with stats_gate.admit(who.id):
        async with as_user(request.app[READ_POOL], who.id) as conn:
            await owned_campaign(conn, who, campaign_id)
            decided = await _decisions(conn, stats)
        report = await _report(request, stats, decided)
    return respond({"campaign_id": campaign_id, **report})


@routes.get("/v1/me/stats", "The same report over the calling creator's own links, across its campaigns",
            query=CreatorStatsParams, responses={200: CreatorStats})
async def my_stats(request: web.Request) -> web.Response:
    who = (await caller(request)).require("creator")
    stats = StatsQuery.of(parse_query(CreatorStatsParams, request), "creator", who.id, CREATOR_DIMENSIONS)
    with stats_gate.admit(who.id):
        async with as_user(request.app[READ_POOL], who.id) as conn:
            decided = await _decisions(conn, stats)
        report = await _report(request, stats, decided)
    return respond({"creator_id": who.id, **report})


async def owned_campaign(conn, who, campaign_id: str) -> None:
    """The campaign exists and the caller owns it (or is an admin), else 404."""
    campaign = await (await conn.execute(_CAMPAIGN_SQL, {"id": campaign_id})).fetchone()
    # Active campaigns are public, their numbers are not: only the owner (or an admin) sees them.
    if campaign is None or (campaign["business_id"] != who.id and not who.is_admin):
        raise not_found("campaign")


async def _report(request: web.Request, stats: StatsQuery, decided: list[dict]) -> dict:
    # The Postgres connection is back in the pool before ClickHouse is asked: a slow or busy
    # ClickHouse (chDB answers one query at a time) must not starve every other endpoint.
    raw = await asyncio.get_running_loop().run_in_executor(
        _STATS_THREADS, functools.partial(_raw_counts, request.app[SETTINGS], stats))
    # A group's row has the epoch for its bucket (GROUPING SETS fill the missing key with its default).
    buckets = _buckets(stats, [r for r in raw if r[0].year > 1970], [r for r in decided if not r["is_group"]])
    report = {
        "from": stats.start.isoformat(),
        "to": stats.end.isoformat(),
        "granularity": stats.granularity,
        "filters": stats.filters,
        "totals": _render(_sum(buckets.values())),
        "buckets": [{"start": b.isoformat(), **_render(s)} for b, s in buckets.items()],
    }
    if stats.group_by:
        groups = _groups([r for r in raw if r[0].year == 1970], [r for r in decided if r["is_group"]])
        ranked = sorted(groups.items(), key=lambda kv: (-kv[1]["clicks"], kv[0]))
        report.update(group_by=stats.group_by, groups_truncated=len(ranked) > MAX_GROUPS,
                      groups=[{"key": key, **_render(s)} for key, s in ranked[:MAX_GROUPS]])
    return report


@routes.get("/v1/me/earnings", "The calling creator's earnings (net of the platform fee) by campaign and UTC day "
            "(default the last 30 days)", query=RangeQuery, responses={200: Earnings})
async def my_earnings(request: web.Request) -> web.Response:
    who = (await caller(request)).require("creator")
    start, end = parse_query(RangeQuery, request).span(EARNINGS_DEFAULT_SPAN, MAX_SPAN["day"])
    async with as_user(request.app[READ_POOL], who.id) as conn:
        rows = await (
            await conn.execute(_EARNINGS_SQL, {"creator": who.id, "from": start, "to": end})
        ).fetchall()
    items = [
        {
            "campaign_id": r["campaign_id"],
            "campaign_title": r["campaign_title"],
            "day": r["day"].date().isoformat(),
            "events": r["events"],
            "earned": fmt(r["earned"]),
            "reversed": fmt(r["reversed"]),
        }
        for r in rows
    ]
    by_campaign: dict[str, Decimal] = defaultdict(Decimal)
    for r in rows:
        by_campaign[r["campaign_id"]] += r["earned"]
    return respond({
        "from": start.isoformat(),
        "to": end.isoformat(),
        "total_earned": fmt(sum((r["earned"] for r in rows), Decimal("0"))),
        "total_reversed": fmt(sum((r["reversed"] for r in rows), Decimal("0"))),
        "by_campaign": [{"campaign_id": c, "earned": fmt(v)} for c, v in sorted(by_campaign.items())],
        "items": items,
    })


def link_query(campaign_id: str, link_id: str, start: datetime, end: datetime) -> StatsQuery:
    """One link's report over ``start``..``end`` by day (a live event's viewers and reported sales)."""
    return StatsQuery("campaign", campaign_id, start, end, "day", None, {"link": link_id})


async def decisions(conn, stats: StatsQuery) -> list[dict]:
    """The settler's decisions of ``stats``, read as the caller (RLS), before ClickHouse is asked."""
    return await _decisions(conn, stats)


async def totals(request: web.Request, stats: StatsQuery, decided: list[dict]) -> dict:
    """``stats``'s totals, rendered as a report's (ClickHouse asked off the event loop, Postgres released)."""
    return (await _report(request, stats, decided))["totals"]


async def _decisions(conn, stats: StatsQuery) -> list[dict]:
    hours, spans = stats.split()
    queries = ([stats.postgres_hours(hours)] if hours else []) + ([stats.postgres(spans)] if spans else [])
    return [row for sql, params in queries for row in await (await conn.execute(sql, params)).fetchall()]


def _raw_counts(settings: Settings, stats: StatsQuery) -> list:
    hours, spans = stats.split()
    client = clickhouse_client(settings)
    rows = client.query(*stats.clickhouse_hours(hours)).result_rows if hours else []
    if spans:
        sql, params = stats.clickhouse(spans)
        rows += client.query(sql, parameters=params, settings=_FINAL_SETTINGS).result_rows
    return rows


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _empty() -> dict:
    return {"clicks": 0, "billable_clicks": 0, "bot_clicks": 0, "duplicate_clicks": 0, "unique_clicks": 0,
            "conversions": 0,
            "billable_conversions": 0, "sales": 0, "billable_sales": 0, "refunded_sales": 0,
            "sales_value": Decimal("0"), "spend": Decimal("0"), "rejections": defaultdict(int)}


def _floor(value: datetime, granularity: str) -> datetime:
    value = value.astimezone(UTC)
    value = value.replace(minute=0, second=0, microsecond=0)
    return value.replace(hour=0) if granularity == "day" else value


def _buckets(query: StatsQuery, raw: list, decided: list) -> dict[datetime, dict]:
    buckets: dict[datetime, dict] = {}
    at = _floor(query.start, query.granularity)
    while at < query.end:
        buckets[at] = _empty()
        at += STEPS[query.granularity]
    for bucket, _, *counts in raw:
        _add_raw(buckets[_floor(bucket.replace(tzinfo=UTC), query.granularity)], counts)
    for row in decided:
        _add_decision(buckets[_floor(row["bucket"], query.granularity)], row)
    return buckets


def _groups(raw: list, decided: list) -> dict[str, dict]:
    groups: dict[str, dict] = defaultdict(_empty)
    for _, key, *counts in raw:
        _add_raw(groups[key], counts)
    for row in decided:
        _add_decision(groups[row["dim"]], row)
    return groups


def _add_raw(stats: dict, counts: list) -> None:
    # A bucket or group may come from the sums and the raw rows both (the hours at either end).
    for name, n in zip(("clicks", "bot_clicks", "conversions", "sales", "sales_value"), counts):
        stats[name] += n


def _add_decision(stats: dict, row: dict) -> None:
    kind, status, n = row["event_type"], row["status"], row["n"]
    stats["spend"] += row["spend"]
    stats["unique_clicks"] += row["visitors"]
    if status == "rejected":
        stats["rejections"][row["reason"]] += n
        if row["reason"] == DUPLICATE_CLICK:
            stats["duplicate_clicks"] += n
        return
    # Paid, or paid and later reversed by a refund: either way the settler found it billable.
    key = {"click": "billable_clicks", "conversion": "billable_conversions", "sale": "billable_sales"}[kind]
    stats[key] += n
    if status == "reversed":
        stats["refunded_sales"] += n


def _sum(all_stats) -> dict:
    total = _empty()
    for stats in all_stats:
        for key, value in stats.items():
            if key == "rejections":
                for reason, n in value.items():
                    total["rejections"][reason] += n
            else:
                total[key] += value
    return total


def _render(stats: dict) -> dict:
    return {
        "clicks": {"all": stats["clicks"], "billable": stats["billable_clicks"], "bot": stats["bot_clicks"],
                   "duplicate": stats["duplicate_clicks"], "unique": stats["unique_clicks"]},
        "conversions": {"all": stats["conversions"], "billable": stats["billable_conversions"]},
        "sales": {"all": stats["sales"], "billable": stats["billable_sales"], "refunded": stats["refunded_sales"],
                  "value": fmt(stats["sales_value"])},
        "spend": fmt(stats["spend"]),
        "rejections": dict(sorted(stats["rejections"].items())),
    }
