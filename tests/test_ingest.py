"""Ingest: stream -> ClickHouse, acknowledged only after the insert, nothing lost or doubled.

A poison entry never stops ingest: the entries ClickHouse refuses are
dead-lettered with its reason and everything else goes in, while an outage
only makes the stream wait. "ClickHouse fails" is the real engine failing an
insert: a missing database, a closed port, or a materialized view that
throws for one marked event (``trap``), which ingest must take for an outage
(it is no data error) wherever it falls in a split.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import aiohttp
import pytest

from ingest.consumer import Ingester
from ingest.writer import ClickHouseUnavailable
from oros import probes
from oros.connections import clickhouse_client
from oros.events import STREAM_FIELD, TEXT_LIMITS, Event
from oros.migrate import migrate_clickhouse
from settler.run import settle_once

from ingest_stream import (
    TRAP_UA,
    append,
    clear_trap,
    dead_letters,
    events,
    pending,
    read_once,
    refused_by_clickhouse_only,
    run_until,
    set_trap,
)
from processes import free_port


def ch_count(ch, distinct: bool = False) -> int:
    return ch.query(f"SELECT {'uniqExact(event_id)' if distinct else 'count()'} FROM events").result_rows[0][0]


def inserts(ingester: Ingester) -> int:
    return sum(ingester.metrics.value("oros_ingest_inserts_total", outcome=o) for o in ("ok", "refused", "unavailable"))


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
    assert await pending(redis, settings) == 0
    row = ch.query("SELECT toString(any(value)) FROM events").result_rows[0][0]
    assert row == "1.5"


async def test_bad_clock_event_is_dead_lettered_and_the_rest_go_in(settings, redis, ch):
    """The issue's poison: a 1970 timestamp passed Python, failed ClickHouse, and stopped ingest forever."""
    good = events(20)
    bad_clock = replace(events(1)[0], ts_ms=1_000)
    far_future = replace(events(1)[0], ts_ms=7_258_118_400_000)  # 2200
    ids = await append(redis, settings, [*good[:10], bad_clock, *good[10:], far_future])
    ingester = Ingester(settings, "a", block_ms=50, retry_s=0.05)
    await run_until(ingester, lambda: _drained(redis, settings))
    await ingester.close()
    assert sorted(read_once(ch)) == sorted(e.event_id for e in good)
    dead = await dead_letters(redis, settings)
    assert set(dead) == {ids[10], ids[-1]}
    assert dead[ids[10]][b"class"] == b"invalid" and dead[ids[10]][b"reason"].startswith(b"ts_ms: 1000 is outside")
    assert dead[ids[10]][STREAM_FIELD] == bad_clock.encode()
    assert ingester.metrics.value("oros_ingest_dead_letters_total", reason="invalid") == 2
    assert await redis.xlen(settings.keys.stream) == 0


async def _drained(redis, settings) -> bool:
    return await redis.xlen(settings.keys.stream) == 0


async def test_poison_entries_go_to_dead_letter(settings, redis, ch):
    """Attacks on the entry itself: each bad one is dead-lettered, every good one inserted."""
    good = events(3)
    base = events(1)[0]
    teleport = replace(base, event_type="teleport")
    poisons = [
        {b"x": b"no e field"}, {STREAM_FIELD: b""}, b"{not json", b"[1,2]", b'"abc"', b"null",
        teleport, replace(base, user_agent="x" * 5_000_000), replace(base, user_agent="a\0b"),
        base.encode().replace(b'"ip":"1.1.1.1"', b'"ip":"a\x00b"'),  # a raw NUL byte inside the JSON
        base.encode().replace(b'"ip":"1.1.1.1"', b'"ip":"\\ud800"'),  # a lone surrogate
        base.encode().replace(b'"ip":"1.1.1.1"', b'"ip":"\xe9\xff"'),  # bytes that are not UTF-8
        base.encode().replace(b'"value":"1.50"', b'"value":"1e400"'),
        replace(base, value="10000000000.00"), replace(base, value="-1.00"), replace(base, currency="dollars"),
        replace(base, order_id="o" * (TEXT_LIMITS["order_id"] + 1)), replace(base, event_id="not-a-uuid"),
    ]
    ids = await append(redis, settings, [good[0], *poisons[:8], good[1], *poisons[8:], good[2]])
    ingester = Ingester(settings, "a")
    try:
        assert await ingester.drain_once() == 3
    finally:
        await ingester.close()
    assert sorted(read_once(ch)) == sorted(e.event_id for e in good)
    dead = await dead_letters(redis, settings)
    assert set(dead) == set(ids) - {ids[0], ids[9], ids[-1]}
    assert all({b"reason", b"id", b"class", b"consumer"} <= set(fields) for fields in dead.values())
    assert b"teleport" in dead[ids[7]][b"reason"] and dead[ids[7]][b"class"] == b"invalid"
    assert dead[ids[3]][b"class"] == b"refused" and b"Cannot parse" in dead[ids[3]][b"reason"]
    assert STREAM_FIELD not in dead[ids[1]]
    assert await redis.xlen(settings.keys.stream) == 0 and await pending(redis, settings) == 0


