"""Read: the events a settlement run decides (ClickHouse), and the Postgres facts its rules need.

Nothing here writes. ``load_events`` turns one ClickHouse query into
``Candidate`` tuples, every ClickHouse-only fact already joined in: the
previous human click from the same visitor on the same link (a window
function), and for a conversion or sale the click it names (its campaign,
time, link and creator). ``load_facts`` reads what Postgres knows about
them: campaigns (status history, accepted creators, pixel secrets, disabled
links), which creators and links exist, the creators' fees over time, which
orders and clicks were paid already, and the refunds that arrived before
their sale.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
from psycopg.rows import tuple_row

from oros import fees
from oros.connections import clickhouse_client
from oros.reasons import NO_SUCH_ORDER, UNKNOWN_CAMPAIGN
from oros.settings import Settings

from .plan import Facts, Share
from .verify import Campaign, Candidate

LOOKUP_CHUNK = 50_000
# Read.window names at most this many undecided events of its overlap. They are a query parameter, which
# clickhouse-connect sends in the URL of its HTTP request: 1,000 ids are 37 KB of it.
MAX_NAMED = 1_000
DAY_MS = 86_400_000
# decided_ids: at least this many ids within a stretch without a gap over RANGE_GAP_MS are looked up as
# one range, unless Postgres holds more than RANGE_FACTOR times as many decided ids there.
RANGE_MIN = 1_000
RANGE_GAP_MS = 60_000
RANGE_FACTOR = 4


@dataclass(frozen=True)
class Read:
    """Which events a read settles: a ClickHouse condition (``{fresh}`` in the queries) and its parameters."""

    where: str
    params: dict = field(default_factory=dict)

    @classmethod
    def window(cls, since: datetime, watermark: datetime, undecided: list[str]) -> Read:
        """Everything ingested since the watermark, and of the overlap before it (since ``since``) the
        ``undecided`` events only: the rest of the overlap was decided by the runs that read it. Too
        many to name in a query (a previous run read little of the overlap): the whole overlap."""
        if len(undecided) > MAX_NAMED:
            return cls("ingested_at >= {since:DateTime64(3, 'UTC')}", {"since": since})
        return cls("ingested_at >= {since:DateTime64(3, 'UTC')} AND (ingested_at >= {watermark:DateTime64(3, 'UTC')}"
                   " OR has({undecided:Array(UUID)}, event_id))",
                   {"since": since, "watermark": watermark, "undecided": undecided})

    @classmethod
    def hours(cls, hours: list[datetime]) -> Read:
        """The hours of event time the completeness proof found incomplete."""
        return cls("toStartOfHour(ts) IN {hours:Array(DateTime('UTC'))}", {"hours": hours})

    @classmethod
    def rescan(cls, since: datetime, rescan_from: datetime) -> Read:
        """The window, and every event with ``ts`` or ``ingested_at`` since an operator's time."""
        return cls("ingested_at >= {since:DateTime64(3, 'UTC')} OR ts >= {rescan_from:DateTime64(3, 'UTC')}",
                   {"since": min(since, rescan_from), "rescan_from": rescan_from})


# Who a click came from, for deduplication and unique visitors (oros.clientip.visitor_key: an IPv4
# address, an IPv6 /64): the IP as stored, or while it is truncated (OROS_ANONYMIZE_IP) the keyed hash
# of the visitor (sql/clickhouse/0003). An event stored before the hash existed, or whose hash expired,
# falls back to the stored IP (then truncated to its IPv4 /24 or IPv6 /48: coarser still).
# The same string as visitor_key (tests/test_load.py compares them): an IPv6 address read as Python's
# ipaddress reads it (a zone "%eth0" dropped; an IPv4 part with a leading zero is not an address),
# an IPv4-mapped one (::ffff:0:0/96, either spelling) its IPv4 address, any other its "/64".
_V6 = "if(match(ip, '^[^%]*%[^%]+$'), substring(ip, 1, position(ip, '%') - 1), ip)"
_V6_NUM = f"IPv6StringToNumOrDefault({_V6})"
_VISITOR_IP = (f"multiIf(NOT isIPv6String({_V6}) OR match({_V6}, '[.]0[0-9]|:0[0-9]+[.]'), ip,"
               f" substring({_V6_NUM}, 1, 12) = unhex('00000000000000000000FFFF'),"
               f" IPv4NumToString(reinterpretAsUInt32(reverse(substring({_V6_NUM}, 13, 4)))),"
               f" concat(cutIPv6({_V6_NUM}, 8, 0), '/64'))")
