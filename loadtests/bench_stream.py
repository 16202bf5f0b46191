"""Benchmark: how many click events one Redis core appends, as the trackers' flushes send them.

Starts its own redis-server (AOF on and fsynced before every reply as docker-compose.yml runs it;
``--fsync everysec`` for once a second), optionally a replica,
and has ``--clients`` connections send the tracker's flush (``oros.stream.packed``: one EVALSHA
that XADDs a batch and HSETs its click-index entries, then ``WAIT 1`` with ``--replica``) back to
back for ``--duration`` seconds. Prints events/s and Redis's own CPU (``INFO cpu``), so events per
Redis CPU-second is the capacity of one stream shard's core, whatever else shares this machine;
then the memory an event takes in the stream and a click in the click index (``MEMORY USAGE``),
which size a shard's RAM (docs/scaling.md):

    .venv/bin/python loadtests/bench_stream.py [--batch 64] [--clients 8] [--duration 5] [--replica] [--fsync everysec]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests.bench_tracker import add_fsync_option, start_redis, stop
from oros import clickindex, stream
from oros.events import Event, uuid7_str
from oros.keys import Keys

LOAD_CORES = "0"  # Redis (and its replica) on one core: the capacity of one shard's core
USER_AGENT = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1"


def batch(size: int) -> tuple[list[bytes], list]:
    """A flush's worth of clicks as the tracker encodes them, each with its click-index entry."""
    events, index = [], []
    for _ in range(size):
        click_id = uuid7_str()
        event = Event(event_id=click_id, event_type="click", ts_ms=int(time.time() * 1000),
                      campaign_id="0192f0c2-0000-7000-8000-000000000002",
                      link_id="0192f0c2-0000-7000-8000-000000000001",
                      creator_id="0192f0c2-0000-7000-8000-000000000003", ip="203.0.113.7", user_agent=USER_AGENT,
                      referrer="https://www.instagram.com/")
        events.append(event.encode())
        index.append(clickindex.entry(click_id, clickindex.encode({"link_id": event.link_id})))
    return events, index


async def client(port: int, command: bytes, replies: int, until: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    while time.monotonic() < until:
        writer.write(command)
        for _ in range(replies):
            line = await reader.readline()
            if line.startswith(b"-"):
                raise RuntimeError(line.decode())
        sent += 1
    writer.close()
    return sent


def cpu_seconds(client_: redis.Redis) -> float:
    info = client_.info("cpu")
    return info["used_cpu_sys"] + info["used_cpu_user"]


async def run(args, port: int) -> None:
    control = redis.Redis(port=port)
    control.script_load(stream.APPEND_LUA)
    shard = Keys("bench:").shard(0)
    events, index = batch(args.batch)
    command = stream.packed(shard, 3600, events, index)
    replies = 1
    if args.replica:
        command += stream.packed_wait(1, 1000)
        replies = 2
    await asyncio.gather(*(client(port, command, replies, time.monotonic() + 1) for _ in range(args.clients)))  # warm
    cpu_before, started = cpu_seconds(control), time.monotonic()
    flushes = sum(await asyncio.gather(*(client(port, command, replies, started + args.duration)
                                         for _ in range(args.clients))))
    elapsed, cpu = time.monotonic() - started, cpu_seconds(control) - cpu_before
    appended = flushes * args.batch
    print(f"batch {args.batch}, {args.clients} clients{', WAIT 1' if args.replica else ''}: "
          f"{appended / elapsed:,.0f} events/s, Redis CPU {cpu / elapsed:.0%} of a core, "
          f"{appended / cpu:,.0f} events per Redis CPU-second")
    print(f"memory: {control.memory_usage(shard.stream, samples=0) / control.xlen(shard.stream):.0f} bytes per event"
          f" in the stream, {index_bytes(control, shard):.0f} bytes per click in the click index")


def index_bytes(control: redis.Redis, shard, clicks: int = 100_000) -> float:
    """A bucket hash of ``clicks`` distinct entries, as a 10-minute bucket holds them: bytes per entry."""
    key = shard.clicks(0)
    value = clickindex.encode({"link_id": "0192f0c2-0000-7000-8000-000000000001",
                               "campaign_id": "0192f0c2-0000-7000-8000-000000000002",
                               "creator_id": "0192f0c2-0000-7000-8000-000000000003",
                               "business_id": "0192f0c2-0000-7000-8000-000000000004"})
    for _ in range(0, clicks, 10_000):
        control.hset(key, mapping={uuid7_str(): value for _ in range(10_000)})
    return control.memory_usage(key, samples=0) / control.hlen(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="events per flush")
    parser.add_argument("--clients", type=int, default=8, help="connections flushing at once (tracker workers)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--replica", action="store_true", help="a replica, and WAIT 1 after every flush")
    add_fsync_option(parser)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server not found")
    workdir = Path(tempfile.mkdtemp(prefix="oros-bench-stream-"))
    master, port = start_redis(workdir, LOAD_CORES, fsync=args.fsync)
    replica = start_redis(workdir, LOAD_CORES, fsync=args.fsync, replica_of=port)[0] if args.replica else None
    try:
        asyncio.run(run(args, port))
    finally:
        for proc in (replica, master):
            if proc is not None:
                stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
