"""A sharded event stream on a plain Redis (``OROS_STREAM_SHARDS``), and the settings that choose it.

One stream (the default) keeps the names it always had; N shards are ``{events:i}`` with their dead
letters, suspects and click index beside each. The cluster itself is tests/test_redis_cluster.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import orjson
import pytest
from redis.crc import key_slot

from ingest import cli
from ingest.consumer import Ingester
from oros import clickindex, stream
from oros.events import Event, uuid7
from oros.keys import Keys
from oros.settings import Settings, SettingsError

from ingest_stream import TRAP_UA, clear_trap, events, read_once, run_until, set_trap

CAMPAIGN = "00000000-0000-0000-0000-0000000000aa"


def click(n: int) -> Event:
    event_id = str(uuid7())
    return Event(event_id=event_id, event_type="click", ts_ms=1_800_000_000_000 + n, campaign_id=CAMPAIGN,
                 ip="1.1.1.1")


def test_one_stream_keeps_its_names_and_shards_carry_one_tag_each():
    one = Keys("p:")
    assert (one.stream, one.dead_letter, one.ingest_suspects, one.clicks(7)) == (
        "p:events", "p:events:dead", "p:events:suspects", "p:clk:7")
    assert Keys("p:", 1, cluster=True).stream == "p:{events:0}"
    sharded = Keys("p:", 3)
    assert [shard.stream for shard in sharded.shards] == ["p:{events:0}", "p:{events:1}", "p:{events:2}"]
    shard = sharded.shard(2)
    names = [shard.stream, shard.dead_letter, shard.ingest_suspects, shard.clicks(7)]
    assert names[1:] == ["p:{events:2}:dead", "p:{events:2}:suspects", "p:{events:2}:clk:7"]
    assert len({key_slot(name.encode()) for name in names}) == 1
    with pytest.raises(ValueError, match="3 shards"):
        sharded.stream  # noqa: B018 - which one? the caller must name a shard
    with pytest.raises(ValueError):
        sharded.shard(3)


@pytest.mark.parametrize(("env", "problem"), [
    ({"OROS_STREAM_SHARDS": "0"}, "at least 1"),
    ({"OROS_STREAM_SHARDS": "257"}, "at most 256"),
    ({"OROS_STREAM_WAIT_MS": "2000"}, "at most 1500"),
    ({"OROS_REDIS_PREFIX": "t{1}:"}, "hash tag"),
    ({"OROS_REDIS_CLUSTER": "true", "REDIS_URL": "unix:///tmp/r.sock"}, "seed node"),
    ({"CLICKHOUSE_CLUSTER": "oros; DROP"}, "not a cluster name"),
    ({"DATABASE_READ_URL": "mysql://x/y"}, "DATABASE_READ_URL"),
], ids=["no-shards", "too-many-shards", "wait-past-flush-timeout", "braces", "cluster-unix", "cluster-name",
        "read-url"])
def test_settings_refuse_what_cannot_work(env, problem):
    with pytest.raises(SettingsError, match=problem):
        Settings.from_env(env)


def test_a_cluster_waits_for_one_replica_unless_told():
    assert Settings.from_env({}).stream_replicas == 0
    assert Settings.from_env({"OROS_REDIS_CLUSTER": "true"}).stream_replicas == 1
    assert Settings.from_env({"OROS_REDIS_CLUSTER": "true", "OROS_STREAM_REPLICAS": "0"}).stream_replicas == 0


@pytest.fixture
def sharded(settings):
    return replace(settings, stream_shards=3)


async def test_every_shard_is_drained_and_a_click_is_found_in_any(sharded, redis, ch):
    keys = sharded.keys
    clicks = [click(n) for n in range(30)]
    for n, event in enumerate(clicks):  # as three appenders would: each to its own shard
        shard = keys.shard(n % 3)
        entry = clickindex.entry(event.event_id, clickindex.encode({"link_id": f"link-{n}"}))
        await redis.eval(stream.APPEND_LUA, *_script(shard, event, entry))
    assert [await redis.xlen(shard.stream) for shard in keys.shards] == [10, 10, 10]
    assert (await clickindex.lookup(redis, keys, clicks[4].event_id))["link_id"] == "link-4"
    assert await clickindex.lookup(redis, keys, str(uuid7())) is None
    ingester = Ingester(sharded, "a")
    try:
        assert await ingester.drain_once() == 30
    finally:
        await ingester.close()
    assert ch.query("SELECT count() FROM events").result_rows[0][0] == 30
    assert [await redis.xlen(shard.stream) for shard in keys.shards] == [0, 0, 0]  # trimmed, each


async def test_two_shards_batches_with_the_same_stream_ids_both_insert(sharded, redis, ch):
    """Each shard numbers its entries on its own: the same ids in two shards are different clicks,
    and ClickHouse must not drop the second batch as a repeat of the first (its deduplication token)."""
    clicks = [click(n) for n in range(3)]
    for shard, event in zip(sharded.keys.shards, clicks, strict=True):
        await redis.xadd(shard.stream, {b"e": event.encode()}, id="1700000000000-0")
    ingester = Ingester(sharded, "a")
    try:
        assert await ingester.drain_once() == 3
    finally:
        await ingester.close()
    assert sorted(read_once(ch)) == sorted(e.event_id for e in clicks)


def _script(shard, event, entry) -> list:
    script_keys, args = stream.script_call(shard, 60, [event.encode()], [entry])
    return [len(script_keys), *script_keys, *args]


async def test_dead_letters_stay_in_their_shard_and_replay_there(sharded, redis, ch, cli_env, monkeypatch, capsys):
    monkeypatch.setenv("OROS_STREAM_SHARDS", "3")
    keys = sharded.keys
    good, bad = click(1), b'{"event_id": "not one"}'
    await redis.xadd(keys.shard(0).stream, {b"e": good.encode()})
    bad_id = await redis.xadd(keys.shard(2).stream, {b"e": bad})
    ingester = Ingester(sharded, "a")
    try:
        assert await ingester.drain_once() == 1
    finally:
        await ingester.close()
    assert await redis.xlen(keys.shard(0).dead_letter) == 0
    (letter_id, fields), = await redis.xrange(keys.shard(2).dead_letter)
    assert fields[b"id"] == bad_id
    capsys.readouterr()
    assert await asyncio.to_thread(cli.run_list_dead_letters, Settings.from_env(), limit=10) == 0
    listing = capsys.readouterr().out
    assert f"2:{letter_id.decode()}" in listing and "1 dead letters" in listing
    dropped = [f"2:{letter_id.decode()}", "9:1-1"]  # the second names no shard there is
    assert await asyncio.to_thread(cli.run_drop_dead_letters, Settings.from_env(), dropped) == 1
    assert await redis.xlen(keys.shard(2).dead_letter) == 0
    # A letter whose event inserts now (its cause was fixed) goes back to its own shard's stream.
    fixed = click(2).encode()
    fixed_id = await redis.xadd(keys.shard(1).dead_letter, {b"id": b"1-1", b"class": b"refused", b"reason": b"x",
                                                           b"consumer": b"a", b"e": fixed})
    assert await asyncio.to_thread(cli.run_replay_dead_letters, Settings.from_env(), [f"1:{fixed_id.decode()}"]) == 0
    assert [fields[b"e"] for _, fields in await redis.xrange(keys.shard(1).stream)] == [fixed]
    assert await redis.xlen(keys.shard(1).dead_letter) == 0


async def test_a_stripe_event_appends_to_one_shard_the_same_for_its_retry(sharded, redis):
    keys = sharded.keys
    raw = click(5).encode()
    await stream.append(redis, keys, [raw])
    await stream.append(redis, keys, [raw])
    lengths = [await redis.xlen(shard.stream) for shard in keys.shards]
    assert sorted(lengths) == [0, 0, 2]


async def test_an_outage_seen_by_one_shard_stays_reported_while_the_others_idle(sharded, redis):
    """Shards 1 and 2 have nothing to insert and succeed every pass; ClickHouse is still down for shard 0."""
    down = replace(sharded, clickhouse_database=sharded.clickhouse_database + "_late")
    await redis.xadd(down.keys.shard(0).stream, {b"e": click(1).encode()})
    ingester = Ingester(down, "a", block_ms=20, retry_s=0.01, max_retry_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(ingester.run(stop))
    try:
        for _ in range(400):
            if ingester.metrics.value("oros_ingest_retries_total") >= 10:
                break
            await asyncio.sleep(0.05)
        for _ in range(10):  # the idle shards' passes in between
            assert ingester.metrics.health()[1]["status"] == "degraded"
            await asyncio.sleep(0.03)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await ingester.close()


@pytest.fixture
def two_shards(settings):
    return replace(settings, stream_shards=2)


async def _append_to(redis, shard, evs: list[Event]) -> list[bytes]:
    return [await redis.xadd(shard.stream, {b"e": e.encode()}) for e in evs]


async def test_a_batch_clickhouse_keeps_failing_in_one_shard_is_split_there(two_shards, redis, ch):
    """Shard 1's batch holds an entry ClickHouse fails with an unexplained code while shard 0's inserts go
    in: shard 1's loop probes, splits, and dead-letters that entry in its own shard's dead letters."""
    keys = two_shards.keys
    first, later, trap = events(4), events(30), events(1, user_agent=TRAP_UA)[0]
    await _append_to(redis, keys.shard(0), first)
    ingester = Ingester(two_shards, "a", block_ms=20, retry_s=0.01, max_retry_s=0.05, probe_after=2)
    set_trap(ch)
    try:
        assert await ingester.drain_once() == 4
        await _append_to(redis, keys.shard(0), later[:15])
        ids = await _append_to(redis, keys.shard(1), [*later[15:], trap])

        async def drained() -> bool:
            return [await redis.xlen(shard.stream) for shard in keys.shards] == [0, 0]

        await run_until(ingester, drained, timeout_s=20)
    finally:
        clear_trap(ch)
        await ingester.close()
    assert await redis.xlen(keys.shard(0).dead_letter) == 0
    [(_, letter)] = await redis.xrange(keys.shard(1).dead_letter)
    assert letter[b"id"] == ids[-1] and letter[b"class"] == b"refused"
    assert b"ClickHouse took other inserts meanwhile" in letter[b"reason"]
    assert set(read_once(ch)) == {e.event_id for e in [*first, *later, trap]}  # the trap's row collapses
    assert ingester.metrics.value("oros_ingest_probes_total", outcome="takes_inserts") >= 2
    assert ingester.metrics.health()[1]["batch_retries"] == 0


async def test_batch_retries_show_the_most_of_any_shard(two_shards, redis, ch):
    """Shard 1's batch keeps failing while shard 0 has nothing to insert and passes every 20 ms:
    shard 0's passes must not hide the count of shard 1's waiting batch."""
    await _append_to(redis, two_shards.keys.shard(1), events(3))
    ingester = Ingester(two_shards, "a", block_ms=20, retry_s=0.01, max_retry_s=0.05, probe_after=10**6)
    set_trap(ch, "1")
    stop = asyncio.Event()
    task = asyncio.create_task(ingester.run(stop))
    try:
        for _ in range(400):
            if ingester.metrics.value("oros_ingest_retries_total") >= 5:
                break
            await asyncio.sleep(0.05)
        seen = []
        for _ in range(10):
            seen.append(ingester.metrics.health()[1]["batch_retries"])
            await asyncio.sleep(0.03)
        assert min(seen) >= 5 and seen == sorted(seen)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        clear_trap(ch)
        await ingester.close()


async def test_a_bad_clock_in_a_shard_is_restamped_by_that_shard_and_replayed_to_it(
        two_shards, redis, ch, cli_env, monkeypatch):
    monkeypatch.setenv("OROS_STREAM_SHARDS", "2")
    keys = two_shards.keys
    good, click_ = events(2)
    bad_clock = replace(click_, ts_ms=1_000, metadata={"utm_source": "x"})
    await _append_to(redis, keys.shard(0), [good])
    [entry_id] = await _append_to(redis, keys.shard(1), [bad_clock])
    ingester = Ingester(two_shards, "a")
    try:
        assert await ingester.drain_once() == 1
        [(letter_id, _)] = await redis.xrange(keys.shard(1).dead_letter)
        operator_id = f"1:{letter_id.decode()}"
        assert await asyncio.to_thread(cli.run_replay_dead_letters, Settings.from_env(), [operator_id],
                                       restamp=True) == 0
        assert [await redis.xlen(shard.stream) for shard in keys.shards] == [0, 1]  # back to its own shard
        assert await redis.xlen(keys.shard(1).dead_letter) == 0
        assert await ingester.drain_once() == 1
    finally:
        await ingester.close()
    [(ts_ms, metadata)] = ch.query("SELECT toUnixTimestamp64Milli(ts), metadata FROM events WHERE event_id = "
                                   "{id:UUID}", parameters={"id": bad_clock.event_id}).result_rows
    assert ts_ms == int(entry_id.split(b"-")[0])  # when shard 1's Redis accepted the original entry
    assert orjson.loads(metadata) == {"utm_source": "x", "restamped": {"ts_ms": 1_000, "stream_id": entry_id.decode()}}