VISITOR = {False: _VISITOR_IP, True: "if(ip_hash = '', ip, ip_hash)"}

# One row per event, its columns named and ordered as Candidate's fields. ``p``: for each fresh human
# click, the previous human click from the same visitor on the same link, read back to the dedupe
# window before the first fresh click and to its UTC day's start (first visits). ``c``: for each fresh
# conversion or sale, the click it names; that click, not the reporter, says which link and creator
# earned it, and where it came from (``visit_ip``, ``visit_ip_hash``: a share link's supporter never earns
# on its own clicks), and the visitor's country, device, browser, OS and referrer, which the decision is
# reported under (``attributed``; ingest gives the ClickHouse row the same: ingest/attribute.py).
# ``first_visit``: a human click with no earlier human click from its visitor on its link that UTC day
# (the reports' unique visitors). ``later_visit_id``: the next human click from the same visitor on the
# same link that UTC day; when it was decided before this one arrived (a late click), it was marked the
# first visit, and the settler takes the mark back (settler.post.unmark_later_visits).
EVENTS_SQL = """
SELECT toString(f.event_id) AS event_id, f.event_type AS event_type, toUnixTimestamp64Milli(f.ts) AS ts_ms,
       if(f.campaign_id = toUUID('{unknown}'), NULL, toString(f.campaign_id)) AS campaign_id,
       toString(if(f.event_type != 'click' AND c.event_id IS NOT NULL, coalesce(c.link_id, f.link_id), f.link_id))
         AS link_id,
       toString(if(f.event_type != 'click' AND c.event_id IS NOT NULL, coalesce(c.creator_id, f.creator_id),
                   f.creator_id)) AS creator_id,
       toString(f.supporter_id) AS supporter_id, toString(f.business_id) AS business_id,
       toString(f.click_id) AS click_id, f.order_id AS order_id, f.value AS value, f.currency AS currency,
       f.ip AS ip, f.user_agent AS user_agent, f.is_bot AS is_bot, f.source AS source,
       nullIf(JSONExtractString(f.metadata, 'sig'), '') AS pixel_sig, p.prev AS prev_click_ms,
       toUnixTimestamp64Milli(c.ts) AS click_ts_ms, toString(c.campaign_id) AS click_campaign_id,
       f.event_type = 'click' AND NOT f.is_bot AND f.source != 'head'
         AND (p.prev IS NULL OR intDiv(p.prev, {day_ms}) != intDiv(toUnixTimestamp64Milli(f.ts), {day_ms}))
         AS first_visit,
       if((f.event_type IN ('conversion', 'sale') AND c.event_id IS NOT NULL) AS attributed, assumeNotNull(c.country),
          f.country) AS country,
       if(attributed, assumeNotNull(c.device_type), f.device_type) AS device_type,
       if(attributed, assumeNotNull(c.browser), f.browser) AS browser,
       if(attributed, assumeNotNull(c.os), f.os) AS os,
       if(attributed, assumeNotNull(c.referrer_host), f.referrer_host) AS referrer_host,
       if(f.event_type = 'click', f.ip, coalesce(c.ip, '')) AS visit_ip,
       if(f.event_type = 'click', f.ip_hash, coalesce(c.ip_hash, '')) AS visit_ip_hash,
       if(intDiv(p.next_ms, {day_ms}) = intDiv(toUnixTimestamp64Milli(f.ts), {day_ms}), toString(p.next), NULL)
         AS later_visit_id
  FROM (SELECT event_id, event_type, ts, campaign_id, link_id, creator_id, supporter_id, business_id, click_id,
               order_id, value, currency, ip, user_agent, is_bot, source, metadata, country, device_type, browser,
               os, referrer_host, ip_hash
          FROM events WHERE {fresh} LIMIT 1 BY event_id) AS f
  LEFT JOIN (
    SELECT event_id, prev, next, next_ms FROM (
      SELECT event_id, lagInFrame(toNullable(toUnixTimestamp64Milli(ts))) OVER (
               PARTITION BY link_id, visitor ORDER BY ts, event_id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev,
             leadInFrame(toNullable(event_id)) OVER (
               PARTITION BY link_id, visitor ORDER BY ts, event_id ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS next,
             leadInFrame(toNullable(toUnixTimestamp64Milli(ts))) OVER (
               PARTITION BY link_id, visitor ORDER BY ts, event_id ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS next_ms
        FROM (SELECT event_id, link_id, {visitor} AS visitor, ts FROM events
               WHERE event_type = 'click' AND NOT is_bot AND source != 'head'
                 AND ts >= (SELECT least(min(ts) - toIntervalSecond({dedupe_s:UInt32}), toStartOfDay(min(ts), 'UTC'))
                              FROM events WHERE {fresh} AND event_type = 'click')
                 AND campaign_id IN (SELECT campaign_id FROM events WHERE {fresh} AND event_type = 'click')
               LIMIT 1 BY event_id))
     WHERE (prev IS NOT NULL OR next IS NOT NULL)
       AND event_id IN (SELECT event_id FROM events WHERE {fresh} AND event_type = 'click')
  ) AS p ON p.event_id = f.event_id
  LEFT JOIN (
    SELECT event_id, campaign_id, ts, link_id, creator_id, ip, ip_hash, country, device_type, browser, os,
           referrer_host FROM events
     WHERE event_type = 'click'
       AND event_id IN (SELECT click_id FROM events WHERE {fresh} AND click_id IS NOT NULL
                                                      AND event_type IN ('conversion', 'sale'))
     LIMIT 1 BY event_id
  ) AS c ON c.event_id = f.click_id
SETTINGS join_use_nulls = 1
"""

