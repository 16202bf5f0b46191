"""Stream entries, ClickHouse failures and the ingest loop run until done, as the ingest tests share them."""

from __future__ import annotations

import asyncio

from ingest.consumer import Ingester
from oros.events import STREAM_FIELD, Event, uuid7

from factories import now_ms

TRAP_UA = "trap"


def events(n: int, campaign_id: str = "00000000-0000-0000-0000-0000000000aa", **fields) -> list[Event]:
    t = now_ms()
    return [Event(event_id=str(uuid7(t + i)), event_type="click", ts_ms=t + i, campaign_id=campaign_id,
                  ip="1.1.1.1", value="1.50", **fields) for i in range(n)]


def refused_by_clickhouse_only(event: Event) -> bytes:
    """An entry outside the wire format that ClickHouse refuses: Python cannot tell, a split must."""
    return event.encode().replace(b'"ts_ms":%d' % event.ts_ms, b'"ts_ms":%d.5' % event.ts_ms)


async def append(redis, settings, evs: list[Event | bytes | dict]) -> list[bytes]:
    async with redis.pipeline(transaction=False) as pipe:
        for e in evs:
            fields = e if isinstance(e, dict) else {STREAM_FIELD: e if isinstance(e, bytes) else e.encode()}
            pipe.xadd(settings.keys.stream, fields)
        return await pipe.execute()


async def dead_letters(redis, settings) -> dict[bytes, dict]:
    """Dead letters by original stream id."""
    return {fields[b"id"]: fields for _, fields in await redis.xrange(settings.keys.dead_letter)}


async def pending(redis, settings) -> int:
    return (await redis.xpending(settings.keys.stream, settings.keys.consumer_group))["pending"]


def set_trap(ch, condition: str = f"user_agent = '{TRAP_UA}'") -> None:
    """From now on ClickHouse fails every insert holding a row that meets ``condition`` (code 395, which
    names neither bad data nor an outage)."""
    ch.command("CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_trap ENGINE = Null AS"
               f" SELECT throwIf({condition}, 'ClickHouse fails this insert') AS failed FROM events")


def clear_trap(ch) -> None:
    ch.command("DROP VIEW IF EXISTS ingest_trap")


def read_once(ch) -> list[str]:
    """Event ids as the settler reads them (LIMIT 1 BY event_id)."""
    return [r[0] for r in ch.query("SELECT toString(event_id) FROM events LIMIT 1 BY event_id").result_rows]


async def run_until(ingester: Ingester, done, *, timeout_s: float = 60.0) -> None:
    """Run the ingest loop until ``done()`` (awaited) holds; the timeout only keeps a broken test from hanging."""
    stop = asyncio.Event()
    task = asyncio.create_task(ingester.run(stop))
    try:
        for _ in range(int(timeout_s / 0.05)):
            if await done() or task.done():
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
