"""A flood of made-up codes against real links: real links' p99 and errors, with and without the flood.

    .venv/bin/python loadtests/bench_flood.py [--links 100000] [--duration 8] [--tree PATH]

Makes a scratch Postgres database with ``--links`` links (the configured, or
local, or embedded Postgres and Redis), then runs ``oros tracker`` (one
worker) from ``--tree`` (default: this checkout; pass an older checkout to
measure it the same way). Real clients (16 connections) click links drawn at
random from all of them, so most clicks miss the process cache and many miss
Redis too, as real traffic over many links does; the flood (48 connections)
asks for random codes that fit the grammar, each from its own address
(``X-Forwarded-For``, the tracker trusting 127.0.0.1 as its proxy). Three
phases: real clients alone, real clients during the flood, and the flood's
own answers. Prints, per phase, requests, non-302 answers, p50 and p99, and
how many link lookups reached Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oros import embedded  # noqa: E402
from oros.migrate import migrate_postgres  # noqa: E402
from oros.settings import Settings  # noqa: E402

LINKS_SQL = """
WITH b AS (INSERT INTO users (email) VALUES ('flood-biz@example.com') RETURNING id),
     c AS (INSERT INTO users (email) VALUES ('flood-creator@example.com') RETURNING id),
     k AS (INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget, status,
                                  destination_url)
           SELECT id, 'Flood', 'click', 0.50, 100.00, 'active', 'https://shop.example.com/' FROM b RETURNING id)
INSERT INTO tracking_links (campaign_id, creator_id, code, url, destination_url)
SELECT k.id, c.id, 'real' || n, 'http://t/real' || n, 'https://shop.example.com/p?n=' || n
  FROM k, c, generate_series(1, %(links)s) n
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_lookups(metrics: str) -> int:
    for line in metrics.splitlines():
        if line.startswith('oros_tracker_link_cache_total{layer="postgres"}'):
            return int(float(line.split()[-1]))
    return 0


async def clients(url: str, paths, connections: int, duration_s: float, forwarded: bool) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + duration_s
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal errors
            while time.monotonic() < stop:
                client_ip = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
                headers = {"X-Forwarded-For": client_ip} if forwarded else {}
                started = time.perf_counter()
                async with session.get(url + next(paths), headers=headers, allow_redirects=False) as response:
                    await response.read()
                    latencies.append(time.perf_counter() - started)
                    if response.status != 302:
                        errors += 1

        await asyncio.gather(*(one() for _ in range(connections)))
    return latencies, errors


def report(name: str, latencies: list[float], errors: int, lookups: int) -> None:
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    print(f"{name:34} {len(latencies):7} requests  {errors:6} not 302  p50 {p(0.5):6.2f} ms  p99 {p(0.99):7.2f} ms"
          f"  postgres lookups {lookups}")


async def measure(base_url: str, links: int, duration_s: float) -> None:
    def real():
        while True:
            yield f"/real{random.randint(1, links)}"

    async def lookups() -> int:
        async with aiohttp.ClientSession() as session, session.get(base_url + "/metrics") as response:
            return pg_lookups(await response.text())

    before = await lookups()
    report("real links alone", *await clients(base_url, real(), 16, duration_s, False), await lookups() - before)
    before = await lookups()
    # The flood from another process, so it does not share this event loop with the real clients.
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        flood = asyncio.get_running_loop().run_in_executor(pool, _flood, base_url, duration_s)
        real_lat, real_err = await clients(base_url, real(), 16, duration_s, False)
        flood_lat, flood_err = await flood
    used = await lookups() - before
    report("real links during the flood", real_lat, real_err, used)
    report("the flood (made-up codes)", flood_lat, flood_err, used)


def _flood(base_url: str, duration_s: float) -> tuple[list[float], int]:
    def made_up():
        while True:
            yield "/" + secrets.token_urlsafe(9)[:12].replace("-", "a").replace("_", "b")

    return asyncio.run(clients(base_url, made_up(), 48, duration_s, True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--links", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--tree", type=Path, default=ROOT)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    base, servers = embedded.resolve(replace(Settings.from_env(), data_dir=tmp), prefer_local=True)
    db = f"bench_flood_{os.getpid()}"
    with psycopg.connect(base.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    settings = replace(base, database_url=base.database_url.rsplit("/", 1)[0] + f"/{db}",
                       redis_prefix=f"bench-flood-{os.getpid()}:")
    proc = None
    try:
        migrate_postgres(settings)
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(LINKS_SQL, {"links": args.links})
        port = free_port()
        env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
               "OROS_REDIS_PREFIX": settings.redis_prefix, "OROS_DATA_DIR": str(tmp),
               "OROS_TRUSTED_PROXIES": "127.0.0.1/32", "CLICKHOUSE_URL": f"chdb://{tmp}/ch"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "oros_cli", "--log-level", "ERROR", "tracker", "--port", str(port)],
            cwd=args.tree, env=env)
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError as exc:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the tracker did not start") from exc
                time.sleep(0.2)
        time.sleep(2)  # the known codes load
        asyncio.run(measure(base_url, args.links, args.duration))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        servers.stop()


if __name__ == "__main__":
    main()