NEWEST_SQL = "SELECT max(ingested_at) FROM events"
# The ids alone, where most were decided already: a fraction of reading their events.
INGESTED_IDS_SQL = """
SELECT DISTINCT toString(event_id) FROM events
 WHERE ingested_at >= {since:DateTime64(3, 'UTC')} AND ingested_at < {until:DateTime64(3, 'UTC')}
"""

CAMPAIGNS_SQL = """
SELECT c.id::text AS id, c.business_id::text AS business_id, c.objective, c.payout_per_action,
       c.remaining_budget, c.status, c.start_date, c.end_date, c.pixel_billable,
       coalesce((SELECT array_agg(cc.creator_id::text) FROM campaign_creators cc
                  WHERE cc.campaign_id = c.id AND cc.status = 'accepted'), '{}') AS accepted,
       coalesce((SELECT jsonb_agg(jsonb_build_array(floor(extract(epoch FROM h.changed_at) * 1000)::bigint, h.status)
                                  ORDER BY h.changed_at, h.id)
                   FROM campaign_status_history h WHERE h.campaign_id = c.id), '[]') AS history,
       coalesce((SELECT jsonb_object_agg(l.id::text, floor(extract(epoch FROM l.disabled_at) * 1000)::bigint)
                   FROM tracking_links l WHERE l.campaign_id = c.id AND l.disabled_at IS NOT NULL), '{}') AS disabled
  FROM campaigns c WHERE c.id = ANY(%s::uuid[])
"""

# Every pixel secret of these businesses that was still valid at ``since`` (NULL expires_at: current).
PIXEL_SECRETS_SQL = """
SELECT business_id::text AS business_id, secret, floor(extract(epoch FROM expires_at) * 1000)::bigint AS until_ms
  FROM pixel_secrets
 WHERE business_id = ANY(%(businesses)s::uuid[]) AND (expires_at IS NULL OR expires_at > %(since)s)
"""

# The ids are sent as one array literal: psycopg dumping a list of 50,000 strings costs more than the query.
DECIDED_SQL = "SELECT id::text FROM events WHERE id = ANY(%s::uuid[])"
# Every decided id in a range of ids, up to a limit: one walk along the primary key instead of a
# descent per id (five times cheaper for the million ids a run re-reads after a backlog).
DECIDED_RANGE_SQL = "SELECT id::text FROM events WHERE id BETWEEN %s AND %s LIMIT %s"

# The orders claimed: an unsigned pixel's order id claims it against other unsigned pixels only
# (settler.verify.unsigned_pixel).
PAID_ORDERS_SQL = """
SELECT campaign_id::text AS c, order_id, unsigned_pixel, id::text AS id, click_id::text AS click_id,
       unsigned_pixel AND EXISTS (SELECT 1 FROM live_sales s WHERE s.event_id = events.id) AS live
  FROM events
 WHERE order_id = ANY(%s) AND event_type IN ('conversion', 'sale') AND status IN ('paid', 'reversed')
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

# Refunds an earlier run found no sale for. The reason is written into the SQL, not bound, so the
# planner can match the partial index idx_events_orphan_refund_order (0022) whatever plan it caches.
EARLY_REFUNDS_SQL = f"""
SELECT id::text AS id, floor(extract(epoch FROM occurred_at) * 1000)::bigint AS ts_ms, order_id, value,
       metadata->>'campaign_id' AS campaign_id, metadata->>'business_id' AS business_id
  FROM events
 WHERE order_id = ANY(%s) AND event_type = 'refund' AND rejection_reason = '{NO_SUCH_ORDER}'
