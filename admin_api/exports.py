"""CSV exports: a campaign's events (``GET /v1/campaigns/{id}/events.csv``) and a creator's earnings
(``GET /v1/me/earnings.csv``), streamed.

An export may hold millions of rows, so it is never built whole: the rows
are read in pages of ``EXPORT_CHUNK_ROWS``, each a query of its own in the
table's key order, continuing after the last row sent (keyset pagination),
and each page is written to the chunked response before the next is read.
The process holds one page at a time. Separate queries rather than one
long cursor, because a cursor would hold its resource for as long as the
client takes to download: chDB runs one query at a time for the whole
process (ingest and settlement included), and a Postgres cursor would hold
a pooled connection. Between pages both are free.

Each store writes the page's CSV itself (ClickHouse ``FORMAT CSV``,
Postgres ``COPY ... CSV``). Text a person or a visitor chose (order ids,
campaign titles, parsed browser names, referrer hosts) starting with
``= + - @``, tab or carriage return gets a leading ``'`` so a spreadsheet
does not run it as a formula, and line breaks in it become spaces so a row
is one line (that is how a page's last row, the next page's start, is found).
A failure after the first bytes cuts the connection: the client sees a
truncated download, never a short file that looks complete.
"""

from __future__ import annotations

import asyncio
import csv
import functools
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from aiohttp import web

from oros.connections import as_user, clickhouse_client
from oros.httperrors import StreamBroken
from oros.settings import Settings

from .auth import caller
from .payload import parse_query, path_id
from .reports import MAX_SPAN, RangeQuery, StatsGate, owned_campaign
from .routing import Routes, content
from .typedefs import READ_POOL, SETTINGS

routes = Routes()

EXPORT_CHUNK_ROWS = 50_000
EXPORT_DEFAULT_SPAN = timedelta(days=30)
# An export runs for as long as its download: fewer at once than stats, and one per caller.
EXPORTS_PER_CALLER = 1
EXPORTS_PER_PROCESS = 4
export_gate = StatsGate(EXPORTS_PER_CALLER, EXPORTS_PER_PROCESS)
_EXPORT_THREADS = ThreadPoolExecutor(EXPORTS_PER_PROCESS, thread_name_prefix="oros-export")


def _ch_text(column: str) -> str:
    """A free-text column as exported: formula-safe, one line (see the module's docstring)."""
    flat = f"replaceRegexpAll(ifNull({column}, ''), '[\\\\r\\\\n]', ' ')"
    return (f"if(has(['=', '+', '-', '@', char(9), char(13)], substring({flat}, 1, 1)), "
            f"concat(char(39), {flat}), {flat})")


def _pg_text(column: str) -> str:
    flat = f"translate(coalesce({column}, ''), E'\\r\\n', '  ')"
    return f"CASE WHEN left({flat}, 1) IN ('=', '+', '-', '@', E'\\t', E'\\r') THEN '''' || {flat} ELSE {flat} END"


# The first two columns are each page's sort key: the next page starts after the last row's.
EVENT_COLUMNS = ("event_type", "event_id", "occurred_at", "link_id", "creator_id", "source", "is_bot", "bot_reason",
                 "country", "device_type", "browser", "browser_version", "os", "os_version", "referrer_host",
                 "click_id", "order_id", "value", "currency")
# Replays not merged yet collapse (LIMIT 1 BY); the raw IP and user agent are not exported
# (personal data the reports do not need; the parsed fields are).
_EVENTS_PAGE_SQL = f"""
SELECT event_type, toString(event_id), concat(replaceOne(toString(ts, 'UTC'), ' ', 'T'), 'Z'),
       toString(link_id), toString(creator_id), source, is_bot, bot_reason, country, device_type,
       {_ch_text('browser')}, {_ch_text('browser_version')}, {_ch_text('os')}, {_ch_text('os_version')},
       {_ch_text('referrer_host')}, toString(click_id), {_ch_text('order_id')}, value, currency
  FROM events
 WHERE campaign_id = {{campaign:UUID}}
   AND ts >= fromUnixTimestamp64Milli({{from_ms:Int64}}, 'UTC')
   AND ts < fromUnixTimestamp64Milli({{to_ms:Int64}}, 'UTC')
   AND (event_type > {{after_type:String}} OR (event_type = {{after_type:String}} AND event_id > {{after_id:UUID}}))
 ORDER BY event_type, event_id
 LIMIT 1 BY event_id
 LIMIT {{rows:UInt32}}
"""
_CSV_SETTINGS = {"format_csv_null_representation": ""}

