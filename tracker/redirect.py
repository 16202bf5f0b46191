"""GET|HEAD /{code}: record the click, then send the visitor on.

The click is durable (in the stream, or the spool) before the 302 leaves,
so every redirect a client received has its event. Only the link's stored
destination is ever used as the target (no open redirect); the request's
query passes through (UTM tags) and ``oros_cid`` carries the click id.
Whether a click is billable (campaign status, dedupe, bots) is the
settler's call; the tracker records what it saw.

This is the path every click takes, so its cost is watched
(``loadtests/bench_tracker.py``, docs/tracker.md): the app's resources are
bound once, a process-cache hit is answered without awaiting, and the event
is encoded straight from the link (``Link.click_event``).
"""

from __future__ import annotations

import time

from aiohttp import web

from oros.events import uuid7_str
from oros.headers import text
from oros.keys import CLICK_BUCKET_MS
from oros.links import CODE_RE, QR_MARK, unmark_scan

from .appender import AppendError
from oros.bots import MAX_UA, bot_reason
from .resolve import MISS, LinkUnavailable
from .typedefs import APPENDER, CLIENT_IP, METRICS, MISS_BUDGET, RESOLVER

MAX_QUERY = 2048
MAX_REFERRER = 2048
MAX_UTM_PARAMS = 10
MAX_UTM_VALUE = 200
NO_STORE = "no-store"


def _utm(request: web.Request) -> dict[str, str]:
    utm: dict[str, str] = {}
    for name, value in request.query.items():
        if name.startswith("utm_") and len(name) <= 40 and len(utm) < MAX_UTM_PARAMS:
            utm[name] = value[:MAX_UTM_VALUE]
    return utm


def _refuse(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, headers={"Cache-Control": NO_STORE})


class Redirector:
    """The ``/{code}`` handler; ``bind`` hands it the app's resources once they exist."""

    __slots__ = ("_resolver", "_misses", "_appender", "_client_ip", "_requests")

    async def bind(self, app: web.Application) -> None:
        self._resolver = app[RESOLVER]
        self._misses = app[MISS_BUDGET]
        self._appender = app[APPENDER]
        self._client_ip = app[CLIENT_IP]
        self._requests = app[METRICS].requests

    async def redirect(self, request: web.Request) -> web.Response:
        code = request.match_info["code"]
        link = self._resolver.cached(code)
        if link is MISS:
            if CODE_RE.match(code) is None:
                return self._refused(404, "no such link")
            client = self._client_ip(request)
            if self._misses.exhausted(client):
                self._requests[("redirect", "429")] += 1
                return web.Response(status=429, text="too many unknown links from this address",
                                    headers={"Cache-Control": NO_STORE, "Retry-After": "1"})
            try:
                link = await self._resolver.load(code)
            except LinkUnavailable:
                return self._refused(503, "link lookup unavailable, retry shortly")
            if link is None:
                self._misses.not_found(client)
        if link is None:
            return self._refused(404, "no such link")
        raw_query = request.rel_url.raw_query_string
        if len(raw_query) > MAX_QUERY:
            return self._refused(414, f"query string longer than {MAX_QUERY} bytes")
        source = "redirect"
        # A scanned QR code (one substring test on the common path; docs/analytics.md).
        if QR_MARK in raw_query and (unmarked := unmark_scan(raw_query)) is not None:
            raw_query, source = unmarked, "qr"
        method = request.method
        if method == "HEAD":
            source = "head"

        ts_ms = time.time_ns() // 1_000_000
        click_id = uuid7_str(ts_ms)
        headers = request.headers
        user_agent = text(headers.get("User-Agent"))
        referrer = text(headers.get("Referer"))
        reason = bot_reason(method, headers, user_agent)
        event = link.click_event(
            click_id,
            ts_ms,
            self._client_ip(request),
            user_agent[:MAX_UA] if user_agent else None,
            referrer[:MAX_REFERRER] if referrer else None,
            reason,
            source,
            _utm(request) if raw_query else {},
        )
        try:
            # The index entry's bucket from ts_ms: the same milliseconds the click id carries.
            await self._appender.append(event, (ts_ms // CLICK_BUCKET_MS, click_id, link.index_value))
        except AppendError:
            return self._refused(503, "could not record the click, retry shortly")
        self._requests[("redirect", "302")] += 1
        return web.Response(status=302, headers={"Location": link.location(raw_query, click_id), "Cache-Control": NO_STORE})

    def _refused(self, status: int, text: str) -> web.Response:
        self._requests[("redirect", str(status))] += 1
        return _refuse(status, text)
