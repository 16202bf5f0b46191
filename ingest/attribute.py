"""Conversions and sales take the visitor of the click they name: where it came from, and on what.

A conversion or sale posted by a business's server (source ``api``, ``stripe``)
carries that server's address and HTTP client, and a pixel the checkout page
as its referrer; what a business wants to group its sales by is the visitor
who clicked. So before the insert each conversion and sale gets the country,
device type, browser, OS (with versions) and referrer host of its click,
found in the same batch or in ClickHouse (by the table's sort key: campaign,
type, id; one query per batch that holds conversions or sales). Its own bot
flag and IP hash stay its own. A click ClickHouse does not hold yet (another
stream shard's, inserted later) leaves the event's own fields; the settler
reads the click's fields for its decisions either way (settler/load.py).
"""

from __future__ import annotations

import orjson
from clickhouse_connect.driver.exceptions import ClickHouseError

from oros.connections import clickhouse_client
from oros.reasons import UNKNOWN_CAMPAIGN
from oros.settings import Settings

from .writer import REASON_CHARS, ClickHouseUnavailable

VISITOR_FIELDS = ("country", "device_type", "browser", "browser_version", "os", "os_version", "referrer_host")
# The edge writes event_id then event_type first (``Event`` field order): '{"event_id":"<36>","event_type":"'.
_TYPE_AT = 65
_ATTRIBUTED = (b'conversion"', b'sale"')
_CLICK = b'click"'

CLICKS_SQL = """
SELECT toString(event_id), country, device_type, browser, browser_version, os, os_version, referrer_host
  FROM events
 WHERE campaign_id IN {campaigns:Array(UUID)} AND event_type = 'click' AND event_id IN {clicks:Array(UUID)}
 LIMIT 1 BY event_id
"""


def attribute(settings: Settings, lines: list[bytes]) -> list[bytes]:
    """``lines`` (enriched) with each conversion's and sale's visitor fields taken from its click.

    Raises ``ClickHouseUnavailable`` when the clicks cannot be looked up: the batch waits, as for an insert.
    """
    wanted = dict(_conversions(lines))
    if not wanted:
        return lines
    clicks = {event["click_id"] for event in wanted.values()}
    found = _batch_clicks(lines, clicks)
    missing = clicks - found.keys()
    if missing:
        found.update(_stored_clicks(settings, {e["campaign_id"] for e in wanted.values()}, missing))
    attributed = list(lines)
    for i, event in wanted.items():
        visitor = found.get(event["click_id"])
        if visitor is not None:
            attributed[i] = orjson.dumps({**event, **visitor})
    return attributed


def _conversions(lines: list[bytes]):
    """(index, event) of each enriched conversion or sale naming a click of a known campaign."""
    for i, line in enumerate(lines):
        if not line.startswith(_ATTRIBUTED, _TYPE_AT):
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # not the edge's format: ClickHouse decides (ingest.rows)
        if (isinstance(event, dict) and isinstance(event.get("click_id"), str)
                and event.get("campaign_id") not in (None, UNKNOWN_CAMPAIGN)
                and all(isinstance(event.get(name), str) for name in VISITOR_FIELDS)):
            yield i, event


def _batch_clicks(lines: list[bytes], clicks: set[str]) -> dict[str, dict]:
    """The visitor fields of the wanted clicks this batch holds (inserted with it: after a backlog)."""
    found = {}
    for line in lines:
        if line.startswith(_CLICK, _TYPE_AT) and line[13:49].decode("ascii", "replace") in clicks:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if all(isinstance(event.get(name), str) for name in VISITOR_FIELDS):
                found[event["event_id"]] = {name: event[name] for name in VISITOR_FIELDS}
    return found


def _stored_clicks(settings: Settings, campaigns: set[str], clicks: set[str]) -> dict[str, dict]:
    try:
        rows = clickhouse_client(settings).query(
            CLICKS_SQL, parameters={"campaigns": sorted(campaigns), "clicks": sorted(clicks)}).result_rows
    except (ClickHouseError, OSError) as exc:  # a read: whatever failed, the batch waits and is retried
        raise ClickHouseUnavailable(str(exc)[:REASON_CHARS], getattr(exc, "code", None)) from exc
    return {row[0]: dict(zip(VISITOR_FIELDS, row[1:], strict=True)) for row in rows}