async def test_one_bad_entry_in_50000_costs_log_n_inserts(settings, redis, ch):
    """A bad entry Python cannot see is found by bisection: O(log n) inserts, not one per entry."""
    n = 50_000
    evs = events(n)
    bad = n // 2 + 123
    entries: list = [*evs[:bad], refused_by_clickhouse_only(evs[bad]), *evs[bad + 1:]]
    ids = await append(redis, settings, entries)
    ingester = Ingester(settings, "a", batch_size=n)
    try:
        assert await ingester.drain_once() == n - 1
    finally:
        await ingester.close()
    assert inserts(ingester) <= 2 * math.ceil(math.log2(n)) + 1
    assert len(read_once(ch)) == n - 1
    dead = await dead_letters(redis, settings)
    assert list(dead) == [ids[bad]] and dead[ids[bad]][b"class"] == b"refused"
    assert b"Cannot parse input" in dead[ids[bad]][b"reason"]


async def test_bad_entries_python_sees_cost_two_inserts(settings, redis, ch):
    """A whole flood from one bad clock is found in Python: the refused insert, then one for the rest."""
    evs = events(5_000)
    entries = [replace(e, ts_ms=1_000 + i) if i % 2 else e for i, e in enumerate(evs)]
    await append(redis, settings, entries)
    ingester = Ingester(settings, "a")
    try:
        assert await ingester.drain_once() == 2_500
    finally:
        await ingester.close()
    assert inserts(ingester) == 2
    assert len(await dead_letters(redis, settings)) == 2_500


async def test_killed_before_insert_is_reclaimed(settings, redis, ch):
    """Consumer a reads a batch and dies before inserting: b claims the idle entries and inserts them."""
    await append(redis, settings, events(40))
    dead = Ingester(settings, "a", batch_size=25)
    await dead.shards[0]._ensure_group()
    assert len(await dead.shards[0]._read(block_ms=None)) == 25  # delivered to a, never inserted
    await dead.close()
    survivor = Ingester(settings, "b", claim_idle_ms=0)
    try:
        assert await survivor.drain_once() == 40
    finally:
        await survivor.close()
    assert ch_count(ch) == 40
    assert await pending(redis, settings) == 0


async def test_killed_after_insert_before_ack_collapses_replay(settings, redis, ch, world):
    """Consumer a inserts then dies before acknowledging: b re-inserts; nothing reaches money twice."""
    campaign = world.campaign(fund="100.00")
    creator = world.creator(campaign)
    clicks = [world.click(campaign, creator) for _ in range(30)]
    await append(redis, settings, clicks)
    dead = Ingester(settings, "a", batch_size=1000)
    await dead.shards[0]._ensure_group()
    entries = await dead.shards[0]._read(block_ms=None)
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


async def _deliver(settings, times: int, *, max_deliveries: int = 10) -> None:
    """Consumers that read or claim the stream's entries and die, ``times`` deliveries in all."""
    first = Ingester(settings, "a")
    await first.shards[0]._ensure_group()
    await first.shards[0]._read(block_ms=None)
    await first.close()
    for n in range(times - 1):
        claimer = Ingester(settings, f"c{n}", claim_idle_ms=0, max_deliveries=max_deliveries)
        await claimer.shards[0]._claim()
        await claimer.close()


async def test_overdelivered_entries_are_inserted_alone_not_dead_lettered(settings, redis, ch):
    """Entries several consumers died holding (restarts during an outage) are good events: they go in."""
    evs = events(5)
    await append(redis, settings, evs)
    await _deliver(settings, 3)
    last = Ingester(settings, "d", claim_idle_ms=0, max_deliveries=2)
    try:
        assert await last.drain_once() == 0  # inserted alone while claimed, one insert each
    finally:
        await last.close()
    assert sorted(read_once(ch)) == sorted(e.event_id for e in evs)
    assert inserts(last) == 5
    assert await dead_letters(redis, settings) == {}
    assert await redis.hlen(settings.keys.ingest_suspects) == 0


