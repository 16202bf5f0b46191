"""Delivering webhooks to a real HTTP receiver that fails, hangs, answers garbage, and recovers.

The receiver is an aiohttp server on a loopback port, so these deliverers run
with local receivers allowed (OROS_WEBHOOKS_ALLOW_PRIVATE); the refusal of
such targets is tested with it off. The deliverer's clock is injected: each
``deliver_due()`` is one pass at the clock's time. Signatures are checked the
way docs/webhooks.md tells a receiver to, not with our own signing code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import psycopg
import pytest
from aiohttp import web

from admin_api.app import create_app
from admin_api.auth import issue_token
from oros.webhooks import TOLERANCE_S
from settler.run import settle_once
from webhooks import schedule
from webhooks.addresses import RefusedAddress
from webhooks.deliver import LEASE_S, RETENTION, Deliverer

from factories import BUSINESS_EVENTS, now_ms, subscribe


def verify(header: str, body: bytes, secret: str, now: float) -> bool:
    """docs/webhooks.md's recipe: the HMAC of "<t>." + body under the secret, t within the tolerance."""
    pairs = [part.split("=", 1) for part in header.split(",")]
    timestamp = int(next(v for k, v in pairs if k == "t"))
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(now - timestamp) <= TOLERANCE_S and any(
        hmac.compare_digest(expected, v) for k, v in pairs if k == "v1")


class Receiver:
    """Answers each request with the next scripted behaviour (the last one repeats); records what came."""

    def __init__(self) -> None:
        self.script: list[str] = ["ok"]
        self.requests: list[tuple[dict, bytes]] = []
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((dict(request.headers), await request.read()))
        behaviour = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if behaviour == "hang":
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 5)
        if behaviour == "redirect":
            raise web.HTTPFound("http://127.0.0.1:9/elsewhere")
        if behaviour == "garbage":
            return web.Response(status=500, body=b"\xff\xfe\x00 not utf-8 \x00\xc3\x28" * 3)
        if behaviour == "huge":
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(64):
                await response.write(b"x" * 65536)
            return response
        return web.Response(status=500 if behaviour == "fail" else 200, text=behaviour)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def receiver(aiohttp_server):
    receiving = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiving.handle)
    server = await aiohttp_server(app)
    receiving.url = str(server.make_url("/hook"))
    yield receiving
    receiving.release.set()


@pytest.fixture
def local(webhooks_settings):
    """The deliverer as it runs in compose: a login holding only ``oros_webhooks`` (0168), local receivers allowed."""
    return replace(webhooks_settings, webhooks_allow_private=True)


@pytest.fixture
async def deliverers(local):
    made: list[Deliverer] = []

    async def make(settings=local, **kwargs) -> Deliverer:
        deliverer = Deliverer(settings, **kwargs)
        await deliverer.open()
        made.append(deliverer)
        return deliverer

    yield make
    for deliverer in made:
        await deliverer.close()


def credit(pg, user: str, amount: str = "5.00") -> None:
    """A fact with a webhook: money credited to the user (earning.credited, written by Postgres)."""
    pg.execute("""INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, amount, direction, status)
                  SELECT w, t, 'adjustment', %(a)s, d, 'settled'
                    FROM (VALUES ((SELECT id FROM wallets WHERE user_id = %(u)s AND purpose = 'main'), 'credit'),
                                 (oros_platform_wallet('clearing'), 'debit')) AS legs(w, d),
                         (SELECT gen_random_uuid() AS t) AS tr""", {"a": amount, "u": user})


def secret_of(pg, endpoint: str) -> str:
    return pg.execute("SELECT secret FROM webhook_endpoint_secrets WHERE endpoint_id = %s AND expires_at IS NULL",
                      (endpoint,)).fetchone()["secret"]


def delivery(pg) -> dict:
    return pg.execute("SELECT * FROM webhook_deliveries").fetchone()


async def listing(aiohttp_client, settings, user: str, endpoint: str) -> list[dict]:
    api = await aiohttp_client(create_app(settings))
    resp = await api.get(f"/v1/webhook-endpoints/{endpoint}/deliveries",
                         headers={"Authorization": f"Bearer {issue_token(settings, user)}"})
    assert resp.status == 200, await resp.text()
    return (await resp.json())["items"]


