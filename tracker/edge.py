"""The tracker's connections: redirects answered below aiohttp's Application, everything else handed to it.

aiohttp's request path (a task per request, ``web.Request``, the router,
``web.Response``, ``StreamWriter``, keep-alive bookkeeping) cost a redirect
more CPU than recording the click did (docs/tracker.md, "Where the time
goes"). A redirect needs none of it: one parsed request in, one small
response out. So every connection of ``oros tracker`` starts as an
``EdgeConnection``. A chunk that is exactly one complete ``GET`` or ``HEAD
/{code}`` HTTP/1.1 request without a body is parsed by llhttp through
httptools (the parser aiohttp bundles too, as strict, so what one refuses
the other does) into the few headers a click records, and the
``Redirector`` (the rules the aiohttp route uses too) answers it with bytes
written to the socket; the click is durable before they are written, as on
the aiohttp path. aiohttp's own parser builds every header into a multidict
and the target into a ``yarl.URL``: with aiohttp's request path gone, that
was the largest cost left of a redirect (docs/tracker.md).

Anything else (another path or method, a body, pipelined or partial
requests, HTTP/1.0, ``Connection: close``, an upgrade, a malformed request,
a percent-encoded code, anything near aiohttp's size limits) hands the
connection over to aiohttp for good: the
unanswered bytes are fed to a fresh ``RequestHandler`` of the runner's
``web.Server``, which parses them again and answers (including its own
``400`` for a malformed request). Nothing was answered or recorded for those
bytes before the hand-over, so nothing is answered twice.

While a redirect waits for its click to be durable the connection reads no
further (HTTP/1.1 answers in order); data that arrived meanwhile is served
next. ``EdgeSite.stop`` drains: the listener closes, idle connections close,
waiting redirects are answered (up to the drain timeout), then the runner
shuts aiohttp's connections down as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from http import HTTPStatus
from socket import socket

import httptools
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from oros.clientip import ClientIp

from .redirect import NOT_FOUND, NOT_RECORDED, Redirector, Refusal
from .resolve import MISS
from .typedefs import CLIENT_IP, REDIRECTOR

log = logging.getLogger(__name__)

MAX_REQUEST = 16384  # bigger is no plain redirect: aiohttp takes it
METHODS = {b"GET": "GET", b"HEAD": "HEAD"}
# The headers a redirect reads, by lower-cased name: it records the User-Agent and Referer, asks
# the prefetch ones (``bot_reason``, under the names it reads) and X-Forwarded-For (from trusted
# proxies). Every other header is only counted.
_UA, _REFERRER, _FORWARDED = 0, 1, 2
HEADERS: dict[bytes, int | str] = {
    b"user-agent": _UA, b"referer": _REFERRER, b"x-forwarded-for": _FORWARDED,
    b"sec-purpose": "Sec-Purpose", b"purpose": "Purpose", b"x-moz": "X-Moz",
}
OWS = b" \t"  # llhttp leaves trailing whitespace on a value; aiohttp strips it
_SERVER = SERVER_SOFTWARE.encode()
_REDIRECT = (
    b"HTTP/1.1 302 Found\r\nLocation: %b\r\nCache-Control: no-store\r\nContent-Length: 0\r\nDate: %b\r\nServer: "
    + _SERVER + b"\r\n\r\n"
)


class Edge:
    """What every edge connection of one site shares: the rules, aiohttp's server, the answers' bytes."""

    def __init__(
        self, redirector: Redirector, client_ip: ClientIp, server: web.Server, fixed_paths: frozenset[str], http: dict
    ) -> None:
        self.redirector = redirector
        self.client_ip = client_ip
        self.server = server  # makes the aiohttp RequestHandler a connection is handed over to
        # "healthz" and the like (paths without their slash): routes of their own, never codes.
        self.fixed = frozenset(path[1:] for path in fixed_paths)
        # Near aiohttp's limits aiohttp decides: the request line (method, target, version), a header
        # value, the count of headers.
        self.max_request = MAX_REQUEST
        self.max_target = http["max_line_size"] - len("HEAD  HTTP/1.1")
        self.max_field = http["max_field_size"]
        self.max_headers = http["max_headers"]
        self.keepalive_s: float = http["keepalive_timeout"]
        self.connections: set[EdgeConnection] = set()
        self.closing = False
        self._refusals: dict[Refusal, tuple[bytes, bytes]] = {}  # the bytes before and after the date
        self._date_at = -1
        self._date = b""

    def connection(self) -> EdgeConnection:
        return EdgeConnection(self)

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._date_at:
            self._date_at, self._date = now, formatdate(now, usegmt=True).encode()
        return self._date

    def redirect(self, location: str) -> bytes:
        return _REDIRECT % (location.encode(), self.date())

    def refusal(self, refusal: Refusal) -> bytes:
        parts = self._refusals.get(refusal)
        if parts is None:
            body = refusal.text.encode()
            parts = self._refusals[refusal] = (
                (f"HTTP/1.1 {refusal.status} {HTTPStatus(refusal.status).phrase}\r\nCache-Control: no-store\r\n"
                 + ("Retry-After: 1\r\n" if refusal.retry_after else "")
                 + f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\nDate: ").encode(),
                b"\r\nServer: " + _SERVER + b"\r\n\r\n" + body,
            )
        return parts[0] + self.date() + parts[1]

    async def drain(self, timeout_s: float) -> None:
        """Close idle connections, let waiting redirects be answered, then close what is left."""
        self.closing = True
        for conn in list(self.connections):
            conn.close_if_idle()
        deadline = time.monotonic() + timeout_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.abort()


class Request:
    """The request being parsed: the parser's callbacks fill it in (httptools calls only the ones defined)."""

    __slots__ = ("parser", "max_field", "target", "method", "ua", "referrer", "purposes", "forwarded", "headers",
                 "messages", "plain")

    def __init__(self, max_field: int) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.max_field = max_field

    def reset(self) -> None:
        self.target = self.method = self.ua = self.referrer = None
        self.purposes, self.forwarded = {}, []
        self.headers, self.messages, self.plain = 0, 0, True

    def on_url(self, url: bytes) -> None:
        self.target = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += 1
        if len(value) > self.max_field:
            self.plain = False  # aiohttp refuses it
            return
        what = HEADERS.get(name.lower())
        if what is None:
            return
        if what == _UA:
            if self.ua is None:  # the first, as headers.get() gives
                self.ua = value.rstrip(OWS).decode("utf-8", "replace")
        elif what == _REFERRER:
            if self.referrer is None:
                self.referrer = value.rstrip(OWS).decode("utf-8", "replace")
        elif what == _FORWARDED:
            self.forwarded.append(value.rstrip(OWS).decode("utf-8", "replace"))
        elif what not in self.purposes:
            self.purposes[what] = value.rstrip(OWS).decode("utf-8", "replace")

    def on_body(self, body: bytes) -> None:  # never called for a request without a body
        self.plain = False

    def on_message_complete(self) -> None:
        # Asked now: once a message is complete llhttp resets its flags for the next one.
        self.messages += 1
        self.method = METHODS.get(self.parser.get_method())
        if not self.parser.should_keep_alive():
            self.plain = False  # HTTP/1.0 without keep-alive, or Connection: close: aiohttp answers, and closes