async def test_entry_an_ingester_died_inserting_alone_is_dead_lettered(settings, redis, ch):
    """A poison that kills the process: the consumer that inserted it alone left its mark and died."""
    evs = events(3)
    ids = await append(redis, settings, evs)
    await _deliver(settings, 4)
    await redis.hset(settings.keys.ingest_suspects, ids[1], "c2")  # c2 was inserting it alone when it died
    last = Ingester(settings, "d", claim_idle_ms=0, max_deliveries=2)
    try:
        await last.drain_once()
    finally:
        await last.close()
    assert sorted(read_once(ch)) == sorted([evs[0].event_id, evs[2].event_id])
    dead = await dead_letters(redis, settings)
    assert list(dead) == [ids[1]] and dead[ids[1]][b"class"] == b"crashed"
    assert b"ingester c2 died while inserting it alone" in dead[ids[1]][b"reason"]
    assert await redis.hlen(settings.keys.ingest_suspects) == 0


async def test_clickhouse_outage_only_grows_the_stream(settings, redis, ch):
    """Inserts fail while the database is missing: nothing is acknowledged, nothing dead-lettered (not even
    the poison, which ClickHouse cannot judge while it is away), no redelivery; then the backlog drains."""
    down = replace(settings, clickhouse_database=settings.clickhouse_database + "_late")
    bad_clock = replace(events(1)[0], ts_ms=1_000)
    await append(redis, down, [*events(30), bad_clock, *events(29)])
    ingester = Ingester(down, "a", batch_size=10, block_ms=50, retry_s=0.01, max_retry_s=0.05)

    async def retried_a_lot() -> bool:
        return ingester.metrics.value("oros_ingest_retries_total") >= 20

    await run_until(ingester, retried_a_lot)
    assert await redis.xlen(down.keys.stream) == 60  # nothing dropped
    assert await dead_letters(redis, down) == {}
    assert await pending(redis, down) <= 20  # the batch and the one read with it; the backlog stays in Redis
    deliveries = await redis.xpending_range(down.keys.stream, down.keys.consumer_group, "-", "+", 100)
    assert {p["times_delivered"] for p in deliveries} == {1}  # retried from memory, never re-read
    assert ingester.metrics.health()[1]["status"] == "degraded"
    await append(redis, down, events(15))
    await asyncio.to_thread(migrate_clickhouse, down)  # ClickHouse is back
    await run_until(ingester, lambda: _drained(redis, down))
    await ingester.close()
    late = clickhouse_client(down)
    try:
        assert ch_count(late) == 74  # 59 good and 15 more; the bad clock is dead-lettered
    finally:
        clickhouse_client(down, database="").command(f"DROP DATABASE IF EXISTS `{down.clickhouse_database}`")
    assert len(await dead_letters(redis, down)) == 1
    assert ingester.metrics.health()[1]["status"] == "ok"


async def test_connection_refused_is_an_outage(settings, redis):
    unreachable = replace(settings, clickhouse_url=f"http://127.0.0.1:{free_port()}")
    await append(redis, unreachable, [*events(3), replace(events(1)[0], ts_ms=1_000)])
    ingester = Ingester(unreachable, "a")
    try:
        with pytest.raises(ClickHouseUnavailable):
            await ingester.drain_once()
    finally:
        await ingester.close()
    assert await dead_letters(redis, settings) == {}
    assert await pending(redis, settings) == 4
    assert ingester.metrics.value("oros_ingest_inserts_total", outcome="unavailable") == 1