async def test_fails_then_times_out_then_recovers_with_one_event_id(world, pg, receiver, deliverers, aiohttp_client,
                                                                      settings):
    creator = world.user("creator")
    endpoint = subscribe(pg, creator, ["earning.credited"], url=receiver.url)
    credit(pg, creator, "12.34")
    created = delivery(pg)
    clock = Clock(created["created_at"])
    receiver.script = ["fail", "hang", "ok"]
    deliverer = await deliverers(clock=clock, rng=lambda: 0.0, timeout_s=0.5)

    [first] = await deliverer.deliver_due()
    assert (first.outcome, first.status_code, first.error) == ("retrying", 500, "HTTP 500")
    assert first.next_attempt_at == created["created_at"] + timedelta(seconds=30)
    clock.now += timedelta(seconds=29)
    assert await deliverer.deliver_due() == []  # not due yet
    clock.now = first.next_attempt_at
    [second] = await deliverer.deliver_due()
    assert (second.outcome, second.status_code, second.error) == ("retrying", None, "timed out after 0.5 s")
    assert second.next_attempt_at == clock.now + timedelta(seconds=60)  # doubled
    clock.now = second.next_attempt_at
    [third] = await deliverer.deliver_due()
    assert (third.outcome, third.status_code) == ("delivered", 200)
    clock.now += timedelta(hours=2)
    assert await deliverer.deliver_due() == []

    secret = secret_of(pg, endpoint)
    assert len(receiver.requests) == 3
    bodies = {body for _, body in receiver.requests}
    assert len(bodies) == 1  # the same bytes every time
    event = json.loads(bodies.pop())
    assert event["id"] == str(created["event_id"]) and event["type"] == "earning.credited"
    assert event["data"]["amount"] == "12.34" and event["created_at"].endswith("Z")
    sent_at = [created["created_at"], first.next_attempt_at, second.next_attempt_at]
    for (headers, body), attempt, at in zip(receiver.requests, ("1", "2", "3"), sent_at, strict=True):
        assert headers["OROS-Event-Id"] == event["id"] and headers["OROS-Event-Type"] == "earning.credited"
        assert headers["OROS-Delivery-Attempt"] == attempt and headers["Content-Type"] == "application/json"
        assert verify(headers["OROS-Signature"], body, secret, at.timestamp())
        assert not verify(headers["OROS-Signature"], body + b" ", secret, at.timestamp())
        assert not verify(headers["OROS-Signature"], body, secret + "x", at.timestamp())
    # The signature binds the time: replayed an hour later it is refused.
    assert not verify(receiver.requests[0][0]["OROS-Signature"], receiver.requests[0][1], secret,
                      created["created_at"].timestamp() + 3600)

    [listed] = await listing(aiohttp_client, settings, creator, endpoint)
    assert (listed["status"], listed["attempt_count"], listed["event_id"]) == ("delivered", 3, event["id"])
    assert [(a["attempt"], a["status_code"], a["error"], a["response_excerpt"]) for a in listed["attempts"]] == [
        (1, 500, "HTTP 500", "fail"), (2, None, "timed out after 0.5 s", None), (3, 200, None, "ok")]
    assert deliverer.metrics.value("oros_webhooks_attempts_total", outcome="retrying") == 2
    assert deliverer.metrics.value("oros_webhooks_attempts_total", outcome="delivered") == 1


async def test_a_delivery_failing_all_day_is_failed_at_the_deadline(world, pg, receiver, deliverers, aiohttp_client,
                                                                     settings):
    creator = world.user("creator")
    endpoint = subscribe(pg, creator, ["earning.credited"], url=receiver.url)
    credit(pg, creator)
    created = delivery(pg)
    deadline = created["created_at"] + timedelta(hours=24)
    assert created["give_up_at"] == deadline
    receiver.script = ["fail"]
    clock = Clock(created["created_at"])
    deliverer = await deliverers(clock=clock, rng=lambda: 0.5)
    assert [a.outcome for a in await deliverer.deliver_due()] == ["retrying"]
    clock.now = deadline - timedelta(seconds=20)
    [late] = await deliverer.deliver_due()
    assert late.outcome == "retrying" and late.next_attempt_at == deadline  # never past the day
    clock.now = deadline
    [last] = await deliverer.deliver_due()
    assert (last.outcome, last.next_attempt_at) == ("failed", None)
    clock.now += timedelta(days=2)
    assert await deliverer.deliver_due() == []
    [listed] = await listing(aiohttp_client, settings, creator, endpoint)
    assert (listed["status"], listed["attempt_count"], len(listed["attempts"])) == ("failed", 3, 3)
    assert len(receiver.requests) == 3
    assert deliverer.metrics.value("oros_webhooks_attempts_total", outcome="failed") == 1


