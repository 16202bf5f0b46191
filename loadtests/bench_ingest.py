"""Ingest throughput: N events appended to the Redis stream, then drained into ClickHouse.

    .venv/bin/python loadtests/bench_ingest.py --events 500000 --enrich --no-enrich

Uses a throwaway key prefix on the configured (or local, or embedded) Redis
and a temporary chDB directory. ``--no-enrich`` drains the events as the edge
wrote them, ``--enrich`` through ``ingest.enrich`` with IPs anonymized (the
dearer case); given both (or neither), both run on the same events, one after
the other, and the last line is the enriched rate over the plain one. The
events are a realistic mix: a few thousand distinct user agents (browsers,
in-app browsers, bots) drawn with a long tail, addresses spread over tens of
thousands of networks (IPv4 and IPv6), a few hundred referrers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
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

AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS {a}_{b} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/{a}.{b} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android {a}; SM-S91{b}B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/12{b}.0.{c}.0 "
    "Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/12{b}.0.{c}.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_{b}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{a}.{b} "
    "Safari/605.1.15",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:12{b}.0) Gecko/20100101 Firefox/12{b}.{c}",
    "Mozilla/5.0 (iPhone; CPU iPhone OS {a}_{b} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 Instagram {c}.0.0.{a}.{b} (iPhone15,2; iOS {a}_{b}; en_US; en; scale=3.00; 1179x2556)",
    "Mozilla/5.0 (Linux; Android {a}; Pixel {b}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/12{b}.0.{c}.0 "
    "Mobile Safari/537.36 [FBAN/EMA;FBLC/en_US;FBAV/{c}.0.0.{a}.{b};]",
    "Mozilla/5.0 (compatible; Googlebot/2.{b}; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; SemrushBot/{a}~bl; +http://www.semrush.com/bot.html)",
    "facebookexternalhit/1.{b} (+http://www.facebook.com/externalhit_uatext.php)",
]


def mix(n: int, seed: int = 7) -> list[tuple[str, str, str]]:
    """``n`` (ip, user agent, referrer), drawn with a long tail (Pareto), the same for every run."""
    rng = random.Random(seed)
    agents = [t.format(a=rng.randint(10, 17), b=rng.randint(0, 9), c=rng.randint(1000, 6999)) for t in AGENTS
              for _ in range(300)]
    networks = [f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}" for _ in range(40_000)]
    sites = [f"2{rng.randint(0, 0xfff):03x}:{rng.randint(1, 0xffff):x}:{rng.randint(1, 0xffff):x}"
             for _ in range(20_000)]
    referrers = [f"https://{rng.choice(['www.', 'm.', ''])}site{i}.example/{rng.randint(1, 99)}" for i in range(300)]

    def tail(items: list) -> str:
        return items[min(int(rng.paretovariate(1.0)) - 1, len(items) - 1)]

    def ip() -> str:
        if rng.random() < 0.3:  # about the share of IPv6 in traffic: a site's /48, a device's own bits
            return f"{tail(sites)}:{rng.randint(0, 0xffff):x}:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}::1"
        return f"{tail(networks)}.{rng.randint(1, 254)}"

    return [(ip(), tail(agents), tail(referrers)) for _ in range(n)]


async def fill(settings: Settings, visitors: list[tuple[str, str, str]]) -> None:
    redis = redis_client(settings)
    campaign, link, creator = (str(uuid.uuid4()) for _ in range(3))
    now = int(time.time() * 1000)
    n = len(visitors)
    try:
        for start in range(0, n, 10_000):
            async with redis.pipeline(transaction=False) as pipe:
                for i in range(start, min(n, start + 10_000)):
                    ip, agent, referrer = visitors[i]
                    event = Event(event_id=str(uuid7(now + i)), event_type="click", ts_ms=now + i,
                                  campaign_id=campaign, link_id=link, creator_id=creator, ip=ip,
                                  user_agent=agent, referrer=referrer)
                    pipe.xadd(settings.keys.stream, {STREAM_FIELD: event.encode()})
                await pipe.execute()
    finally:
        await redis.aclose()


async def drain(settings: Settings, batch_size: int, enrich: bool) -> int:
    ingester = Ingester(settings, "bench", batch_size=batch_size, enrich=enrich)
    try:
        return await ingester.drain_once()
    finally:
        await ingester.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--enrich", action="store_true", help="drain through ingest.enrich (IPs anonymized)")
    parser.add_argument("--no-enrich", action="store_true", help="drain the events as the edge wrote them")
    args = parser.parse_args()
    modes = [m for m, on in (("plain", args.no_enrich), ("enriched", args.enrich)) if on] or ["plain", "enriched"]
    tmp = Path(tempfile.mkdtemp(prefix="oros-bench-ingest-"))
    base, servers = embedded.resolve(replace(Settings.from_env(), data_dir=tmp, clickhouse_url=f"chdb://{tmp}/ch"),
                                     prefer_local=True)
    settings = replace(base, clickhouse_database=f"bench_{os.getpid()}", redis_prefix=f"bench:{os.getpid()}:",
                       anonymize_ip=True, ip_hash_key=os.urandom(32).hex())
    visitors = mix(args.events)
    rates: dict[str, float] = {}
    try:
        for mode in modes:
            run = replace(settings, clickhouse_database=f"{settings.clickhouse_database}_{mode}")
            migrate_clickhouse(run)
            t = time.perf_counter()
            asyncio.run(fill(run, visitors))
            print(f"{mode}: appended {args.events} events to the stream in {time.perf_counter() - t:.1f}s")
            t = time.perf_counter()
            rows = asyncio.run(drain(run, args.batch, enrich=mode == "enriched"))
            elapsed = time.perf_counter() - t
            stored = clickhouse_client(run).query("SELECT count() FROM events").result_rows[0][0]
            print(f"{mode}: ingested {rows} events ({stored} in ClickHouse) in {elapsed:.1f}s, batches of {args.batch}")
            rates[mode] = rows / elapsed
            print(f"ingest {mode}: {rates[mode]:,.0f} events/s")
        if len(rates) == 2:
            print(f"enriched / plain: {rates['enriched'] / rates['plain']:.2f}x (target >= 0.70x)")
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
