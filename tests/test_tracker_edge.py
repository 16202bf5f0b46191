"""The tracker's edge (tracker/edge.py): redirects answered on its own connections, everything else by aiohttp.

Each test speaks raw HTTP/1.1 over keep-alive connections, so it knows which
bytes arrive in which chunk, and checks which side answered: a connection the
edge still serves is in ``site.edge.connections``; a handed-over one is not.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import time
from dataclasses import replace
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis.asyncio as aioredis

from oros.events import uuid7_ms
from tracker.app import create_app

from factories import make_link
from redis_server import RedisServer
from tracker_calls import BROWSER, stream_events

pytestmark = pytest.mark.usefixtures("pg")


class Conn:
    """One raw keep-alive connection: write bytes, read whole responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, client) -> Conn:
        return cls(*await asyncio.open_connection(client.host, client.port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout_s)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        body = await self.reader.readexactly(int(headers.get("Content-Length", 0)))
        return int(lines[0].split(" ")[1]), headers, body

    async def closed(self, timeout_s: float = 5.0) -> bool:
        return await asyncio.wait_for(self.reader.read(), timeout_s) == b""

    def close(self) -> None:
        self.writer.close()


def get(target: str, *headers: str, method: str = "GET") -> bytes:
    return (f"{method} {target} HTTP/1.1\r\nHost: t\r\nUser-Agent: {BROWSER}\r\n"
            + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()


def cid(headers: dict[str, str]) -> str:
    return dict(parse_qsl(urlsplit(headers["Location"]).query))["oros_cid"]


@pytest.fixture
async def served(settings, tracker_client):
    return await tracker_client(create_app(settings))


def on_edge(client) -> int:
    """How many connections the edge serves itself (not handed over to aiohttp)."""
    return len(client.server.site.edge.connections)


async def test_a_redirect_on_the_edge_and_on_aiohttp_look_the_same_and_both_are_recorded(served, pg, redis, settings):
    link = make_link(pg)
    conn = await Conn.open(served)
    try:
        await conn.send(get(f"/{link['code']}?utm_source=ig&x=%20y", "Referer: https://ig.example/p"))
        status, edge_headers, body = await conn.response()
        assert (status, body, on_edge(served)) == (302, b"", 1)
        await conn.send(get("/healthz"))  # a fixed route: the connection is aiohttp's from now on
        assert (await conn.response())[0] == 200 and on_edge(served) == 0
        await conn.send(get(f"/{link['code']}?utm_source=ig&x=%20y", "Referer: https://ig.example/p"))
        status, app_headers, body = await conn.response()
        assert (status, body) == (302, b"")
    finally:
        conn.close()
    assert list(edge_headers) == list(app_headers) == ["Location", "Cache-Control", "Content-Length", "Date", "Server"]
    for name in ("Cache-Control", "Content-Length", "Server"):
        assert edge_headers[name] == app_headers[name]
    without_cid = [headers["Location"].replace(cid(headers), "") for headers in (edge_headers, app_headers)]
    assert without_cid[0] == without_cid[1]
    assert edge_headers["Location"] == f"https://shop.example.com/p/1?ref=oros&utm_source=ig&x=%20y&oros_cid={cid(edge_headers)}"
    first, second = await stream_events(redis, settings)
    assert (first.event_id, second.event_id) == (cid(edge_headers), cid(app_headers))
    assert (first.user_agent, first.referrer, first.metadata, first.bot_reason, first.ip) == (
        BROWSER, "https://ig.example/p", {"utm_source": "ig"}, None, "127.0.0.1")
    assert first.ts_ms == uuid7_ms(first.event_id)
    assert (first.link_id, first.campaign_id, first.creator_id) == (link["link"], link["campaign"], link["creator"])
    # The edge counts its answers where aiohttp's route does.
    metrics = (await served.get("/metrics")).text
    assert 'oros_tracker_requests_total{route="redirect",status="302"} 2.0' in await metrics()


async def test_the_edge_answers_misses_refusals_and_head(served, pg, redis, settings):
    link = make_link(pg)
    conn = await Conn.open(served)
    try:
        await conn.send(get(f"/{link['code']}"))  # not in the process cache yet: resolved, then answered
        assert (await conn.response())[0] == 302
        for _ in range(2):  # an unknown code, then (maybe) from the negative cache
            await conn.send(get("/nosuchcode"))
            status, headers, body = await conn.response()
            assert (status, body, headers["Cache-Control"], headers["Content-Type"]) == (
                404, b"no such link", "no-store", "text/plain; charset=utf-8")
        await conn.send(get("/x"))  # not a code at all
        assert (await conn.response())[0] == 404
        await conn.send(get(f"/{link['code']}?q={'x' * 2100}"))
        status, _, body = await conn.response()
        assert (status, body) == (414, b"query string longer than 2048 bytes")
        await conn.send(get(f"/{link['code']}", method="HEAD"))
        status, headers, body = await conn.response()
        assert (status, body) == (302, b"") and headers["Location"].endswith(cid(headers))
        assert on_edge(served) == 1
    finally:
        conn.close()
    events = await stream_events(redis, settings)
    assert [(e.source, e.bot_reason) for e in events] == [("redirect", None), ("head", "head")]


async def test_what_is_not_a_plain_redirect_is_handed_to_aiohttp(served, pg, redis, settings):
    link = make_link(pg)
    code = link["code"]
    cases = [
        (get(f"/{code}", "Connection: close"), 302, True),  # aiohttp answers, then closes
        (get(f"/{code}").replace(b"HTTP/1.1", b"HTTP/1.0"), 302, True),
        (get(f"/{code}", "Content-Length: 4") + b"abcd", 302, False),  # a body
        (get(f"/{code}", "Bad\x01Header: y"), 400, True),  # malformed: aiohttp's parser refuses it, as before
        (get(f"/{code}?{'q' * 5000}"), 400, True),  # the request line over MAX_LINE_BYTES
        (get(f"/{code}", "Upgrade: websocket", "Connection: Upgrade"), 302, False),
        (get("/" + code.replace(code[0], f"%{ord(code[0]):02X}", 1)), 302, False),  # a percent-encoded code
        (b"POST /v1/conversions HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}", 401, False),
    ]
    answered = 0
    for request, status, closes in cases:
        conn = await Conn.open(served)
        try:
            await conn.send(request)
            got, headers, _ = await conn.response()
            assert (request[:40], got) == (request[:40], status)
            answered += got == 302
            assert on_edge(served) == 0
            if closes:
                assert await conn.closed()
        finally:
            conn.close()
    assert len(await stream_events(redis, settings)) == answered


async def test_pipelined_split_and_held_requests_are_answered_once_each_in_order(settings, pg, tracker_client,
                                                                                 tmp_path):
    server = RedisServer(tmp_path)  # our own, to stop and resume: stopping the shared one would stall other tests
    await server.start()
    try:
        settings = replace(settings, redis_url=server.url)
        client = await tracker_client(create_app(settings))
        first, second = make_link(pg), make_link(pg, destination="https://other.example/x")
        warm = await Conn.open(client)
        for link in (first, second):  # into the process cache
            await warm.send(get(f"/{link['code']}"))
            assert (await warm.response())[0] == 302
        warm.close()

        async def two_answers(conn: Conn) -> list[str]:
            return [urlsplit((await conn.response())[1]["Location"]).netloc for _ in range(2)]

        # Two requests in one chunk: aiohttp answers both.
        conn = await Conn.open(client)
        await conn.send(get(f"/{first['code']}") + get(f"/{second['code']}"))
        assert await two_answers(conn) == ["shop.example.com", "other.example"]
        conn.close()
        # One request in two chunks.
        conn = await Conn.open(client)
        request = get(f"/{first['code']}")
        await conn.send(request[:20])
        await asyncio.sleep(0.05)
        await conn.send(request[20:])
        assert (await conn.response())[0] == 302
        conn.close()
        # The second request arrives while the first waits for Redis: it is held, then answered after it.
        conn = await Conn.open(client)
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            await conn.send(get(f"/{first['code']}"))
            await asyncio.sleep(0.2)
            await conn.send(get(f"/{second['code']}"))
            await asyncio.sleep(0.2)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert await two_answers(conn) == ["shop.example.com", "other.example"]
        assert on_edge(client) == 1
        conn.close()
        async with aioredis.Redis.from_url(server.url) as own:
            events = await stream_events(own, settings)
        assert len(events) == 2 + 2 + 1 + 2 and len({e.event_id for e in events}) == len(events)
    finally:
        server.stop()


async def test_stopping_answers_a_waiting_redirect_and_closes_idle_connections(settings, pg, tracker_client, tmp_path):
    server = RedisServer(tmp_path)
    await server.start()
    try:
        client = await tracker_client(create_app(replace(settings, redis_url=server.url)))
        link = make_link(pg)
        idle, waiting = await Conn.open(client), await Conn.open(client)
        await idle.send(get(f"/{link['code']}"))
        assert (await idle.response())[0] == 302
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            await waiting.send(get(f"/{link['code']}"))
            await asyncio.sleep(0.2)
            stopping = asyncio.create_task(client.server.site.stop())
            assert await idle.closed()
            assert not stopping.done()
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        status, headers, _ = await waiting.response()
        assert status == 302
        await stopping
        assert await waiting.closed()
        async with aioredis.Redis.from_url(server.url) as own:
            assert cid(headers) in {e.event_id for e in await stream_events(own, settings)}
    finally:
        server.stop()


async def test_an_idle_edge_connection_closes_after_the_keepalive_timeout(settings, pg, tracker_client):
    client = await tracker_client(create_app(settings), keepalive_timeout=0.3)
    link = make_link(pg)
    conn = await Conn.open(client)
    await conn.send(get(f"/{link['code']}"))
    assert (await conn.response())[0] == 302
    started = time.monotonic()
    assert await conn.closed()
    assert time.monotonic() - started < 3
    assert on_edge(client) == 0


async def test_header_bytes_that_are_not_utf8_are_recorded_on_the_edge(served, pg, redis, settings):
    link = make_link(pg)
    conn = await Conn.open(served)
    try:
        await conn.send(get(f"/{link['code']}").replace(BROWSER.encode(), b"Mozilla/5.0 (caf\xe9)"))
        assert (await conn.response())[0] == 302 and on_edge(served) == 1
    finally:
        conn.close()
    [event] = await stream_events(redis, settings)
    assert event.user_agent == "Mozilla/5.0 (caf\ufffd)"


async def test_no_header_can_be_injected_through_a_destination_or_a_query(served, pg):
    """The edge writes the Location's bytes itself: CR and LF from a destination put there by SQL (the admin API
    refuses them) are dropped by urlsplit, and the passed-through query is percent-encoded."""
    link = make_link(pg, destination="https://shop.example.com/p/1?ref=oros\r\nSet-Cookie: a=b#x\r\ny")
    conn = await Conn.open(served)
    try:
        await conn.send(get(f"/{link['code']}?utm_source=%0D%0ASet-Cookie:%20c=d&q=\"<>"))
        status, headers, _ = await conn.response()
    finally:
        conn.close()
    assert status == 302 and on_edge(served) == 1
    assert "Set-Cookie" not in headers
    assert headers["Location"] == (
        "https://shop.example.com/p/1?ref=orosSet-Cookie: a=b&utm_source=%0D%0ASet-Cookie:%20c=d&q=%22%3C%3E"
        f"&oros_cid={cid(headers)}#xy"
    )


async def test_requests_cut_anywhere_are_answered_once_each_in_order(settings, pg, tracker_client, tmp_path):
    """A hostile or unlucky client: a keep-alive stream of mixed requests, cut into chunks at random places
    (a chunk may end mid-line or hold several requests), half the time with Redis stopped after the first
    chunk, so the rest arrives while a redirect waits; the answers come back once each, in order."""
    server = RedisServer(tmp_path)
    await server.start()
    try:
        client = await tracker_client(create_app(replace(settings, redis_url=server.url)))
        first, second = make_link(pg), make_link(pg, destination="https://other.example/x")
        kinds = [
            (get(f"/{first['code']}?utm_source=a"), 302, "shop.example.com"),
            (get(f"/{second['code']}"), 302, "other.example"),
            (get(f"/{first['code']}", method="HEAD"), 302, "shop.example.com"),
            (get("/healthz"), 200, None),
            (get("/nosuchcode"), 404, None),
        ]
        rng = random.Random(18)
        clicks = 0
        for round_ in range(8):
            sequence = [kinds[0]] + [rng.choice(kinds) for _ in range(7)]
            stream = b"".join(request for request, _, _ in sequence)
            ends = list(itertools.accumulate(len(request) for request, _, _ in sequence))[:-1]
            # Mostly between requests (the edge serves those, and holds what comes while one waits), once anywhere.
            cuts = sorted({*rng.sample(ends, 5), rng.randrange(1, len(stream))})
            chunks = [stream[start:end] for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
            stop = round_ % 2 == 0
            conn = await Conn.open(client)
            try:
                await conn.send(chunks[0])
                await asyncio.sleep(0.05)
                if stop:
                    os.kill(server.proc.pid, signal.SIGSTOP)
                try:
                    for chunk in chunks[1:]:
                        await conn.send(chunk)
                        await asyncio.sleep(0.01)
                finally:
                    if stop:
                        os.kill(server.proc.pid, signal.SIGCONT)
                for _, status, netloc in sequence:
                    got, headers, _ = await conn.response()
                    assert got == status
                    if netloc is not None:
                        assert urlsplit(headers["Location"]).netloc == netloc
                        clicks += 1
            finally:
                conn.close()
        async with aioredis.Redis.from_url(server.url) as own:
            assert len(await stream_events(own, settings)) == clicks
    finally:
        server.stop()
