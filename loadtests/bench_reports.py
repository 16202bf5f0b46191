"""How fast ``GET /v1/campaigns/{id}/stats`` answers over millions of events.

Builds a throwaway Postgres database and a chDB directory (or uses
``CLICKHOUSE_URL``), fills ClickHouse with ``--events`` raw events over 31
days (``--share`` of them for the measured campaign, the rest spread over 99
others) and Postgres with ``--decisions`` settler decisions for that
campaign, then times the real endpoint in-process, ``--runs`` times per
query, and prints the median and the worst. Everything it made is dropped.

    .venv/bin/python loadtests/bench_reports.py --events 5000000 --decisions 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from aiohttp.test_utils import TestClient, TestServer

from admin_api.app import create_app
from admin_api.auth import issue_token
from oros import embedded
from oros.connections import clickhouse_client, pg_connect
from oros.migrate import migrate_clickhouse, migrate_postgres
from oros.settings import Settings

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
SPAN = timedelta(days=31)

# Generated inside ClickHouse: no Python loop over millions of rows.
FILL_EVENTS = """
INSERT INTO events (event_id, event_type, ts, campaign_id, creator_id, value, ip, user_agent, referrer,
                    is_bot, bot_reason, source, metadata)
SELECT generateUUIDv4(number),
       multiIf(number % 10 < 7, 'click', number % 10 < 9, 'conversion', 'sale'),
       fromUnixTimestamp64Milli({start_ms:Int64} + toInt64(cityHash64(number) % {span_ms:UInt64}), 'UTC'),
       if(number % 1000 < {share_permille:UInt32}, toUUID({campaign:String}),
          reinterpretAsUUID(cityHash64(number % 99))),
       toUUID({creator:String}),
       if(number % 10 = 9, toDecimal64(number % 10000, 2) / 100, NULL),
       IPv4NumToString(toUInt32(cityHash64(number, 1) % 4294967295)), 'bench', '',
       number % 50 = 0, if(number % 50 = 0, 'ua', ''), 'redirect', '{}'
  FROM numbers({n:UInt64})
"""

FILL_DECISIONS = """
INSERT INTO events (campaign_id, creator_id, event_type, occurred_at, status, rejection_reason,
                    payout_amount, platform_fee, paid)
SELECT %(campaign)s, %(creator)s,
       (ARRAY['click', 'click', 'click', 'conversion', 'sale'])[g %% 5 + 1],
       %(start)s + ((g::bigint * 7919) %% 2678400) * interval '1 second',
       CASE WHEN g %% 4 = 0 THEN 'rejected' ELSE 'paid' END,
       CASE WHEN g %% 4 = 0 THEN (ARRAY['duplicate_click', 'bot', 'outside_dates'])[g %% 3 + 1] END,
       CASE WHEN g %% 4 <> 0 THEN 0.50 END, CASE WHEN g %% 4 <> 0 THEN 0.05 END, g %% 4 <> 0
  FROM generate_series(1, %(n)s) AS g
"""

QUERIES = [
    ("day granularity, 31 days", "day", START, START + SPAN),
    ("hour granularity, 7 days", "hour", START + timedelta(days=10), START + timedelta(days=17)),
    ("hour granularity, 31 days", "hour", START, START + SPAN),
]


def prepare(settings: Settings, events: int, decisions: int, share: float) -> tuple[str, str]:
    with pg_connect(settings, autocommit=True) as pg:
        business, creator = (
            pg.execute("INSERT INTO users (email) VALUES (%s) RETURNING id::text AS id", (email,)).fetchone()["id"]
            for email in ("bench-b@example.com", "bench-c@example.com")
        )
        pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'business')", (business,))
        campaign = pg.execute(
            "INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget)"
            " VALUES (%s, 'bench', 'click', 0.50, 1000000) RETURNING id::text AS id", (business,)
        ).fetchone()["id"]
        started = time.perf_counter()
        pg.execute(FILL_DECISIONS, {"campaign": campaign, "creator": creator, "start": START, "n": decisions})
        pg.execute("ANALYZE events")
        print(f"postgres: {decisions:,} decisions in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    clickhouse_client(settings).command(FILL_EVENTS, parameters={
        "start_ms": int(START.timestamp() * 1000), "span_ms": int(SPAN.total_seconds() * 1000),
        "share_permille": int(share * 1000), "campaign": campaign, "creator": creator, "n": events,
    })
    print(f"clickhouse: {events:,} events ({share:.0%} for the measured campaign) in "
          f"{time.perf_counter() - started:.1f} s")
    return campaign, issue_token(settings, business)


async def measure(settings: Settings, campaign: str, token: str, runs: int) -> None:
    async with TestClient(TestServer(create_app(settings))) as client:
        for label, granularity, start, end in QUERIES:
            timings, body = [], None
            for _ in range(runs):
                started = time.perf_counter()
                resp = await client.get(f"/v1/campaigns/{campaign}/stats",
                                        params={"from": start.isoformat(), "to": end.isoformat(),
                                                "granularity": granularity},
                                        headers={"Authorization": f"Bearer {token}"})
                body = await resp.json()
                timings.append((time.perf_counter() - started) * 1000)
                assert resp.status == 200, body
            totals = body["totals"]
            print(f"{label:28s} median {statistics.median(timings):7.0f} ms  max {max(timings):7.0f} ms  "
                  f"({len(body['buckets'])} buckets, {totals['clicks']['all']:,} clicks, "
                  f"{sum(totals['rejections'].values()):,} rejections)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--share", type=float, default=0.4, help="fraction of the events in the measured campaign")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = Settings.from_env()
        clickhouse_url = env.clickhouse_url or f"chdb://{tmp}/chdb"
        base, servers = embedded.resolve(replace(env, data_dir=Path(tmp), clickhouse_url=clickhouse_url),
                                         prefer_local=True)
        name = f"oros_bench_{secrets.token_hex(3)}"
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        settings = replace(base, database_url=base.database_url.rsplit("/", 1)[0] + f"/{name}",
                           clickhouse_database=name)
        try:
            migrate_postgres(settings)
            migrate_clickhouse(settings)
            campaign, token = prepare(settings, args.events, args.decisions, args.share)
            asyncio.run(measure(settings, campaign, token, args.runs))
        finally:
            clickhouse_client(settings, database="").command(f"DROP DATABASE IF EXISTS `{name}`")
            with psycopg.connect(base.database_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            servers.stop()


if __name__ == "__main__":
    main()
