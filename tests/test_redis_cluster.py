"""The tracker and ingest on a real Redis Cluster: a sharded stream, one-slot scripts, a master killed.

Three masters and three replicas on localhost (tests/redis_cluster.py), the stream in three shards
(``{events:0..2}``), appends confirmed by one replica (``WAIT 1``). The failover test SIGKILLs the
master of a shard a tracker worker appends to while clicks flow, waits for its replica to take
over, restarts the dead node (it rejoins as a replica, as under an orchestrator), and then proves
every click answered before, during and after is in ClickHouse exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from redis.crc import key_slot

from ingest.consumer import Ingester
from oros import apikeys, ratelimit, stream
from oros.connections import redis_client
from oros.links import LinkInfo, publish
from tracker.appender import Appender
from tracker.metrics import Metrics
from tracker.spool import Spool

import redis_cluster
from processes import free_port, stop_process, wait_until
from redis_cluster import LocalCluster

pytestmark = pytest.mark.skipif(not redis_cluster.available(), reason="redis-server and redis-cli are not installed")

SHARDS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    local = LocalCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield local
    local.stop()


@pytest.fixture
def cluster_settings(settings, cluster):
    return replace(settings, redis_url=cluster.url, redis_cluster=True, stream_shards=SHARDS, stream_replicas=1)


@contextlib.asynccontextmanager
async def tracker(settings, tmp_path: Path, workers: int = 2):
    port = free_port()
    env = {
        **os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
        "OROS_REDIS_CLUSTER": "true", "OROS_STREAM_SHARDS": str(settings.stream_shards),
        "OROS_STREAM_REPLICAS": str(settings.stream_replicas),
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",  # never opened by a tracker
        "OROS_DATA_DIR": str(tmp_path / "data"), "OROS_REDIS_PREFIX": settings.redis_prefix,
    }
    proc = subprocess.Popen([sys.executable, "-m", "oros_cli", "--log-level", "WARNING", "tracker",
                             "--workers", str(workers), "--port", str(port)], env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        # A connection per request: the kernel spreads them over both workers, however late one starts.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), connector=connector) as session:
            async def up() -> bool:
                try:
                    async with session.get(f"{base_url}/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(up, 60, "the tracker to start")
            yield session, base_url
    finally:
        stop_process(proc)


class Clicks:
    """Clients clicking ``code`` until stopped; each answered click id with when it was answered."""

    def __init__(self, session: aiohttp.ClientSession, url: str, concurrency: int = 16) -> None:
        self.session, self.url = session, url
        self.answered: list[tuple[float, str]] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client()) for _ in range(concurrency)]

    async def _client(self) -> None:
        while not self._stop.is_set():
            try:
                async with self.session.get(self.url, allow_redirects=False) as response:
                    if response.status == 302:
                        cid = dict(parse_qsl(urlsplit(response.headers["Location"]).query))["oros_cid"]
                        self.answered.append((time.monotonic(), cid))
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.01)

    async def until(self, n: int, what: str) -> None:
        async def enough() -> bool:
            return len(self.answered) >= n
        await wait_until(enough, 30, what)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def test_every_key_a_script_or_multi_touches_shares_one_slot(cluster_settings):
    keys = cluster_settings.keys
    for shard in keys.shards:
        names = [shard.stream, shard.dead_letter, shard.ingest_suspects, shard.clicks(1), shard.clicks(99)]
        assert len({key_slot(name.encode()) for name in names}) == 1, names
    assert len({key_slot(keys.shard(n).stream.encode()) for n in range(SHARDS)}) == SHARDS
    logins = [keys.limit("login-address", "10.0.0.1"), keys.limit("login-email", "ab" * 16)]
    assert len({key_slot(name.encode()) for name in logins}) == 1


async def test_clicks_conversions_and_logins_on_a_cluster(cluster_settings, world, pg, tmp_path, ch):
    campaign = world.campaign(objective="conversion")
    creator_id, link_id = world.creator(campaign)
    code = pg.execute("SELECT code FROM tracking_links WHERE id = %s", (link_id,)).fetchone()["code"]
    secret, prefix, key_hash = apikeys.generate()
    pg.execute("INSERT INTO api_keys (user_id, name, key_prefix, key_hash) VALUES (%s, 't', %s, %s)",
               (world.business_of(campaign), prefix, key_hash))
    redis = redis_client(cluster_settings)
    shards = cluster_settings.keys.shards

    async def two_shards_hold_clicks() -> bool:  # each worker appends to a shard of its own
        return sum([bool(await redis.xlen(shard.stream)) for shard in shards]) == 2

    async with tracker(cluster_settings, tmp_path) as (session, base_url):
        clicks = Clicks(session, f"{base_url}/{code}")
        await wait_until(two_shards_hold_clicks, 30, "both workers to append clicks")
        await clicks.stop()
        # A conversion finds its click in whichever shard the click's worker appended it to.
        headers = {"Authorization": f"Bearer {secret}"}
        order = {"click_id": clicks.answered[-1][1], "type": "conversion", "order_id": "A-1"}
        async with session.post(f"{base_url}/v1/conversions", json=order, headers=headers) as response:
            assert response.status == 202, await response.text()
            event_id = (await response.json())["event_id"]
        async with session.post(f"{base_url}/v1/conversions", json=order, headers=headers) as response:
            assert (response.status, (await response.json())["event_id"]) == (200, event_id)
        # A link changed: its cache entry (one slot) and the invalidation (PUBLISH, any node) reach
        # both workers well before their in-process cache would expire (30 s).
        moved = LinkInfo(link_id, code, campaign, creator_id, None, world.business_of(campaign),
                         "https://shop.example.com/moved", "active")
        await publish(redis, cluster_settings.keys, [code], {code: moved})

        async def both_workers_redirect_anew() -> bool:
            for _ in range(10):
                async with session.get(f"{base_url}/{code}", allow_redirects=False) as response:
                    if not response.headers["Location"].startswith(moved.destination_url):
                        return False
            return True

        await wait_until(both_workers_redirect_anew, 10, "the invalidation to reach every worker")

    try:
        # Both login windows in one script (CROSSSLOT without their shared hash tag).
        limits = {cluster_settings.keys.limit("login-address", "10.0.0.1"): 5,
                  cluster_settings.keys.limit("login-email", "ab" * 16): 5}
        slot = await ratelimit.reserve(redis, limits, 60)
        await slot.release(redis)
    finally:
        await redis.aclose()
    ingester = Ingester(cluster_settings, "t")
    try:
        await ingester.drain_once()
    finally:
        await ingester.close()
    held = {row[0] for row in ch.query("SELECT toString(event_id) FROM events").result_rows}
    assert {cid for _, cid in clicks.answered} | {event_id} <= held
    row = ch.query("SELECT campaign_id, link_id FROM events WHERE event_id = {id:UUID}",
                   parameters={"id": event_id}).result_rows[0]
    assert [str(value) for value in row] == [campaign, link_id]


async def test_an_append_no_replica_confirmed_is_not_acknowledged(cluster, cluster_settings, tmp_path):
    """A master whose replica stopped acknowledging: ``WAIT 1`` times out, so the append fails (the
    Stripe webhook answers 503) and the tracker spools the batch instead of calling it done."""
    keys = cluster_settings.keys
    redis = redis_client(cluster_settings)
    metrics = Metrics()
    appender = Appender(redis, keys, Spool(tmp_path / "spool", metrics), metrics, index_ttl_s=60, max_batch=100,
                        replicas=1, wait_ms=200)
    appender.start()
    await appender.append(b'{"n":0}')  # connected: a fresh prefix's first appender draws shard 0
    shard = keys.shard(0)
    replica = cluster.replica_of(cluster.master_of(shard.stream))
    cluster.pause(replica)
    try:
        with pytest.raises(stream.NotReplicated):
            await stream.append(redis, keys, [b'{"n":1}'], replicas=1, wait_ms=200)
        await stream.append(redis, keys, [b'{"n":2}'])  # without WAIT, the master alone acknowledges it
        await appender.append(b'{"n":3}')
        assert (appender.redis_ok, appender._spool.depth()) == (False, 1)
    finally:
        cluster.resume(replica)
    assert await appender.replay_spool() == 1
    assert {b'{"n":0}', b'{"n":3}'} <= {fields[b"e"] for _, fields in await redis.xrange(shard.stream)}
    await appender.close()
    await redis.aclose()


async def test_a_master_killed_loses_no_acknowledged_click(cluster, cluster_settings, world, pg, tmp_path, ch):
    campaign = world.campaign()
    _, link_id = world.creator(campaign)
    code = pg.execute("SELECT code FROM tracking_links WHERE id = %s", (link_id,)).fetchone()["code"]
    victim_key = cluster_settings.keys.shard(0).stream  # the first worker to connect draws shard 0
    async with tracker(cluster_settings, tmp_path) as (session, base_url):
        clicks = Clicks(session, f"{base_url}/{code}")
        await clicks.until(300, "300 clicks before the kill")
        victim = cluster.master_of(victim_key)
        cluster.kill(victim)
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.wait_failed_over, victim_key, victim)
        await asyncio.to_thread(cluster.restart, victim)
        recovered_at = time.monotonic()
        await clicks.until(len(clicks.answered) + 300, "300 clicks after the failover")
        await clicks.stop()
        answered = {cid for _, cid in clicks.answered}
        ingester = Ingester(cluster_settings, "t")

        async def all_in_clickhouse() -> bool:  # the spooled ones arrive as their worker replays them
            await ingester.drain_once()
            held = ch.query("SELECT toString(event_id) FROM events").result_rows
            return answered <= {row[0] for row in held}

        try:
            await wait_until(all_in_clickhouse, 30, "every answered click in ClickHouse")
        finally:
            await ingester.close()

    before = [cid for at, cid in clicks.answered if at < killed_at]
    during = [cid for at, cid in clicks.answered if killed_at <= at < recovered_at]
    after = [cid for at, cid in clicks.answered if at >= recovered_at]
    assert before and during and after, (len(before), len(during), len(after))
    # Exactly once: a batch spooled after its append reached the stream unconfirmed is in the stream twice.
    counts = ch.query("SELECT count(), uniqExact(event_id) FROM events FINAL").result_rows[0]
    assert counts == (len(answered), len(answered))
