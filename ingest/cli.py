"""``oros ingest``: the ingest process, and the operator's view of its dead letters.

``oros ingest [--once] [--metrics-port 9101] [--consumer NAME]`` migrates ClickHouse, then drains
the stream until SIGINT/SIGTERM (or once), serving ``/metrics`` and
``/healthz``. ``--dead-letters`` lists them, ``--replay-dead-letters [ID ...]``
re-queues those that would insert now (all of them without ids; with
``--restamp``, stamped at the time Redis accepted them), and
``--drop-dead-letters ID ...`` deletes them; these need only Redis.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from oros import probes
from oros.connections import redis_client
from oros.settings import Settings

from . import deadletter
from .consumer import Ingester

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT = 9101
EVENT_PREFIX_CHARS = 120


async def _run(settings: Settings, once: bool, metrics_port: int, consumer: str | None) -> None:
    ingester = Ingester(settings, consumer)
    try:
        if once:
            rows = await ingester.drain_once()
            log.info("ingest drained", extra={"rows": rows})
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with probes.serving("ingest", ingester.metrics.registry, ingester.metrics.health, metrics_port):
            log.info("ingest running", extra={"consumer": ingester.consumer, "metrics_port": metrics_port})
            await ingester.run(stop)
    finally:
        await ingester.close()


def run_ingest(settings: Settings, *, once: bool = False, metrics_port: int = DEFAULT_METRICS_PORT,
               consumer: str | None = None) -> None:
    """``oros ingest [--once] [--metrics-port N] [--consumer NAME]``."""
    from oros.migrate import migrate_clickhouse

    migrate_clickhouse(settings)
    asyncio.run(_run(settings, once, metrics_port, consumer))


def _describe(letter: deadletter.DeadLetter) -> str:
    event = "(none)" if letter.event is None else repr(letter.event[:EVENT_PREFIX_CHARS])[2:-1]
    return (f"{letter.id}  {letter.at.isoformat(timespec='seconds')}  entry {letter.entry_id}  "
            f"{letter.reason_class}: {letter.reason}\n    {event}")


async def _with_redis(settings: Settings, work):
    redis = redis_client(settings)
    try:
        return await work(redis)
    finally:
        await redis.aclose()


def run_list_dead_letters(settings: Settings, *, limit: int) -> int:
    """``oros ingest --dead-letters``: the oldest ``limit`` dead letters, then how many there are."""
    async def work(redis):
        return await deadletter.read(redis, settings.keys, limit=limit), await deadletter.count(redis, settings.keys)

    letters, total = asyncio.run(_with_redis(settings, work))
    for letter in letters:
        print(_describe(letter))
    print(f"{total} dead letters" + (f" ({len(letters)} shown)" if len(letters) < total else ""))
    return 0


def run_replay_dead_letters(settings: Settings, ids: list[str], *, restamp: bool = False) -> int:
    """``oros ingest --replay-dead-letters [ID ...] [--restamp]``: exit 1 if a named letter is missing or stays."""
    async def work(redis):
        letters = await deadletter.read(redis, settings.keys, ids=ids or None)
        return letters, await deadletter.replay(redis, settings, letters, restamped=restamp)

    letters, replayed = asyncio.run(_with_redis(settings, work))
    done = {letter.id for letter in replayed}
    for letter in letters:
        if letter.id not in done:
            why = deadletter.why_not_replayable(deadletter.restamp(letter) if restamp else letter)
            print(f"{letter.id} stays: {why}", file=sys.stderr)
    missing = sorted(set(ids) - {letter.id for letter in letters})
    for letter_id in missing:
        print(f"{letter_id}: no such dead letter", file=sys.stderr)
    print(f"replayed {len(replayed)} of {len(letters)} dead letters")
    return 0 if len(replayed) == len(letters) and not missing else 1


def run_drop_dead_letters(settings: Settings, ids: list[str]) -> int:
    """``oros ingest --drop-dead-letters ID ...``: exit 1 if one did not exist."""
    dropped = asyncio.run(_with_redis(settings, lambda redis: deadletter.drop(redis, settings.keys, ids)))
    print(f"dropped {dropped} of {len(ids)} dead letters")
    return 0 if dropped == len(ids) else 1
