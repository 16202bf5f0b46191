"""``oros ingest`` and its dead letters, as an operator runs them, against this test's servers."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import orjson
import pytest
import redis as sync_redis

from ingest import deadletter
from ingest.metrics import IngestMetrics
from oros import stream
from oros.connections import redis_client
from oros.events import STREAM_FIELD
from oros_cli import main as cli

from ingest_stream import events


def _letters(settings) -> dict[bytes, dict]:
    client = sync_redis.Redis.from_url(settings.redis_url)
    try:
        return {fields[b"id"]: (letter_id.decode(), fields)
                for letter_id, fields in client.xrange(settings.keys.dead_letter)}
    finally:
        client.close()


def _append(settings, evs) -> list[bytes]:
    client = sync_redis.Redis.from_url(settings.redis_url)
    try:
        return [client.xadd(settings.keys.stream, {STREAM_FIELD: e.encode()}) for e in evs]
    finally:
        client.close()


def test_oros_ingest_keeps_its_contract():
    args = cli.build_parser().parse_args(["ingest"])
    assert (args.func, args.once, args.metrics_port, args.dead_letters) == (cli.cmd_ingest, False, 9101, False)
    assert args.replay_dead_letters is None and args.drop_dead_letters is None


def test_dead_letters_are_listed_fixed_replayed_and_dropped(cli_env, settings, ch, capsys):
    good, blocked, bad_clock = events(3)
    blocked, bad_clock = replace(blocked, user_agent="blocked"), replace(bad_clock, ts_ms=1_000)
    # A rule ClickHouse held for a while and Python never did (a schema change gone wrong).
    ch.command("ALTER TABLE events ADD CONSTRAINT temporary_rule CHECK user_agent != 'blocked'")
    ids = _append(settings, [good, blocked, bad_clock])
    assert cli.main(["ingest", "--once"]) == 0
    letters = _letters(settings)
    assert set(letters) == {ids[1], ids[2]}
    capsys.readouterr()

    assert cli.main(["ingest", "--dead-letters"]) == 0
    listing = capsys.readouterr().out
    blocked_letter, clock_letter = letters[ids[1]][0], letters[ids[2]][0]
    assert f"{blocked_letter}  " in listing and f"entry {ids[1].decode()}  refused: " in listing
    assert "temporary_rule" in listing and f"entry {ids[2].decode()}  invalid: ts_ms: 1000 is outside" in listing
    assert bad_clock.event_id in listing and listing.rstrip().endswith("2 dead letters")

    ch.command("ALTER TABLE events DROP CONSTRAINT temporary_rule")  # the fix
    assert cli.main(["ingest", "--replay-dead-letters"]) == 1  # the bad clock stays
    out = capsys.readouterr()
    assert "replayed 1 of 2 dead letters" in out.out and f"{clock_letter} stays: ts_ms: 1000" in out.err
    assert set(_letters(settings)) == {ids[2]}
    assert cli.main(["ingest", "--once"]) == 0
    stored = {r[0] for r in ch.query("SELECT toString(event_id) FROM events").result_rows}
    assert stored == {good.event_id, blocked.event_id}

    assert cli.main(["ingest", "--replay-dead-letters", clock_letter, "1-1"]) == 1
    assert "1-1: no such dead letter" in capsys.readouterr().err
    assert cli.main(["ingest", "--drop-dead-letters", clock_letter]) == 0
    assert _letters(settings) == {}
    assert cli.main(["ingest", "--drop-dead-letters", clock_letter]) == 1


def test_a_bad_clock_is_replayed_restamped_at_the_time_redis_accepted_it(cli_env, settings, ch, capsys):
    """A real click from a tracker whose clock said 1970 was only ever droppable; now it can be restamped."""
    good, click = events(2)
    bad_clock = replace(click, ts_ms=1_000, metadata={"utm_source": "x"})
    ids = _append(settings, [good, bad_clock])
    assert cli.main(["ingest", "--once"]) == 0
    letter = _letters(settings)[ids[1]][0]
    assert cli.main(["ingest", "--restamp"]) == 2  # only with a replay
    assert cli.main(["ingest", "--replay-dead-letters", letter]) == 1  # as it is, it fails the same check again
    capsys.readouterr()

    assert cli.main(["ingest", "--replay-dead-letters", letter, "--restamp"]) == 0
    assert "replayed 1 of 1 dead letters" in capsys.readouterr().out and _letters(settings) == {}
    assert cli.main(["ingest", "--once"]) == 0
    [(ts_ms, metadata)] = ch.query("SELECT toUnixTimestamp64Milli(ts), metadata FROM events WHERE event_id = "
                                   "{id:UUID}", parameters={"id": bad_clock.event_id}).result_rows
    assert ts_ms == int(ids[1].split(b"-")[0])  # when Redis accepted the original entry
    assert orjson.loads(metadata) == {"utm_source": "x", "restamped": {"ts_ms": 1_000, "stream_id": ids[1].decode()}}


def test_a_replay_is_as_durable_as_any_append(cli_env, settings, ch):
    """A replay once XADDed the event itself, skipping the WAIT for replicas every other producer does: on a
    deployment requiring a replica, a failover could lose an event whose dead letter was already removed.
    Now it appends through oros.stream, and a replay no replica confirmed fails and keeps the letter."""
    good, click = events(2)
    ids = _append(settings, [good, replace(click, ts_ms=1_000)])
    assert cli.main(["ingest", "--once"]) == 0
    letters = asyncio.run(_read_letters(settings))
    unreplicated = replace(settings, stream_replicas=1, stream_wait_ms=50)  # the test's Redis has none

    with pytest.raises(stream.NotReplicated):
        asyncio.run(_replay(unreplicated, letters))
    assert set(_letters(settings)) == {ids[1]}  # kept: the event may not survive a failover


async def _read_letters(settings):
    client = redis_client(settings)
    try:
        return await deadletter.read(client, settings.keys)
    finally:
        await client.aclose()


async def _replay(settings, letters):
    client = redis_client(settings)
    try:
        return await deadletter.replay(client, settings, letters, restamped=True)
    finally:
        await client.aclose()


def test_a_restamp_does_not_fix_what_else_is_wrong(cli_env, settings, capsys):
    bad_both = replace(events(1)[0], ts_ms=1_000, currency="dollars")
    ids = _append(settings, [bad_both])
    assert cli.main(["ingest", "--once"]) == 0
    letter = _letters(settings)[ids[0]][0]
    assert cli.main(["ingest", "--replay-dead-letters", letter, "--restamp"]) == 1
    assert f"{letter} stays: currency: not a three-letter" in capsys.readouterr().err
    stays = _letters(settings)[ids[0]][1]
    assert stays[STREAM_FIELD] == bad_both.encode()  # the letter itself is never edited


def test_dev_admin_metrics_include_ingest(settings):
    """``oros dev`` registers the ingester's metrics with the admin API's registry."""
    from prometheus_client import generate_latest

    from admin_api.app import create_app
    from admin_api.typedefs import METRICS

    app = create_app(settings)
    ingest_metrics = IngestMetrics()
    app[METRICS].registry.register(ingest_metrics)
    ingest_metrics.inserted.inc(3)
    text = generate_latest(app[METRICS].registry).decode()
    assert "oros_ingest_events_total 3.0" in text and "oros_admin_requests" in text


async def test_a_restart_under_the_same_consumer_name_resumes_its_pending_entries(cli_env, settings, ch):
    """Killed after reading: restarted as the same consumer, ingest inserts its entries now, not a minute later."""
    from ingest.consumer import Ingester

    _append(settings, events(30))
    dead = Ingester(settings, "box-1")
    await dead.shards[0]._ensure_group()
    assert len(await dead.shards[0]._read(block_ms=None)) == 30  # delivered, never inserted
    await dead.close()
    assert await asyncio.to_thread(cli.main, ["ingest", "--once", "--consumer", "box-1"]) == 0
    assert ch.query("SELECT count() FROM events").result_rows == [(30,)]
