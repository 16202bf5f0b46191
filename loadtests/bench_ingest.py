"""Ingest throughput: N events appended to the Redis stream, then drained into ClickHouse.

    .venv/bin/python loadtests/bench_ingest.py --events 500000

Uses a throwaway key prefix on the configured (or local, or embedded) Redis
and a temporary chDB directory. Prints the drain rate (stream -> ClickHouse,
acknowledged and trimmed) as its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.consumer import Ingester
from oros import embedded
from oros.connections import clickhouse_client, redis_client
from oros.events import STREAM_FIELD, Event, uuid7
from oros.migrate import migrate_clickhouse
from oros.settings import Settings


async def fill(settings: Settings, n: int) -> None:
    redis = redis_client(settings)
    campaign, link, creator = (str(uuid.uuid4()) for _ in range(3))
    now = int(time.time() * 1000)
    try:
        for start in range(0, n, 10_000):
            async with redis.pipeline(transaction=False) as pipe:
                for i in range(start, min(n, start + 10_000)):
                    event = Event(event_id=str(uuid7(now + i)), event_type="click", ts_ms=now + i,
                                  campaign_id=campaign, link_id=link, creator_id=creator, ip=f"10.0.{i % 250}.{i % 7}",
                                  user_agent="Mozilla/5.0 (bench)", referrer="https://example.com/")
                    pipe.xadd(settings.keys.stream, {STREAM_FIELD: event.encode()})
                await pipe.execute()
    finally:
        await redis.aclose()


async def drain(settings: Settings, batch_size: int) -> int:
    ingester = Ingester(settings, "bench", batch_size=batch_size)
    try:
        return await ingester.drain_once()
    finally:
        await ingester.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=50_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="oros-bench-ingest-"))
    base, servers = embedded.resolve(replace(Settings.from_env(), data_dir=tmp, clickhouse_url=f"chdb://{tmp}/ch"),
                                     prefer_local=True)
    settings = replace(base, clickhouse_database=f"bench_{os.getpid()}", redis_prefix=f"bench:{os.getpid()}:")
    try:
        migrate_clickhouse(settings)
        t = time.perf_counter()
        asyncio.run(fill(settings, args.events))
        print(f"appended {args.events} events to the stream in {time.perf_counter() - t:.1f}s")
        t = time.perf_counter()
        rows = asyncio.run(drain(settings, args.batch))
        elapsed = time.perf_counter() - t
        stored = clickhouse_client(settings).query("SELECT count() FROM events").result_rows[0][0]
        print(f"ingested {rows} events ({stored} in ClickHouse) in {elapsed:.1f}s, batches of {args.batch}")
        print(f"ingest: {rows / elapsed:,.0f} events/s")
    finally:
        async def cleanup() -> None:
            redis = redis_client(settings)
            await redis.delete(settings.keys.stream, settings.keys.dead_letter)
            await redis.aclose()

        asyncio.run(cleanup())
        servers.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
