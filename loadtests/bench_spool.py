"""Spool-mode throughput: what one fdatasync per batch costs while Redis is down.

    .venv/bin/python loadtests/bench_spool.py [--duration 5] [--concurrency 64] [--dir DIR]

Runs the appender in-process, with a Redis nobody listens on, so every batch
goes to the spool (tracker/spool.py) in a temporary directory under ``--dir``
(default: this checkout, so the disk a tracker's ``OROS_DATA_DIR`` would be
on). ``--concurrency`` clients each append a click event and wait for it, as
many redirects would. It runs twice: as shipped (each batch written and
fdatasynced before it is acknowledged) and with fdatasync made a no-op (the
old behaviour: the kernel's page cache only). Prints events/s, batches/s and
the mean batch for each, and the ratio as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

import tracker.spool
from oros.events import Event, uuid7_str
from oros.keys import Keys
from tracker.appender import Appender
from tracker.metrics import Metrics
from tracker.spool import Spool


class NoSync:
    """``os`` without fdatasync: the spool as it was before batches were synced."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def fdatasync(fd: int) -> None:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run(directory: Path, duration_s: float, concurrency: int) -> tuple[int, int]:
    metrics = Metrics()
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    spool = Spool(directory, metrics)
    appender = Appender(dead, Keys("bench-spool:"), spool, metrics, index_ttl_s=60, max_batch=5000)
    appender.start()
    event = Event(event_id=uuid7_str(), event_type="click", ts_ms=1, campaign_id="c", link_id="l",
                  user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)" * 3).encode()
    stop = time.monotonic() + duration_s
    done = 0

    async def client() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await appender.append(event)
            done += 1

    await appender.append(event)  # Redis refused once: spooling from here on
    await asyncio.gather(*(client() for _ in range(concurrency)))
    await appender.close()
    spool.close()
    await dead.aclose()
    return done, sum(metrics.batch_size.counts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    rates = {}
    for name, system in (("fdatasync per batch", os), ("no sync (before)", NoSync())):
        tracker.spool.os = system
        with tempfile.TemporaryDirectory(prefix="bench-spool-", dir=args.dir) as directory:
            events, batches = asyncio.run(run(Path(directory), args.duration, args.concurrency))
        rates[name] = events / args.duration
        print(f"{name:20} {rates[name]:9.0f} events/s  {batches / args.duration:7.0f} batches/s  "
              f"{events / max(batches, 1):6.1f} events/batch")
    tracker.spool.os = os
    synced, unsynced = rates.values()
    print(f"spool synced/unsynced = {synced / unsynced:.2f} ({synced:.0f}/{unsynced:.0f} events/s)")


if __name__ == "__main__":
    main()