EARNINGS_COLUMNS = ("occurred_at", "event_id", "campaign_id", "campaign_title", "event_type", "status", "earned")
# The creator's own paid (or paid, then reversed) events: what it kept after the fee, a supporter's share and any
# refund (RLS).
_EARNINGS_PAGE_SQL = f"""
COPY (
  SELECT to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), e.id, e.campaign_id,
         {_pg_text('c.title')}, e.event_type, e.status,
         (e.payout_amount - e.reversed_payout) - (e.platform_fee - e.reversed_fee)
           - (coalesce(e.share_reward, 0) - e.reversed_reward)
    FROM events e LEFT JOIN campaigns c ON c.id = e.campaign_id
   WHERE e.creator_id = %(creator)s AND e.status IN ('paid', 'reversed') AND e.event_type <> 'refund'
     AND e.occurred_at >= %(from)s AND e.occurred_at < %(to)s
     AND (e.occurred_at, e.id) > (%(after_at)s::timestamptz, %(after_id)s::uuid)
   ORDER BY e.occurred_at, e.id
   LIMIT %(rows)s
) TO STDOUT WITH (FORMAT csv)
"""
_START = {"events": ("", "00000000-0000-0000-0000-000000000000"),
          "earnings": ("-infinity", "00000000-0000-0000-0000-000000000000")}


def _header(columns: tuple[str, ...]) -> bytes:
    return (",".join(columns) + "\n").encode()


def _last_key(page: bytes) -> tuple[str, str]:
    """The first two fields of a page's last row (one row per line, see the module's docstring)."""
    line = page[page.rstrip(b"\n").rfind(b"\n") + 1:].decode()
    first, second, *_ = next(csv.reader([line]))
    return first, second


async def _stream(request: web.Request, filename: str, columns: tuple[str, ...], start_key: tuple[str, str],
                  fetch) -> web.StreamResponse:
    """Write the header, then each page ``fetch(after_key)`` returns, until a page comes back short."""
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
    })
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        await response.write(_header(columns))
        key = start_key
        while True:
            page = await fetch(key)
            if page:
                await response.write(page)
            if page.count(b"\n") < EXPORT_CHUNK_ROWS:
                break
            key = _last_key(page)
        await response.write_eof()
    except Exception as exc:  # a page failed or the client went away: cut the connection
        raise StreamBroken(filename) from exc
    return response


_CSV = {200: content("CSV with a header row, streamed in chunks", ["text/csv"])}


@routes.get("/v1/campaigns/{id}/events.csv", f"Every event of a campaign in the range, one CSV row each: "
            f"{', '.join(EVENT_COLUMNS)} (owner or admin; default the last 30 days, at most 366)",
            query=RangeQuery, responses=_CSV)
async def campaign_events_csv(request: web.Request) -> web.StreamResponse:
    who = (await caller(request)).require("business")
    campaign_id = path_id(request)
    start, end = parse_query(RangeQuery, request).span(EXPORT_DEFAULT_SPAN, MAX_SPAN["day"])
    settings = request.app[SETTINGS]
    with export_gate.admit(who.id):
        async with as_user(request.app[READ_POOL], who.id) as conn:
            await owned_campaign(conn, who, campaign_id)
        params = {"campaign": campaign_id, "from_ms": int(start.timestamp() * 1000),
                  "to_ms": int(end.timestamp() * 1000), "rows": EXPORT_CHUNK_ROWS}

        async def fetch(after: tuple[str, str]) -> bytes:
            page_params = {**params, "after_type": after[0], "after_id": after[1]}
            return await asyncio.get_running_loop().run_in_executor(
                _EXPORT_THREADS, functools.partial(_events_page, settings, page_params))

        return await _stream(request, f"events-{campaign_id}.csv", EVENT_COLUMNS, _START["events"], fetch)


def _events_page(settings: Settings, params: dict) -> bytes:
    return clickhouse_client(settings).raw_query(_EVENTS_PAGE_SQL, parameters=params, fmt="CSV",
                                                 settings=_CSV_SETTINGS)


@routes.get("/v1/me/earnings.csv", f"The calling creator's paid events, net of the platform fee: "
            f"{', '.join(EARNINGS_COLUMNS)} (status reversed: refunded within the hold; default the last 30 days, "
            "at most 366)", query=RangeQuery, responses=_CSV)
async def my_earnings_csv(request: web.Request) -> web.StreamResponse:
    who = (await caller(request)).require("creator")
    start, end = parse_query(RangeQuery, request).span(EXPORT_DEFAULT_SPAN, MAX_SPAN["day"])
    pool = request.app[READ_POOL]
    params = {"creator": who.id, "from": start, "to": end, "rows": EXPORT_CHUNK_ROWS}

    async def fetch(after: tuple[str, str]) -> bytes:
        # One short transaction per page, as the creator: the connection is back in the pool between pages.
        async with as_user(pool, who.id) as conn:
            async with conn.cursor().copy(_EARNINGS_PAGE_SQL, {**params, "after_at": after[0],
                                                               "after_id": after[1]}) as copy:
                return b"".join([bytes(data) async for data in copy])

    with export_gate.admit(who.id):
        return await _stream(request, "earnings.csv", EARNINGS_COLUMNS, _START["earnings"], fetch)