async def test_clickhouse_failing_mid_split_keeps_the_rest_pending(settings, redis, ch):
    """ClickHouse fails part way through a split: what was done stays done, the rest waits, then goes in.

    The trap stands for an outage striking at that point, so no probe may blame the entry here
    (``probe_after``); the probe has tests of its own below."""
    evs = events(400)
    bad = set(range(7, 400, 20))
    entries = [refused_by_clickhouse_only(e) if i in bad else e for i, e in enumerate(evs)]
    trap = events(1, user_agent=TRAP_UA)[0]
    entries.insert(300, trap)
    set_trap(ch)
    ingester = Ingester(settings, "a", block_ms=50, retry_s=0.01, max_retry_s=0.05, probe_after=10**6)

    async def stuck() -> bool:
        return ingester.metrics.value("oros_ingest_retries_total") >= 3

    try:
        await append(redis, settings, entries)
        await run_until(ingester, stuck)
        part_way = len(await dead_letters(redis, settings))
        assert 0 < part_way < len(bad)  # the split began, and stopped where ClickHouse failed
        assert ingester.metrics.health()[1]["status"] == "degraded"
        clear_trap(ch)
        await run_until(ingester, lambda: _drained(redis, settings))
    finally:
        clear_trap(ch)
        await ingester.close()
    good = [e.event_id for i, e in enumerate(evs) if i not in bad] + [trap.event_id]
    assert sorted(read_once(ch)) == sorted(good)  # the trap's row was written at each failure: it collapses
    dead = await redis.xrange(settings.keys.dead_letter)
    assert len(dead) == len(bad) == len({fields[b"id"] for _, fields in dead})
    assert await pending(redis, settings) == 0


def too_deep(event: Event, levels: int = 20_000) -> bytes:
    """The event with an unknown field nested ``levels`` deep: Python cannot judge it (not the wire
    format); ClickHouse skips unknown fields but refuses this one with TOO_DEEP_RECURSION (306)."""
    return event.encode()[:-1] + b',"zz":' + b"[" * levels + b"]" * levels + b"}"


async def test_entry_too_deep_for_clickhouse_is_dead_lettered(settings, redis, ch):
    """The audit's repro: code 306 was taken for an outage, and the batch retried from memory forever."""
    good = events(4)
    ids = await append(redis, settings, [good[0], too_deep(events(1)[0]), *good[1:]])
    ingester = Ingester(settings, "a")
    try:
        assert await ingester.drain_once() == 4
    finally:
        await ingester.close()
    assert sorted(read_once(ch)) == sorted(e.event_id for e in good)
    dead = await dead_letters(redis, settings)
    assert list(dead) == [ids[1]] and dead[ids[1]][b"class"] == b"refused"
    assert b"TOO_DEEP_RECURSION" in dead[ids[1]][b"reason"]
    assert ingester.metrics.value("oros_ingest_inserts_total", outcome="unavailable") == 0


@pytest.mark.parametrize("held", [True, False], ids=["known_good_in_memory", "read_back_from_the_table"])
async def test_entry_clickhouse_keeps_failing_while_it_takes_others_is_dead_lettered(settings, redis, ch, held):
    """An error code that names neither the data nor an outage, every time for one entry, while a row
    ClickHouse holds goes in again: after ``probe_after`` retries the batch is split and only that
    entry is dead-lettered (the ingester that inserted a row remembers it; a new one reads one back)."""
    first = events(3)
    await append(redis, settings, first)
    if held:
        ingester = Ingester(settings, "a", block_ms=50, retry_s=0.01, max_retry_s=0.05, probe_after=3)
        assert await ingester.drain_once() == 3
    else:
        warm = Ingester(settings, "warm")
        assert await warm.drain_once() == 3
        await warm.close()
        ingester = Ingester(settings, "a", block_ms=50, retry_s=0.01, max_retry_s=0.05, probe_after=3)
    set_trap(ch)
    later = events(40)
    trap = events(1, user_agent=TRAP_UA)[0]
    ids = await append(redis, settings, [*later[:25], trap, *later[25:]])
    try:
        await run_until(ingester, lambda: _drained(redis, settings), timeout_s=20)
    finally:
        clear_trap(ch)
        await ingester.close()
    dead = await dead_letters(redis, settings)
    assert list(dead) == [ids[25]] and dead[ids[25]][b"class"] == b"refused"
    assert b"FUNCTION_THROW_IF_VALUE_IS_NON_ZERO" in dead[ids[25]][b"reason"]
    assert b"ClickHouse took other inserts meanwhile" in dead[ids[25]][b"reason"]
    # The table took the trap's row before the view threw (no insert with views is atomic); a replay collapses.
    assert sorted(read_once(ch)) == sorted(e.event_id for e in [*first, *later, trap])
    assert ingester.metrics.value("oros_ingest_retries_total") == 3  # counted, then the probe decided
    assert ingester.metrics.value("oros_ingest_probes_total", outcome="takes_inserts") >= 2
    assert ingester.metrics.health()[1]["batch_retries"] == 0


