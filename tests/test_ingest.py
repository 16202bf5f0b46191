"""Ingest: stream -> ClickHouse, acknowledged only after the insert, nothing lost or doubled."""

# ruff: noqa: F811 - tests take the imported ``world`` fixture as an argument

from __future__ import annotations

import asyncio
from dataclasses import replace

from test_settle import now_ms, world  # noqa: F401 - the shared world fixture

from oros.events import STREAM_FIELD, Event, uuid7
from oros.migrate import migrate_clickhouse
from settler.run import settle_once
from tracker.ingest import Ingester


def events(n: int, campaign_id: str = "00000000-0000-0000-0000-0000000000aa") -> list[Event]:
    t = now_ms()
    return [Event(event_id=str(uuid7(t + i)), event_type="click", ts_ms=t + i, campaign_id=campaign_id,
                  ip="1.1.1.1", value="1.50") for i in range(n)]


async def append(redis, settings, evs: list[Event]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for e in evs:
            pipe.xadd(settings.keys.stream, {STREAM_FIELD: e.encode()})
        await pipe.execute()


def ch_count(ch, distinct: bool = False) -> int:
    return ch.query(f"SELECT {'uniqExact(event_id)' if distinct else 'count()'} FROM events").result_rows[0][0]


async def test_drain_once_inserts_acks_and_trims(settings, redis, ch):
    await append(redis, settings, events(250))
    ingester = Ingester(settings, "a", batch_size=100)
    try:
        assert await ingester.drain_once() == 250
        assert await ingester.drain_once() == 0
    finally:
        await ingester.close()
    assert ch_count(ch) == 250
    assert await redis.xlen(settings.keys.stream) == 0
    pending = await redis.xpending(settings.keys.stream, settings.keys.consumer_group)
    assert pending["pending"] == 0
    row = ch.query("SELECT toString(any(value)) FROM events").result_rows[0][0]
    assert row == "1.5"


async def test_poison_entries_go_to_dead_letter(settings, redis, ch):
    await append(redis, settings, events(3))
    await redis.xadd(settings.keys.stream, {STREAM_FIELD: b"{not json"})
    bad = events(1)[0]
    bad.event_type = "teleport"
    await append(redis, settings, [bad])
    ingester = Ingester(settings, "a")
    try:
        assert await ingester.drain_once() == 3
    finally:
        await ingester.close()
    dead = await redis.xrange(settings.keys.dead_letter)
    assert len(dead) == 2
    assert {b"reason", b"id", b"e"} <= set(dead[0][1])
    assert b"teleport" in dead[1][1][b"reason"]
    assert await redis.xlen(settings.keys.stream) == 0


async def test_killed_before_insert_is_reclaimed(settings, redis, ch):
    """Consumer a reads a batch and dies before inserting: b claims the idle entries and inserts them."""
    await append(redis, settings, events(40))
    dead = Ingester(settings, "a", batch_size=25)
    await dead._ensure_group()
    assert len(await dead._read(block_ms=None)) == 25  # delivered to a, never inserted
    await dead.close()
    survivor = Ingester(settings, "b", claim_idle_ms=0)
    try:
        assert await survivor.drain_once() == 40
    finally:
        await survivor.close()
    assert ch_count(ch) == 40
    assert (await redis.xpending(settings.keys.stream, settings.keys.consumer_group))["pending"] == 0


async def test_killed_after_insert_before_ack_collapses_replay(settings, redis, ch, world):
    """Consumer a inserts then dies before acknowledging: b re-inserts; nothing reaches money twice."""
    campaign = world.campaign(fund="100.00")
    creator = world.creator(campaign)
    clicks = [world.click(campaign, creator) for _ in range(30)]
    await append(redis, settings, clicks)
    dead = Ingester(settings, "a", batch_size=1000)
    await dead._ensure_group()
    entries = await dead._read(block_ms=None)
    world.put([Event.decode(fields[STREAM_FIELD]) for _, fields in entries[:17]])  # a partial insert, no ack
    await dead.close()
    survivor = Ingester(settings, "b", claim_idle_ms=0)
    try:
        assert await survivor.drain_once() == 30
    finally:
        await survivor.close()
    assert ch_count(ch, distinct=True) == 30
    report = await asyncio.to_thread(settle_once, settings)
    assert report["events_paid"] == 30 and report["amount_paid"] == "30.00"
    world.assert_books()


async def test_overdelivered_entries_are_dead_lettered(settings, redis, ch):
    await append(redis, settings, events(5))
    first = Ingester(settings, "a")
    await first._ensure_group()
    await first._read(block_ms=None)
    await first.close()
    # Two more consumers claim and die; the third sees the entries delivered too often.
    for name in ("b", "c"):
        claimer = Ingester(settings, name, claim_idle_ms=0, max_deliveries=10)
        await claimer._claim()
        await claimer.close()
    last = Ingester(settings, "d", claim_idle_ms=0, max_deliveries=2)
    try:
        assert await last.drain_once() == 0
    finally:
        await last.close()
    dead = await redis.xrange(settings.keys.dead_letter)
    assert len(dead) == 5 and dead[0][1][b"reason"].startswith(b"delivered 4 times")


async def test_clickhouse_outage_only_grows_the_stream(settings, redis, ch):
    """Inserts fail while the database is missing; nothing is acknowledged; when it returns the backlog drains."""
    down = replace(settings, clickhouse_database=settings.clickhouse_database + "_late")
    await append(redis, down, events(60))
    ingester = Ingester(down, "a", block_ms=50, retry_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(ingester.run(stop))
    try:
        await asyncio.sleep(1.0)
        assert await redis.xlen(down.keys.stream) == 60  # nothing dropped
        await append(redis, down, events(15))
        await asyncio.to_thread(migrate_clickhouse, down)  # ClickHouse is back
        for _ in range(200):
            if await redis.xlen(down.keys.stream) == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await ingester.close()
    from oros.connections import clickhouse_client

    late = clickhouse_client(down)
    try:
        assert ch_count(late) == 75
    finally:
        clickhouse_client(down, database="").command(f"DROP DATABASE IF EXISTS `{down.clickhouse_database}`")


async def test_trim_keeps_entries_pending_elsewhere(settings, redis, ch):
    """Only acknowledged entries are trimmed: a slow consumer's pending ones stay in the stream."""
    await append(redis, settings, events(40))
    slow = Ingester(settings, "slow", batch_size=25)
    await slow._ensure_group()
    held = await slow._read(block_ms=None)
    other = Ingester(settings, "other")  # will not claim: the entries are not idle for a minute
    try:
        assert await other.drain_once() == 15
        # Trimming stops below the oldest pending entry: acked entries after it wait with it.
        assert await redis.xlen(settings.keys.stream) == 40
        assert await slow._insert(held) == 25
        assert await redis.xlen(settings.keys.stream) == 0
    finally:
        await slow.close()
        await other.close()
    assert ch_count(ch) == 40
