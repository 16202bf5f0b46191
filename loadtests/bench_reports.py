"""How fast the reports answer over millions of events: stats (plain, grouped, filtered, a
creator's own) and the CSV exports.

Builds a throwaway Postgres database and a chDB directory (or uses
``CLICKHOUSE_URL``), fills ClickHouse with ``--events`` raw, enriched events
over 31 days (``--share`` of them for the measured campaign, on its 200 links
of 20 creators, the rest spread over 99 others) and Postgres with
``--decisions`` settler decisions for that campaign (and ``--earnings-rows``
paid events of one more creator, on a campaign of their own, for a
million-row earnings export), then times the real
endpoints in-process, ``--runs`` times per query, and prints the median, the
worst, and the median as a multiple of a bare count of the campaign's events
in both stores measured just before it (a unit a loaded machine slows as
much as the reports). Everything it made is dropped.

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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from aiohttp.test_utils import TestClient, TestServer

from admin_api.app import create_app
from admin_api.auth import issue_token
from oros import embedded
from oros.connections import clickhouse_client, pg_connect
from oros.migrate import migrate_clickhouse, migrate_postgres
from oros.settings import Settings

START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=31)

# Generated inside ClickHouse: no Python loop over millions of rows.
FILL_EVENTS = """
INSERT INTO events (event_id, event_type, ts, campaign_id, link_id, creator_id, value, ip, user_agent, referrer,
                    is_bot, bot_reason, source, metadata, country, device_type, browser, browser_version, os,
                    os_version, referrer_host, ip_hash)
SELECT generateUUIDv4(number),
       multiIf(number % 10 < 7, 'click', number % 10 < 9, 'conversion', 'sale'),
       fromUnixTimestamp64Milli({start_ms:Int64} + toInt64(cityHash64(number) % {span_ms:UInt64}), 'UTC'),
       if(mine, toUUID({campaign:String}), reinterpretAsUUID(cityHash64(number % 99))),
       if(mine, toUUID({links:Array(String)}[number % 200 + 1]), reinterpretAsUUID(cityHash64(number, 7))),
       if(mine, toUUID({creators:Array(String)}[number % 20 + 1]), reinterpretAsUUID(cityHash64(number % 99, 3))),
       if(number % 10 = 9, toDecimal64(number % 10000, 2) / 100, NULL),
       IPv4NumToString(toUInt32(cityHash64(number, 1) % 4294967295)), 'bench', '',
       number % 50 = 0, if(number % 50 = 0, 'crawler', ''), 'redirect', '{}',
       ['US', 'DE', 'FR', 'GB', 'BR', 'IN', 'JP', 'ES', 'IT', 'CA'][cityHash64(number, 2) % 10 + 1],
       ['mobile', 'mobile', 'desktop', 'tablet', 'bot'][cityHash64(number, 3) % 5 + 1],
       ['Mobile Safari', 'Chrome', 'Chrome Mobile', 'Firefox', 'Instagram'][cityHash64(number, 4) % 5 + 1], '17.4',
       ['iOS', 'Android', 'Windows', 'Mac OS X'][cityHash64(number, 5) % 4 + 1], '17',
       concat('site', toString(cityHash64(number, 6) % 300), '.example'), lower(hex(MD5(toString(number))))
  FROM (SELECT number, number % 1000 < {share_permille:UInt32} AS mine FROM numbers({n:UInt64}))
"""

FILL_DECISIONS = """
INSERT INTO events (campaign_id, creator_id, tracking_link_id, event_type, occurred_at, status, rejection_reason,
                    payout_amount, platform_fee, paid, country, device_type, first_visit)
SELECT %(campaign)s, (%(creators)s::uuid[])[g / 4 %% 20 + 1], (%(links)s::uuid[])[g %% 200 + 1],
       (ARRAY['click', 'click', 'click', 'conversion', 'sale'])[g %% 5 + 1],
       %(start)s + ((g::bigint * 7919) %% 2678400) * interval '1 second',
       CASE WHEN g %% 4 = 0 THEN 'rejected' ELSE 'paid' END,
       CASE WHEN g %% 4 = 0 THEN (ARRAY['duplicate_click', 'bot', 'outside_dates'])[g %% 3 + 1] END,
       CASE WHEN g %% 4 <> 0 THEN 0.50 END, CASE WHEN g %% 4 <> 0 THEN 0.05 END, g %% 4 <> 0,
       (ARRAY['US', 'DE', 'FR', 'GB', 'BR', 'IN', 'JP', 'ES', 'IT', 'CA'])[g %% 10 + 1],
       (ARRAY['mobile', 'mobile', 'desktop', 'tablet', 'bot'])[g %% 5 + 1], g %% 3 = 0
  FROM generate_series(1, %(n)s) AS g