def test_backoff_doubles_with_jitter_up_to_an_hour():
    assert [schedule.retry_delay_s(n, 0.0) for n in range(1, 10)] == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert schedule.retry_delay_s(1, 0.999) == pytest.approx(30 * (1 - schedule.JITTER * 0.999))
    assert schedule.retry_delay_s(10_000, 0.0) == schedule.MAX_DELAY_S
    start = datetime(2026, 1, 1)
    now, attempts, draws = start, 1, iter([i / 50 % 1 for i in range(500)])
    while (now := schedule.next_attempt_at(attempts, now, start + timedelta(days=1), lambda: next(draws))):
        attempts += 1
    assert 25 <= attempts <= 60  # a day of retries, about hourly after the first hour


async def test_private_targets_are_refused_when_connecting(world, pg, receiver, deliverers, local):
    creator = world.user("creator")
    subscribe(pg, creator, ["earning.credited"], url=receiver.url)  # allowed when it was made (a dev setting)
    credit(pg, creator)
    strict = await deliverers(replace(local, webhooks_allow_private=False))
    [attempt] = await strict.deliver_due()
    assert attempt.outcome == "retrying" and attempt.error.startswith("refused: the URL must")
    assert receiver.requests == []
    # A name is judged by the addresses it resolves to, when connecting (DNS may have changed since).
    with pytest.raises(aiohttp.ClientConnectorError) as refused:
        await strict._session.post(receiver.url.replace("127.0.0.1", "localhost"), data=b"{}")
    assert isinstance(refused.value.os_error, RefusedAddress) and receiver.requests == []


async def test_a_dead_deliverers_lease_expires_and_two_never_send_one_delivery_twice(world, pg, receiver,
                                                                                     deliverers):
    creator = world.user("creator")
    subscribe(pg, creator, ["earning.credited"], url=receiver.url)
    credit(pg, creator)
    clock = Clock(delivery(pg)["created_at"])
    dead, alive = await deliverers(clock=clock), await deliverers(clock=clock)
    [claimed] = await dead._claim(10)  # then it dies: no attempt, no record
    assert await alive.deliver_due() == []  # leased
    clock.now += timedelta(seconds=LEASE_S)
    [attempt] = await alive.deliver_due()
    assert attempt.outcome == "delivered" and attempt.event_id == claimed["event_id"]
    late = await dead._record(claimed, clock.now, 0.1, 500, "", None)  # the dead one comes back
    assert late.outcome == "lease_lost"
    row = delivery(pg)
    assert (row["status"], row["attempt_count"]) == ("delivered", 1)

    for _ in range(30):
        credit(pg, creator, "1.00")
    clock.now += timedelta(seconds=1)
    done = await asyncio.gather(dead.deliver_due(), alive.deliver_due())
    assert sum(len(d) for d in done) == 30
    ids = [headers["OROS-Event-Id"] for headers, _ in receiver.requests[1:]]
    assert len(ids) == len(set(ids)) == 30


async def test_receivers_that_redirect_babble_or_flood_are_recorded_not_followed(world, pg, receiver, deliverers,
                                                                                  aiohttp_client, settings):
    creator = world.user("creator")
    endpoint = subscribe(pg, creator, ["earning.credited"], url=receiver.url)
    receiver.script = ["redirect", "garbage", "huge"]
    for _ in range(3):
        credit(pg, creator)
        deliverer = await deliverers(clock=Clock(delivery(pg)["created_at"] + timedelta(minutes=5)))
        await deliverer.deliver_due()
    attempts = {d["attempts"][0]["status_code"]: d["attempts"][0]
                for d in await listing(aiohttp_client, settings, creator, endpoint)}
    assert attempts[302]["error"] == "HTTP 302 (redirects are not followed)"
    assert "\x00" not in attempts[500]["response_excerpt"] and "not utf-8" in attempts[500]["response_excerpt"]
    assert attempts[200]["error"] is None and len(attempts[200]["response_excerpt"]) == 500
    assert len(receiver.requests) == 3


async def test_a_deleted_endpoint_gets_nothing_and_a_rotated_one_both_signatures(world, pg, receiver, deliverers):
    creator = world.user("creator")
    gone = subscribe(pg, creator, ["earning.credited"], url=receiver.url + "?gone")
    kept = subscribe(pg, creator, ["earning.credited"], url=receiver.url)
    old = secret_of(pg, kept)
    pg.execute("UPDATE webhook_endpoint_secrets SET expires_at = now() + interval '1 hour' WHERE endpoint_id = %s",
               (kept,))
    pg.execute("INSERT INTO webhook_endpoint_secrets (endpoint_id, secret) VALUES (%s, 'whsec_the_new_one_' ||"
               " repeat('n', 32))", (kept,))
    credit(pg, creator)
    pg.execute("UPDATE webhook_endpoints SET disabled_at = now() WHERE id = %s", (gone,))  # deleted meanwhile
    deliverer = await deliverers(clock=Clock(datetime.now().astimezone()))
    outcomes = sorted(a.outcome for a in await deliverer.deliver_due())
    assert outcomes == ["canceled", "delivered"]
    [(headers, body)] = receiver.requests
    signature, at = headers["OROS-Signature"], time.time()
    assert signature.count("v1=") == 2
    assert verify(signature, body, old, at) and verify(signature, body, secret_of(pg, kept), at)


