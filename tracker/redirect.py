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
take the request's parts (method, code, raw query, the few headers a click
records, the client's address), not a ``web.Request``, and an answer is a
Location or a ``Refusal``.

This is the path every click takes, so its cost is watched
(``loadtests/bench_tracker.py``, ``loadtests/count_tracker.py``,
docs/tracker.md): the app's resources are bound once, a process-cache hit
is recorded without awaiting, and the event is encoded straight from the
link (``Link.click_event``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import unquote_plus

from aiohttp import web

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
# Where bot_reason looks for a prefetch: the request's headers, or (the edge) a dict of just those.
Purposes = Mapping[str, str]


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


def _utm(raw_query: str) -> dict[str, str]:
    """The ``utm_*`` parameters of a query, decoded as aiohttp's ``request.query`` would (``+`` is a space)."""
    utm: dict[str, str] = {}
    for pair in raw_query.split("&"):
        name, _, value = pair.partition("=")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name.startswith("utm_") and len(name) <= 40 and len(utm) < MAX_UTM_PARAMS:
            utm[name] = (unquote_plus(value) if "%" in value or "+" in value else value)[:MAX_UTM_VALUE]
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
        headers = request.headers
        answer = await self.answer(
            request.method, request.match_info["code"], request.rel_url.raw_query_string,
            text(headers.get("User-Agent")), text(headers.get("Referer")), headers, self._client_ip(request),
        )
        if isinstance(answer, Refusal):
            return answer.response()
        return web.Response(status=302, headers={"Location": answer, "Cache-Control": NO_STORE})

    async def answer(
        self, method: str, code: str, raw_query: str, user_agent: str | None, referrer: str | None,
        purposes: Purposes, client: str | None,
    ) -> str | Refusal:
        """The whole redirect, once the click is durable: the Location to send, or the refusal."""
        link = self.cached(code)
        if link is MISS:
            link = await self.resolve(code, client)
        if link is None:
            return self.refused(NOT_FOUND)
        if isinstance(link, Refusal):
            return link
        recorded = self.record(link, method, raw_query, user_agent, referrer, purposes, client)
        if isinstance(recorded, Refusal):
            return recorded
        waiter, location = recorded
        try:
            await waiter
        except AppendError:
            return self.refused(NOT_RECORDED)
        self.redirected()
        return location

    async def resolve(self, code: str, client: str | None) -> Link | None | Refusal:
        """The link of a code the process cache missed (None: there is none), within the miss bounds."""
        if CODE_RE.match(code) is None:
            return None
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
        self, link: Link, method: str, raw_query: str, user_agent: str | None, referrer: str | None,
        purposes: Purposes, client: str | None,
    ) -> tuple[asyncio.Future, str] | Refusal:
        """Submit the click: the future that is done once it is durable, and the Location to send then.

        ``user_agent`` and ``referrer`` are the headers' text (``oros.headers.text``), ``purposes`` the
        request's headers or just its prefetch ones (``bot_reason``), ``client`` its client address.
        """
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
        event = link.click_event(
            click_id,
            ts_ms,
            client,
            user_agent[:MAX_UA] if user_agent else None,
            referrer[:MAX_REFERRER] if referrer else None,
            bot_reason(method, purposes, user_agent),
            source,
            _utm(raw_query) if raw_query else {},
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