"""

KNOWN_USERS_SQL = "SELECT id::text AS id FROM users WHERE id = ANY(%s::uuid[])"
KNOWN_LINKS_SQL = "SELECT id::text AS id FROM tracking_links WHERE campaign_id = ANY(%s::uuid[])"
# The share links among them: whose, at which percent, and where their supporter made them (0110). A hash
# made under another key than the settler's (or before keys were recorded) tells nothing (0180).
SHARES_SQL = """
SELECT id::text AS link_id, supporter_id::text AS supporter_id, share_pct AS pct,
       CASE WHEN share_ip_key = %(key_id)s THEN share_ip_hash END AS ip_hash, host(share_ip) AS ip
  FROM tracking_links WHERE campaign_id = ANY(%(campaigns)s::uuid[]) AND supporter_id IS NOT NULL
"""


def newest_ingested(settings: Settings) -> datetime | None:
    """The newest ``ingested_at`` ClickHouse holds: the watermark a run writes when it succeeds."""
    newest = clickhouse_client(settings).query(NEWEST_SQL).result_rows[0][0]
    return newest.replace(tzinfo=UTC) if newest is not None else None


def ingested_ids(settings: Settings, since: datetime, until: datetime) -> list[str]:
    """The ids of the events ingested in [``since``, ``until``)."""
    rows = clickhouse_client(settings).query(INGESTED_IDS_SQL, parameters={"since": since, "until": until})
    return [row[0] for row in rows.result_rows]


def load_events(settings: Settings, read: Read) -> list[Candidate]:
    """The events ``read`` selects, each once, with the ClickHouse-only facts its rules need."""
    sql = (EVENTS_SQL.replace("{fresh}", f"({read.where})").replace("{visitor}", VISITOR[settings.anonymize_ip])
           .replace("{unknown}", UNKNOWN_CAMPAIGN).replace("{day_ms}", str(DAY_MS)))
    result = clickhouse_client(settings).query(sql, parameters={**read.params, "dedupe_s": settings.click_dedupe_s})
    rows = result.result_rows
    if rows and tuple(result.column_names) != Candidate._fields:
        raise RuntimeError(f"EVENTS_SQL columns {result.column_names} are not Candidate's fields")
    return list(map(Candidate._make, rows))


def decided_ids(conn: psycopg.Connection, ids: list[str]) -> set[str]:
    """The subset of ``ids`` Postgres ``events`` holds: what an earlier run (or this one) decided.

    Event ids are UUIDv7, ordered by their edge time. Where many of ``ids``
    lie close together (no gap over ``RANGE_GAP_MS``), the decided ids of
    that stretch are read along the primary key; should Postgres hold far
    more there than was read (``RANGE_FACTOR``), those ids are looked up
    one by one after all, as are scattered ids.
    """
    found: set[str] = set()
    singles: list[str] = []
    cur = conn.cursor(row_factory=tuple_row)
    for run in _runs(sorted(ids)):
        if len(run) >= RANGE_MIN:
            limit = RANGE_FACTOR * len(run)
            rows = cur.execute(DECIDED_RANGE_SQL, (run[0], run[-1], limit + 1)).fetchall()
            if len(rows) <= limit:
                wanted = set(run)
                found.update(r[0] for r in rows if r[0] in wanted)
                continue
        singles += run
    for i in range(0, len(singles), LOOKUP_CHUNK):
        found.update(r[0] for r in cur.execute(DECIDED_SQL, ("{" + ",".join(singles[i:i + LOOKUP_CHUNK]) + "}",)))
    return found


def _runs(ids: list[str]) -> Iterator[list[str]]:
    """Sorted ids split where the edge times of neighbours (a UUIDv7's first 48 bits) are far apart."""
    start, previous = 0, None
    for i, event_id in enumerate(ids):
        ms = int(event_id[:8] + event_id[9:13], 16)
        if previous is not None and ms - previous > RANGE_GAP_MS:
            yield ids[start:i]
            start = i
        previous = ms
    if ids:
        yield ids[start:]


def load_facts(conn: psycopg.Connection, events: list[Candidate], fee_pct: Decimal, ip_key_id: str) -> Facts:
    """What Postgres knows about ``events`` (refunds excluded: they are matched when applied).

    ``fee_pct`` is the base fee the creators' tiers lower. Their fee spans are read after the events
    were: a span that starts later starts after every event this read holds. ``ip_key_id`` is the
    fingerprint of the key the clicks' hashes are made under (``oros.clientip.ip_hash_key_id``).
    """
    campaign_ids = sorted({e.campaign_id for e in events if e.campaign_id})
    creators = sorted({e.creator_id for e in events if e.creator_id})
    return Facts(
        campaigns=load_campaigns(conn, campaign_ids, events),
        users={r["id"] for r in conn.execute(KNOWN_USERS_SQL, (creators,))},
        links={r["id"] for r in conn.execute(KNOWN_LINKS_SQL, (campaign_ids,))},
        shares={r["link_id"]: Share(**r)
                for r in conn.execute(SHARES_SQL, {"campaigns": campaign_ids, "key_id": ip_key_id})},
        fees=fees.load(conn, fee_pct, creators),
        **_paid_orders(conn, events),
        paid_clicks=_paid_clicks(conn, events),
        early_refunds=_early_refunds(conn, events),
    )


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def load_campaigns(conn: psycopg.Connection, ids: list[str], events: list[Candidate] = ()) -> dict[str, Campaign]:
    """The campaigns, with the pixel secrets their signed pixels among ``events`` may need."""
    rows = conn.execute(CAMPAIGNS_SQL, (ids,)).fetchall()
    secrets = _pixel_secrets(conn, rows, [e for e in events if e.pixel_sig is not None])
    return {row["id"]: Campaign(
        id=row["id"], business_id=row["business_id"], objective=row["objective"],
        payout=row["payout_per_action"], remaining=row["remaining_budget"], status=row["status"],
        start_ms=_ms(row["start_date"]), end_ms=_ms(row["end_date"]),
        history=tuple((int(ms), status) for ms, status in row["history"]),
        accepted=frozenset(row["accepted"]), pixel_billable=row["pixel_billable"],
        pixel_secrets=tuple(secrets.get(row["business_id"], ())),
        disabled_links={link: int(ms) for link, ms in row["disabled"].items()},
    ) for row in rows}


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


def _paid_orders(conn: psycopg.Connection, events: list[Candidate]) -> dict:
    """(campaign, order id) already paid (or paid and reversed) for the orders these events name: as
    ``paid_orders``, and as ``pixel_orders`` where an unsigned pixel was paid for it, with those pixels'
    (event id, click id) in ``pixel_sales`` but for live sales (the business's post supersedes them)."""
    paid: set[tuple[str, str]] = set()
    pixel: set[tuple[str, str]] = set()
    sales: dict[tuple[str, str], list[tuple[str, str | None]]] = defaultdict(list)
    orders = sorted({e.order_id for e in events if e.order_id and e.event_type != "click"})
    if orders:
        for r in conn.execute(PAID_ORDERS_SQL, (orders,)):
            (pixel if r["unsigned_pixel"] else paid).add((r["c"], r["order_id"]))
            if r["unsigned_pixel"] and not r["live"]:
                sales[(r["c"], r["order_id"])].append((r["id"], r["click_id"]))
    return {"paid_orders": paid, "pixel_orders": pixel, "pixel_sales": dict(sales)}


def _paid_clicks(conn: psycopg.Connection, events: list[Candidate]) -> set[tuple[str, str]]:
    """(click id, order id or '') already paid for the clicks these conversions and sales name."""
    clicks = sorted({e.click_id for e in events if e.click_id and e.event_type in ("conversion", "sale")})
    found: set[tuple[str, str]] = set()
    for i in range(0, len(clicks), LOOKUP_CHUNK):
        rows = conn.execute(PAID_CLICKS_SQL, {"clicks": clicks[i:i + LOOKUP_CHUNK]})
        found.update((r["click_id"], r["order_key"]) for r in rows)
    return found


def _early_refunds(conn: psycopg.Connection, events: list[Candidate]) -> list[Candidate]:
    """Refunds an earlier run found no sale for (``no_such_order``), of the orders these sales name:
    each is applied to its sale once the sale is paid (``settler.refunds``)."""
    orders = sorted({e.order_id for e in events if e.order_id and e.event_type == "sale"})
    if not orders:
        return []
    return [Candidate(event_id=r["id"], event_type="refund", ts_ms=r["ts_ms"], campaign_id=r["campaign_id"],
                      business_id=r["business_id"], order_id=r["order_id"], value=r["value"])
            for r in conn.execute(EARLY_REFUNDS_SQL, (orders,))]