async def test_clickhouse_failing_every_insert_never_blames_the_batch(settings, redis, ch):
    """The same unexplained code for every row, the probe's too: an outage, however often retried."""
    await append(redis, settings, events(2))
    ingester = Ingester(settings, "a", block_ms=50, retry_s=0.01, max_retry_s=0.02, probe_after=2)
    assert await ingester.drain_once() == 2
    set_trap(ch, "1")

    async def probed_a_lot() -> bool:
        return ingester.metrics.value("oros_ingest_probes_total", outcome="fails") >= 10

    try:
        await append(redis, settings, events(30))
        await run_until(ingester, probed_a_lot, timeout_s=30)
        assert await dead_letters(redis, settings) == {}
        assert await pending(redis, settings) == 30
        assert ingester.metrics.health()[1]["batch_retries"] >= 10
        with pytest.raises(ClickHouseUnavailable):
            await ingester.drain_once()  # --once: the probe fails too, so the failure is raised
    finally:
        clear_trap(ch)
    await run_until(ingester, lambda: _drained(redis, settings))
    await ingester.close()
    assert ch_count(ch, distinct=True) == 32 and await dead_letters(redis, settings) == {}


async def test_two_ingesters_in_one_group_insert_each_entry_once(settings, redis, ch):
    evs = events(3_000)
    bad = set(range(5, 3_000, 97))
    entries = [refused_by_clickhouse_only(e) if i in bad else e for i, e in enumerate(evs)]
    first, second = (Ingester(settings, name, batch_size=200, block_ms=50) for name in ("one", "two"))
    appended = asyncio.Event()

    async def done() -> bool:  # not before the last append: the ingesters may empty the stream between appends
        return appended.is_set() and await _drained(redis, settings)

    async def both():
        await asyncio.gather(run_until(first, done), run_until(second, done))

    try:
        runs = asyncio.create_task(both())
        for start in range(0, len(entries), 500):
            await append(redis, settings, entries[start:start + 500])
        appended.set()
        await runs
    finally:
        await first.close()
        await second.close()
    assert sorted(read_once(ch)) == sorted(e.event_id for i, e in enumerate(evs) if i not in bad)
    assert ch_count(ch) == ch_count(ch, distinct=True)  # no insert was repeated
    dead = await redis.xrange(settings.keys.dead_letter)
    assert len(dead) == len(bad) == len({fields[b"id"] for _, fields in dead})
    assert first.metrics.value("oros_ingest_events_total") > 0 and second.metrics.value("oros_ingest_events_total") > 0


async def test_trim_keeps_entries_pending_elsewhere(settings, redis, ch):
    """Only acknowledged entries are trimmed: a slow consumer's pending ones stay in the stream."""
    await append(redis, settings, events(40))
    slow = Ingester(settings, "slow", batch_size=25)
    await slow.shards[0]._ensure_group()
    held = await slow.shards[0]._read(block_ms=None)
    other = Ingester(settings, "other")  # will not claim: the entries are not idle for a minute
    try:
        assert await other.drain_once() == 15
        # Trimming stops below the oldest pending entry: acked entries after it wait with it.
        assert await redis.xlen(settings.keys.stream) == 40
        assert await slow.shards[0]._insert(held, set()) == 25
        assert await redis.xlen(settings.keys.stream) == 0
    finally:
        await slow.close()
        await other.close()
    assert ch_count(ch) == 40


async def test_metrics_and_healthz_are_served(settings, redis, ch):
    ingester = Ingester(settings, "a", block_ms=50)
    await append(redis, settings, [*events(5), replace(events(1)[0], ts_ms=1_000)])
    port = free_port()
    try:
        served = probes.serving("ingest", ingester.metrics.registry, ingester.metrics.health, port)
        async with served, aiohttp.ClientSession() as http:
            await run_until(ingester, lambda: _drained(redis, settings))
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                health = response.status, await response.json()
    finally:
        await ingester.close()
    for line in ("oros_ingest_events_total 5.0", 'oros_ingest_dead_letters_total{reason="invalid"} 1.0',
                 'oros_ingest_inserts_total{outcome="refused"} 1.0', "oros_ingest_retries_total 0.0",
                 "oros_ingest_batch_seconds_count 1.0", "oros_ingest_lag_entries 0.0"):
        assert line in text.splitlines()
    assert health == (200, {"status": "ok", "clickhouse": "ok", "unavailable_for_s": 0, "batch_retries": 0,
                            "lag_entries": 0})
