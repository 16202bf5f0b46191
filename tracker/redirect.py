"""GET|HEAD /{code}: record the click, then send the visitor on.

The click is durable (in the stream, or the spool) before the 302 leaves,
so every redirect a client received has its event. Only the link's stored
destination is ever used as the target (no open redirect); the request's
query passes through (UTM tags) and ``oros_cid`` carries the click id.
Whether a click is billable (campaign status, dedupe, bots) is the
settler's call; the tracker records what it saw.
"""

from __future__ import annotations

import time

from aiohttp import web

from oros.events import Event, uuid7_str
from oros.links import CODE_RE

from .appender import AppendError
from .bots import MAX_UA, bot_reason
from .resolve import LinkUnavailable
from .typedefs import APPENDER, CLIENT_IP, KEYS, METRICS, RESOLVER

MAX_QUERY = 2048
MAX_REFERRER = 2048
MAX_UTM_PARAMS = 10
MAX_UTM_VALUE = 200
NO_STORE = "no-store"


def _clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else None


def _utm(request: web.Request) -> dict[str, str]:
    utm: dict[str, str] = {}
    for name, value in request.query.items():
        if name.startswith("utm_") and len(name) <= 40 and len(utm) < MAX_UTM_PARAMS:
            utm[name] = value[:MAX_UTM_VALUE]
    return utm


def _refuse(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, headers={"Cache-Control": NO_STORE})


async def redirect(request: web.Request) -> web.Response:
    app = request.app
    metrics = app[METRICS]
    code = request.match_info["code"]
    if CODE_RE.match(code) is None:
        metrics.requests[("redirect", "404")] += 1
        return _refuse(404, "no such link")
    try:
        link = await app[RESOLVER].resolve(code)
    except LinkUnavailable:
        metrics.requests[("redirect", "503")] += 1
        return _refuse(503, "link lookup unavailable, retry shortly")
    if link is None:
        metrics.requests[("redirect", "404")] += 1
        return _refuse(404, "no such link")
    raw_query = request.rel_url.raw_query_string
    if len(raw_query) > MAX_QUERY:
        metrics.requests[("redirect", "414")] += 1
        return _refuse(414, f"query string longer than {MAX_QUERY} bytes")

    ts_ms = time.time_ns() // 1_000_000
    click_id = uuid7_str(ts_ms)
    headers = request.headers
    reason = bot_reason(request.method, headers)
    info = link.info
    event = Event(
        event_id=click_id,
        event_type="click",
        ts_ms=ts_ms,
        campaign_id=info.campaign_id,
        link_id=info.link_id,
        creator_id=info.creator_id,
        supporter_id=info.supporter_id,
        business_id=info.business_id,
        ip=app[CLIENT_IP](request),
        user_agent=_clip(headers.get("User-Agent"), MAX_UA),
        referrer=_clip(headers.get("Referer"), MAX_REFERRER),
        is_bot=reason is not None,
        bot_reason=reason,
        source="head" if request.method == "HEAD" else "redirect",
        metadata=_utm(request) if raw_query else {},
    )
    try:
        await app[APPENDER].append(event.encode(), app[KEYS].click(click_id), link.index_value)
    except AppendError:
        metrics.requests[("redirect", "503")] += 1
        return _refuse(503, "could not record the click, retry shortly")
    metrics.requests[("redirect", "302")] += 1
    return web.Response(status=302, headers={"Location": link.location(raw_query, click_id), "Cache-Control": NO_STORE})