async def test_the_deliverers_login_prunes_what_is_old_and_reaches_nothing_of_the_books(world, pg, receiver,
                                                                                         deliverers, local):
    creator = world.user("creator")
    subscribe(pg, creator, ["earning.credited"], url=receiver.url)
    credit(pg, creator)
    clock = Clock(datetime.now().astimezone())
    deliverer = await deliverers(clock=clock)
    [attempt] = await deliverer.deliver_due()
    assert attempt.outcome == "delivered"
    clock.now += RETENTION + timedelta(minutes=1)
    assert await deliverer.prune() == 1  # its attempts go with it (the cascade runs as the owner)
    assert pg.execute("SELECT count(*) AS n FROM webhook_attempts").fetchone()["n"] == 0

    with psycopg.connect(local.database_url, autocommit=True) as conn:
        for statement in ("SELECT * FROM ledger_entries", "SELECT * FROM wallets", "SELECT email FROM users",
                          "SELECT * FROM events", "SELECT * FROM pixel_secrets",
                          "SELECT owner_id FROM webhook_endpoints",
                          "INSERT INTO webhook_deliveries (event_id, endpoint_id, owner_id, event_type, payload)"
                          " VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'x', '{}')",
                          "UPDATE webhook_endpoints SET url = 'http://example.com/'",
                          "UPDATE webhook_deliveries SET payload = '{}'",
                          "SELECT oros_release_holds(now())", "CREATE TEMP TABLE t (id int)",
                          f'SET ROLE "{pg.execute("SELECT current_user AS u").fetchone()["u"]}"'):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


async def test_a_settlement_reaches_the_business_through_the_running_deliverer(world, pg, receiver, deliverers):
    """End to end: the settler commits, the outbox row is there, the deliverer (real clock) posts it."""
    campaign = world.campaign(objective="sale", payout="3.00")
    click = world.click(campaign, world.creator(campaign), ts_ms=now_ms() - 60_000)
    sale = world.conversion(click, kind="sale", order_id="S-1", value="30.00")
    world.put([click, sale])
    endpoint = subscribe(pg, world.business_of(campaign), BUSINESS_EVENTS, url=receiver.url)
    deliverer = await deliverers(poll_s=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(deliverer.run(stop))
    try:
        await asyncio.to_thread(settle_once, world.settings)
        deadline = time.monotonic() + 30
        while len(receiver.requests) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
    events = {json.loads(body)["type"]: json.loads(body) for _, body in receiver.requests}
    assert set(events) == {"conversion.recorded", "settlement.completed"}
    assert events["conversion.recorded"]["data"]["id"] == sale.event_id
    assert events["conversion.recorded"]["data"]["value"] == "30.00"
    for headers, body in receiver.requests:
        assert verify(headers["OROS-Signature"], body, secret_of(pg, endpoint), time.time())
    assert {r["status"] for r in pg.execute("SELECT status FROM webhook_deliveries")} == {"delivered"}


class _Hook(http.server.BaseHTTPRequestHandler):
    """A receiver another stack implements (the standard library's), for the process test."""

    received: list[bytes] = []

    def do_POST(self):  # the standard library's name
        self.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_oros_webhooks_process_delivers_serves_metrics_and_stops_on_sigterm(world, pg, cli_env, spawn, port,
                                                                            monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        creator = world.user("creator")
        subscribe(pg, creator, ["earning.credited"], url=f"http://127.0.0.1:{server.server_port}/")
        monkeypatch.setenv("OROS_WEBHOOKS_ALLOW_PRIVATE", "true")
        metrics_port = port()
        proc = spawn([str(Path(sys.executable).with_name("oros")), "webhooks", "--metrics-port", str(metrics_port)],
                     stderr=subprocess.PIPE, env=dict(os.environ))
        credit(pg, creator, "4.20")
        deadline = time.monotonic() + 60
        while not _Hook.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert json.loads(_Hook.received[0])["data"]["amount"] == "4.20"
        while time.monotonic() < deadline:
            if delivery(pg)["status"] == "delivered":
                break
            time.sleep(0.1)
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert 'oros_webhooks_attempts_total{outcome="delivered"} 1.0' in page
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert b'"webhook attempt"' in proc.stderr.read()
    finally:
        server.shutdown()
        server.server_close()