class EdgeConnection(asyncio.Protocol):
    """One client connection, served here until it sends something that is not a plain redirect.

    llhttp parses a request into ``Request`` (its callbacks), keeping only
    the headers a click needs.
    """

    __slots__ = ("_edge", "_loop", "_transport", "_request", "_peer", "_waiting", "_held", "_location", "_last",
                 "_idle_timer")

    def __init__(self, edge: Edge) -> None:
        self._edge = edge
        self._transport: asyncio.Transport | None = None
        self._waiting = False  # a redirect of this connection waits for its click to be durable
        self._held: list[bytes] = []  # what arrived meanwhile
        self._location = ""

    def connection_made(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else None  # what request.remote says for IP sockets
        self._request = Request(self._edge.max_field)
        self._edge.connections.add(self)
        self._last = loop.time()
        self._idle_timer = loop.call_later(self._edge.keepalive_s, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._forget()

    def data_received(self, data: bytes) -> None:
        if self._waiting:
            self._held.append(data)
            self._transport.pause_reading()  # resumed once the waiting redirect is answered
            return
        self._serve(data)

    def _serve(self, data: bytes) -> None:
        edge = self._edge
        if edge.closing:
            self.abort()
            return
        request = self._plain_request(data)
        if request is None:
            self._hand_over(data)
            return
        code, _, raw_query = request.target.decode()[1:].partition("?")
        if "/" in code or "%" in code or code in edge.fixed:
            self._hand_over(data)
            return
        method, ua, referrer, purposes = request.method, request.ua, request.referrer, request.purposes
        redirector = edge.redirector
        link = redirector.cached(code)
        if link is None:
            self._write(edge.refusal(redirector.refused(NOT_FOUND)))
            return
        client = edge.client_ip.of(self._peer, request.forwarded)
        if link is MISS:
            self._waiting = True
            task = self._loop.create_task(redirector.answer(method, code, raw_query, ua, referrer, purposes, client))
            task.add_done_callback(self._answered)
            return
        recorded = redirector.record(link, method, raw_query, ua, referrer, purposes, client)
        if isinstance(recorded, Refusal):
            self._write(edge.refusal(recorded))
            return
        waiter, self._location = recorded
        self._waiting = True
        waiter.add_done_callback(self._recorded)

    def _plain_request(self, data: bytes) -> Request | None:
        """The request ``data`` holds when it is one whole plain ``GET|HEAD /{code}`` HTTP/1.1 request llhttp
        accepts, else None (aiohttp's then)."""
        edge = self._edge
        if (len(data) > edge.max_request or not data.endswith(b"\r\n\r\n")
                or not (data.startswith(b"GET /") or data.startswith(b"HEAD /"))):
            return None
        request = self._request
        request.reset()
        try:
            request.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None
        target = request.target
        if (request.messages != 1 or not request.plain or request.method is None or request.headers > edge.max_headers
                or len(target) > edge.max_target or b"#" in target
                # HTTP/1.1: aiohttp answers an HTTP/1.0 request in kind
                or not data.startswith(b" HTTP/1.1\r\n", len(request.method) + 1 + len(target))):
            return None
        return request

    def _recorded(self, waiter: asyncio.Future) -> None:
        """The click of the waiting redirect is durable (or could not be made so)."""
        edge = self._edge
        if waiter.cancelled() or waiter.exception() is not None:
            answer = edge.refusal(edge.redirector.refused(NOT_RECORDED))
        else:
            edge.redirector.redirected()
            answer = edge.redirect(self._location)
        self._done_waiting(answer)

    def _answered(self, task: asyncio.Task) -> None:
        """The waiting redirect of a code the process cache missed has its answer."""
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.error("redirect failed", exc_info=task.exception())
            self._done_waiting(None)
            return
        answer = task.result()
        edge = self._edge
        self._done_waiting(edge.refusal(answer) if isinstance(answer, Refusal) else edge.redirect(answer))

    def _done_waiting(self, answer: bytes | None) -> None:
        self._waiting = False
        if self._transport is None:
            return  # the client left; its click is recorded all the same
        if answer is None:
            self.abort()  # a bug: no answer is better than a made-up one
            return
        self._write(answer)
        if self._edge.closing:
            self.abort()
        elif self._held:
            data = b"".join(self._held)
            self._held.clear()
            self._transport.resume_reading()
            self._serve(data)

    def _write(self, answer: bytes) -> None:
        self._transport.write(answer)
        self._last = self._loop.time()

    def _hand_over(self, data: bytes) -> None:
        """From now on aiohttp serves this connection, starting with ``data``."""
        transport = self._transport
        self._transport = None
        self._forget()
        handler = self._edge.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)

    def _check_idle(self) -> None:
        """Close a connection idle for the keep-alive timeout, as aiohttp does its own."""
        self._idle_timer = None
        if self._transport is None:
            return
        left = self._last + self._edge.keepalive_s - self._loop.time()
        if left <= 0 and not self._waiting:
            self.abort()
        else:
            self._idle_timer = self._loop.call_later(max(left, 1.0), self._check_idle)

    def close_if_idle(self) -> None:
        if not self._waiting:
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._forget()

    def _forget(self) -> None:
        self._edge.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None


class EdgeSite(web.BaseSite):
    """Like ``web.TCPSite`` (or ``web.SockSite`` with ``sock``), with ``EdgeConnection`` as the protocol."""

    def __init__(
        self, runner: web.AppRunner, host: str | None = None, port: int | None = None, *, http: dict,
        drain_timeout_s: float, sock: socket | None = None, reuse_port: bool = False, backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._sock = host, port, sock
        self._http, self._drain_timeout_s, self._reuse_port = http, drain_timeout_s, reuse_port
        self.edge: Edge | None = None

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2] if self._sock is not None else (self._host, self._port)
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        app = self._runner.app
        fixed = frozenset(r.canonical for r in app.router.resources() if "{" not in r.canonical)
        self.edge = Edge(app[REDIRECTOR], app[CLIENT_IP], self._runner.server, fixed, self._http)
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(self.edge.connection, sock=self._sock, backlog=self._backlog)
        else:
            self._server = await loop.create_server(
                self.edge.connection, self._host, self._port, backlog=self._backlog, reuse_port=self._reuse_port
            )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # no new connections
        if self.edge is not None:
            await self.edge.drain(self._drain_timeout_s)
        await super().stop()
