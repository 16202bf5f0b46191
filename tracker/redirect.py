"""GET|HEAD /{code}: record the click, then send the visitor on.

The click is durable (in the stream, or the spool) before the 302 leaves,
so every redirect a client received has its event. Only the link's stored
destination is ever used as the target (no open redirect); the request's
query passes through (UTM tags) and ``oros_cid`` carries the click id.
Whether a click is billable (campaign status, dedupe, bots) is the
settler's call; the tracker records what it saw.

Two callers share these rules: the aiohttp route (``Redirector.redirect``)
and the tracker's edge (tracker/edge.py), which answers redirects on its own
connections without building an aiohttp request or response. So the steps
take the request's parts (method, code, query, headers, peer), not a
``web.Request``, and an answer is a Location or a ``Refusal``.

This is the path every click takes, so its cost is watched
(``loadtests/bench_tracker.py``, ``loadtests/count_tracker.py``,
docs/tracker.md): the app's resources are bound once, a process-cache hit
is recorded without awaiting, and the event is encoded straight from the
link (``Link.click_event``).
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

from aiohttp import web
from multidict import MultiMapping
from yarl import URL

from oros.bots import MAX_UA, bot_reason
from oros.events import uuid7_str
from oros.headers import text
from oros.keys import CLICK_BUCKET_MS
from oros.links import CODE_RE, QR_MARK, unmark_scan

from .appender import AppendError
from .resolve import MISS, Link, LinkUnavailable
from .typedefs import APPENDER, CLIENT_IP, METRICS, MISS_BUDGET, RESOLVER

MAX_QUERY = 2048
MAX_REFERRER = 2048
MAX_UTM_PARAMS = 10
MAX_UTM_VALUE = 200
NO_STORE = "no-store"


class Refusal(NamedTuple):
    """A redirect not given: its status and plain-text body (``retry_after``: ``Retry-After: 1``)."""

    status: int
    text: str
    retry_after: bool = False

    def response(self) -> web.Response:
        headers = {"Cache-Control": NO_STORE, **({"Retry-After": "1"} if self.retry_after else {})}
        return web.Response(status=self.status, text=self.text, headers=headers)


NOT_FOUND = Refusal(404, "no such link")
TOO_MANY_MISSES = Refusal(429, "too many unknown links from this address", retry_after=True)
LOOKUP_DOWN = Refusal(503, "link lookup unavailable, retry shortly")
QUERY_TOO_LONG = Refusal(414, f"query string longer than {MAX_QUERY} bytes")
NOT_RECORDED = Refusal(503, "could not record the click, retry shortly")


def _utm(url: URL) -> dict[str, str]:
    utm: dict[str, str] = {}
    for name, value in url.query.items():
        if name.startswith("utm_") and len(name) <= 40 and len(utm) < MAX_UTM_PARAMS:
            utm[name] = value[:MAX_UTM_VALUE]
    return utm


class Redirector:
    """The ``/{code}`` rules; ``bind`` hands it the app's resources once they exist."""

    __slots__ = ("_resolver", "_misses", "_appender", "_client_ip", "_requests", "cached")

    async def bind(self, app: web.Application) -> None:
        self._resolver = app[RESOLVER]
        self._misses = app[MISS_BUDGET]
        self._appender = app[APPENDER]
        self._client_ip = app[CLIENT_IP]
        self._requests = app[METRICS].requests
        # code -> Link, None (no such link) or MISS (not in the process cache): the edge's first question.
        self.cached = self._resolver.cached

    async def redirect(self, request: web.Request) -> web.Response:
        url = request.rel_url
        answer = await self.answer(
            request.method, request.match_info["code"], url.raw_query_string, url, request.headers, request.remote
        )
        if isinstance(answer, Refusal):
            return answer.response()
        return web.Response(status=302, headers={"Location": answer, "Cache-Control": NO_STORE})

    async def answer(
        self, method: str, code: str, raw_query: str, url: URL, headers: MultiMapping[str], peer: str | None
    ) -> str | Refusal:
        """The whole redirect, once the click is durable: the Location to send, or the refusal."""
        link = self.cached(code)
        if link is MISS:
            link = await self.resolve(code, headers, peer)
        if link is None:
            return self.refused(NOT_FOUND)
        if isinstance(link, Refusal):
            return link
        recorded = self.record(link, method, raw_query, url, headers, peer)
        if isinstance(recorded, Refusal):
            return recorded
        waiter, location = recorded
        try:
            await waiter
        except AppendError:
            return self.refused(NOT_RECORDED)
        self.redirected()
        return location

    async def resolve(self, code: str, headers: MultiMapping[str], peer: str | None) -> Link | None | Refusal:
        """The link of a code the process cache missed (None: there is none), within the miss bounds."""
        if CODE_RE.match(code) is None:
            return None
        client = self._client_ip.of(peer, headers)
        if self._misses.exhausted(client):
            return self.refused(TOO_MANY_MISSES)
        try:
            link = await self._resolver.load(code)
        except LinkUnavailable:
            return self.refused(LOOKUP_DOWN)
        if link is None:
            self._misses.not_found(client)
        return link

    def record(
        self, link: Link, method: str, raw_query: str, url: URL, headers: MultiMapping[str], peer: str | None
    ) -> tuple[asyncio.Future, str] | Refusal:
        """Submit the click: the future that is done once it is durable, and the Location to send then."""
        if len(raw_query) > MAX_QUERY:
            return self.refused(QUERY_TOO_LONG)
        source = "redirect"
        # A scanned QR code (one substring test on the common path; docs/analytics.md).
        if QR_MARK in raw_query and (unmarked := unmark_scan(raw_query)) is not None:
            raw_query, source = unmarked, "qr"
        if method == "HEAD":
            source = "head"
        ts_ms = time.time_ns() // 1_000_000
        click_id = uuid7_str(ts_ms)
        user_agent = text(headers.get("User-Agent"))
        referrer = text(headers.get("Referer"))
        event = link.click_event(
            click_id,
            ts_ms,
            self._client_ip.of(peer, headers),
            user_agent[:MAX_UA] if user_agent else None,
            referrer[:MAX_REFERRER] if referrer else None,
            bot_reason(method, headers, user_agent),
            source,
            _utm(url) if raw_query else {},
        )
        try:
            # The index entry's bucket from ts_ms: the same milliseconds the click id carries.
            waiter = self._appender.append(event, (ts_ms // CLICK_BUCKET_MS, click_id, link.index_value))
        except AppendError:
            return self.refused(NOT_RECORDED)
        return waiter, link.location(raw_query, click_id)

    def redirected(self) -> None:
        self._requests[("redirect", "302")] += 1

    def refused(self, refusal: Refusal) -> Refusal:
        self._requests[("redirect", str(refusal.status))] += 1
        return refusal