"""

# One creator's paid events on a campaign of their own (the earnings export of a million rows).
FILL_EARNINGS = """
INSERT INTO events (campaign_id, creator_id, event_type, occurred_at, status, payout_amount, platform_fee, paid)
SELECT %(campaign)s, %(creator)s, 'click', %(start)s + ((g::bigint * 7919) %% 2678400) * interval '1 second', 'paid',
       0.50, 0.05, true
  FROM generate_series(1, %(n)s) AS g
"""

WEEK = (START + timedelta(days=10), START + timedelta(days=17))
# (label, path: "stats" (the campaign's), "me" (the first creator's) or an export, granularity, from, to, extra)
QUERIES = [
    ("stats day, 31 days", "stats", "day", START, START + SPAN, {}),
    ("stats day, 31 days, ends mid-hour", "stats", "day", START + timedelta(minutes=17),
     START + SPAN - timedelta(minutes=23), {}),
    ("stats hour, 7 days", "stats", "hour", *WEEK, {}),
    ("stats hour, 31 days", "stats", "hour", START, START + SPAN, {}),
    ("stats day, by country", "stats", "day", START, START + SPAN, {"group_by": "country"}),
    ("stats day, by link (200)", "stats", "day", START, START + SPAN, {"group_by": "link"}),
    ("stats day, by referrer (300)", "stats", "day", START, START + SPAN, {"group_by": "referrer"}),
    ("stats day, US mobile only", "stats", "day", START, START + SPAN, {"country": "US", "device": "mobile"}),
    ("me/stats day, by link", "me", "day", START, START + SPAN, {"group_by": "link"}),
    ("events.csv, 7 days", "events.csv", None, *WEEK, {}),
    ("earnings.csv, 31 days", "earnings.csv", None, START, START + SPAN, {}),
    ("earnings.csv, the big earner", "earner.csv", None, START, START + SPAN, {}),
]
PATHS = {"stats": "/v1/campaigns/{campaign}/stats", "me": "/v1/me/stats",
         "events.csv": "/v1/campaigns/{campaign}/events.csv", "earnings.csv": "/v1/me/earnings.csv",
         "earner.csv": "/v1/me/earnings.csv"}
TOKENS = {"me": "me", "earnings.csv": "me", "earner.csv": "earner"}


def prepare(settings: Settings, events: int, decisions: int, share: float,
            earnings_rows: int) -> tuple[str, dict[str, str]]:
    with pg_connect(settings, autocommit=True) as pg:
        business, earner, *creators = (
            pg.execute("INSERT INTO users (email) VALUES (%s) RETURNING id::text AS id", (email,)).fetchone()["id"]
            for email in ("bench-b@example.com", "bench-e@example.com",
                          *(f"bench-c{i}@example.com" for i in range(20)))
        )
        pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'business'), (%s, 'creator'), (%s, 'creator')",
                   (business, creators[0], earner))
        campaign = pg.execute(
            "INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget, destination_url)"
            " VALUES (%s, 'bench', 'click', 0.50, 1000000, 'https://example.com/') RETURNING id::text AS id",
            (business,)
        ).fetchone()["id"]
        links = [pg.execute("INSERT INTO tracking_links (campaign_id, creator_id, code, url, destination_url)"
                            " VALUES (%s, %s, %s, 'http://t/x', 'https://example.com') RETURNING id::text AS id",
                            (campaign, creators[i % 20], f"bench{i:04d}")).fetchone()["id"] for i in range(200)]
        started = time.perf_counter()
        pg.execute(FILL_DECISIONS, {"campaign": campaign, "creators": creators, "links": links, "start": START,
                                    "n": decisions})
        own = pg.execute(
            "INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget, status)"
            " VALUES (%s, 'earner', 'click', 0.50, 1000000, 'active') RETURNING id::text AS id", (business,)
        ).fetchone()["id"]
        pg.execute(FILL_EARNINGS, {"campaign": own, "creator": earner, "start": START, "n": earnings_rows})
        pg.execute("ANALYZE events, event_hours")  # as autovacuum would after a bulk load
        print(f"postgres: {decisions:,} decisions and {earnings_rows:,} paid events of one creator in"
              f" {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    clickhouse_client(settings).command(FILL_EVENTS, parameters={
        "start_ms": int(START.timestamp() * 1000), "span_ms": int(SPAN.total_seconds() * 1000),
        "share_permille": int(share * 1000), "campaign": campaign, "creators": creators, "links": links,
        "n": events,
    })
    print(f"clickhouse: {events:,} events ({share:.0%} for the measured campaign) in "
          f"{time.perf_counter() - started:.1f} s")
    return campaign, {"stats": issue_token(settings, business), "me": issue_token(settings, creators[0]),
                      "earner": issue_token(settings, earner)}


# The unit each timing is also given in, measured just before it: a bare count of the campaign's
# events in both stores (the least any report reads), so a loaded machine slows both alike.
BASELINE_CLICKHOUSE = "SELECT count() FROM events WHERE campaign_id = {campaign:UUID}"
BASELINE_POSTGRES = "SELECT count(*) FROM events WHERE campaign_id = %s"


def baseline_ms(settings: Settings, campaign: str, runs: int) -> float:
    timings = []
    with pg_connect(settings) as pg:
        for _ in range(runs):
            started = time.perf_counter()
            clickhouse_client(settings).query(BASELINE_CLICKHOUSE, parameters={"campaign": campaign})
            pg.execute(BASELINE_POSTGRES, (campaign,)).fetchone()
            timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


async def measure(settings: Settings, campaign: str, tokens: dict[str, str], runs: int) -> None:
    async with TestClient(TestServer(create_app(settings))) as client:
        for label, path, granularity, start, end, extra in QUERIES:
            unit = baseline_ms(settings, campaign, runs)
            token = tokens[TOKENS.get(path, "stats")]
            params = {"from": start.isoformat(), "to": end.isoformat(), **extra}
            if granularity:
                params["granularity"] = granularity
            timings, summary = [], ""
            for _ in range(runs):
                started = time.perf_counter()
                resp = await client.get(PATHS[path].format(campaign=campaign), params=params,
                                        headers={"Authorization": f"Bearer {token}"})
                assert resp.status == 200, await resp.text()
                if path.endswith(".csv"):
                    rows = 0
                    async for chunk in resp.content.iter_any():
                        rows += chunk.count(b"\n")
                    summary = f"{rows - 1:,} rows"
                else:
                    body = await resp.json()
                    totals = body["totals"]
                    summary = (f"{len(body['buckets'])} buckets, {len(body.get('groups', []))} groups, "
                               f"{totals['clicks']['all']:,} clicks, {totals['clicks']['unique']:,} unique")
                timings.append((time.perf_counter() - started) * 1000)
            median = statistics.median(timings)
            print(f"{label:30s} median {median:7.0f} ms  max {max(timings):7.0f} ms  = {median / unit:5.1f}x the bare"
                  f" count ({unit:.0f} ms)  ({summary})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--share", type=float, default=0.4, help="fraction of the events in the measured campaign")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--earnings-rows", type=int, default=1_000_000,
                        help="paid events of the creator whose earnings export is timed last")
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
                           clickhouse_database=name, jwt_secret=secrets.token_urlsafe(48),
                           stripe_webhook_secret=secrets.token_urlsafe(48))
        try:
            migrate_postgres(settings)
            migrate_clickhouse(settings)
            campaign, tokens = prepare(settings, args.events, args.decisions, args.share, args.earnings_rows)
            asyncio.run(measure(settings, campaign, tokens, args.runs))
        finally:
            clickhouse_client(settings, database="").command(f"DROP DATABASE IF EXISTS `{name}`")
            with psycopg.connect(base.database_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            servers.stop()


if __name__ == "__main__":
    main()
