"""How long each page of the web app waits for the API on a campaign with 1M events.

Seeds a throwaway database the way ``bench_reports.py`` does (``--events``
raw events in ClickHouse, all for one campaign unless ``--share`` says
otherwise, and ``--decisions`` settler decisions in Postgres), then replays,
for each main page, the API calls its module makes (admin_api/web/js/pages/),
in the same order: calls a page makes together (``Promise.all``) run
concurrently, a call that needs an earlier answer waits for it. A page's time
is the wall time until its last answer. Each page is also timed on an empty
campaign or creator of the same database, in the same run, and the ratio is
printed: how much the data costs. The machine is shared, so the milliseconds
are noisy; the ratios less so. ``/openapi.json`` (read once per page load,
then cached) is timed as its own line.

    .venv/bin/python loadtests/bench_webapp.py --events 1000000 --decisions 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from aiohttp.test_utils import TestClient, TestServer
from bench_reports import SPAN, START, prepare

from admin_api.app import create_app
from admin_api.auth import issue_token
from oros import embedded
from oros.accounts import create_admin
from oros.connections import clickhouse_client, pg_connect
from oros.migrate import migrate_clickhouse, migrate_postgres
from oros.settings import Settings
from settler.jobs import OWNER_JOBS

# The period the stats and earnings pages are opened with: the month the data covers.
PERIOD = f"from={START.isoformat().replace('+', '%2B')}&to={(START + SPAN).isoformat().replace('+', '%2B')}"

# page -> (whose token, stages); a stage is the calls the page makes at once. {c} is the campaign, {e} its
# live event; a leading "?" marks a call whose 404 the page expects and shows around (a creator reading a
# draft's title).
PAGES = {
    "business /campaigns": ("business", [["/v1/campaigns?mine=true&limit=100"]]),
    "business /campaigns/{id}": ("business", [["/v1/campaigns/{c}"], [
        "/v1/campaigns/{c}/creators?limit=50", "/v1/campaigns/{c}/links?limit=50"]]),
    "business stats (by country)": ("business", [["/v1/campaigns/{c}"], [
        f"/v1/campaigns/{{c}}/stats?{PERIOD}&group_by=country"]]),
    "business stats (by link)": ("business", [["/v1/campaigns/{c}"], [
        f"/v1/campaigns/{{c}}/stats?{PERIOD}&group_by=link"], ["/v1/campaigns/{c}/links?limit=200"]]),
    "business stats (hour, US only)": ("business", [["/v1/campaigns/{c}"], [
        f"/v1/campaigns/{{c}}/stats?{PERIOD}&granularity=hour&group_by=device&country=US"]]),
    "creator /browse": ("creator", [["/v1/campaigns?limit=50"]]),
    "creator /earnings": ("creator", [[f"/v1/me/earnings?{PERIOD}"]]),
    "creator /my-stats (by campaign)": ("creator", [[f"/v1/me/stats?{PERIOD}&group_by=campaign"], [
        "?/v1/campaigns/{c}"]]),
    "creator /wallet": ("creator", [["/v1/wallet", "/v1/wallet/ledger?limit=50", "/v1/withdrawals?limit=20"]]),
    "creator /live": ("creator", [["/v1/live-events?limit=20"]]),
    "business /live": ("business", [["/v1/live-events?limit=20"]]),
    # The event's numbers: the stats report over its live link since the event opened (a month here).
    "business /live/{id}": ("business", [["/v1/live-events/{e}"]]),
    "creator /live/new": ("creator", [["/v1/campaigns?limit=100"]]),
    "supporter /shares": ("supporter", [["/v1/me/rewards?source=share&limit=20"]]),
    "supporter /tips (sent, monthly)": ("supporter", [["/v1/tips?direction=sent&limit=20"],
                                                      ["/v1/tips/monthly?limit=20"]]),
    "supporter /memberships": ("supporter", [["/v1/membership-tiers", "/v1/me/memberships?limit=20"]]),
    "finance /finance": ("admin", [["/v1/admin/settlements?limit=20"]]),
    "finance /finance/reconcile": ("admin", [["/v1/admin/reconcile"]]),
    "finance /finance/kyc": ("admin", [["/v1/admin/users?kyc_status=pending&role=creator&limit=20",
                                             "/v1/admin/users?kyc_status=pending&role=supporter&limit=20"]]),
    "finance /finance/funding": ("admin", [["/v1/campaigns?status=draft&limit=20"]]),
    "finance /finance/withdrawals": ("admin", [["/v1/admin/withdrawals?status=requested"]]),
}


async def load_page(client: TestClient, token: str, stages: list[list[str]], world: dict) -> float:
    headers = {"Authorization": f"Bearer {token}"}

    async def call(path: str) -> None:
        resp = await client.get(path.lstrip("?").format(c=world["campaign"], e=world["live_event"]), headers=headers)
        assert resp.status == 200 or (resp.status == 404 and path.startswith("?")), \
            f"{path}: {resp.status} {await resp.text()}"
        await resp.read()

    started = time.perf_counter()
    for stage in stages:
        await asyncio.gather(*(call(path) for path in stage))
    return (time.perf_counter() - started) * 1000


async def measure(settings: Settings, full: dict, empty: dict, runs: int, events: int) -> None:
    async with TestClient(TestServer(create_app(settings, OWNER_JOBS))) as client:
        started = time.perf_counter()
        assert (await client.get("/openapi.json")).status == 200
        print(f"{'/openapi.json (once per page load)':34s} {(time.perf_counter() - started) * 1000:7.0f} ms")
        print(f"{'page':34s} {f'{events:,} ev':>12s} {'empty':>9s} {'ratio':>7s}   (median of {runs}; max)")
        for page, (who, stages) in PAGES.items():
            timings = {}
            for name, world in (("full", full), ("empty", empty)):
                token = world["tokens"][who]
                timings[name] = [await load_page(client, token, stages, world) for _ in range(runs)]
            med = {name: statistics.median(values) for name, values in timings.items()}
            print(f"{page:34s} {med['full']:10.0f} ms {med['empty']:7.0f} ms {med['full'] / med['empty']:6.1f}x"
                  f"   (max {max(timings['full']):.0f} ms)")


# A live event that has been live since the data starts, on the campaign's first link (as its live link):
# its page reads the report over that link for the whole month.
_LIVE_EVENT_SQL = """
WITH link AS (SELECT id, creator_id FROM tracking_links WHERE campaign_id = %(campaign)s ORDER BY code LIMIT 1),
     event AS (INSERT INTO live_events (creator_id, campaign_id, title, status, scheduled_at, started_at, created_at)
               SELECT creator_id, %(campaign)s, 'bench live', 'live', %(since)s, %(since)s, %(since)s FROM link
               RETURNING id)
UPDATE tracking_links SET live_event_id = (SELECT id FROM event) WHERE id = (SELECT id FROM link)
RETURNING live_event_id::text AS id
"""


def live_event(pg, campaign: str, since: datetime) -> str:
    return pg.execute(_LIVE_EVENT_SQL, {"campaign": campaign, "since": since}).fetchone()["id"]


def supporter(settings: Settings, pg, email: str) -> str:
    user = pg.execute("INSERT INTO users (email) VALUES (%s) RETURNING id::text AS id", (email,)).fetchone()["id"]
    pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'supporter')", (user,))
    return issue_token(settings, user)


def empty_world(settings: Settings, business_token: str, admin_token: str) -> dict:
    """The same business's second campaign, with no events (its live event opened now, on a link of its own),
    a creator who earned nothing, and a supporter who did nothing."""
    with pg_connect(settings, autocommit=True) as pg:
        business = pg.execute("SELECT user_id::text AS id FROM user_roles WHERE role = 'business'").fetchone()["id"]
        campaign = pg.execute(  # a destination: its live link needs one (links' check, 0032)
            "INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget, destination_url)"
            " VALUES (%s, 'empty', 'click', 0.50, 100, 'https://example.com/') RETURNING id::text AS id", (business,)
        ).fetchone()["id"]
        creator = pg.execute("INSERT INTO users (email) VALUES ('bench-empty@example.com') RETURNING id::text AS id"
                             ).fetchone()["id"]
        pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'creator')", (creator,))
        pg.execute("INSERT INTO tracking_links (campaign_id, creator_id, code, url, destination_url)"
                   " VALUES (%s, %s, 'benchempty', 'http://t/e', 'https://example.com')", (campaign, creator))
        event = live_event(pg, campaign, datetime.now(UTC))
        fan = supporter(settings, pg, "bench-empty-supporter@example.com")
    return {"campaign": campaign, "live_event": event,
            "tokens": {"business": business_token, "creator": issue_token(settings, creator), "admin": admin_token,
                       "supporter": fan}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--share", type=float, default=1.0, help="fraction of the events in the measured campaign")
    parser.add_argument("--earnings-rows", type=int, default=0,
                        help="paid events of another creator (bench_reports' earner; not a page measured here)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = Settings.from_env()
        clickhouse_url = env.clickhouse_url or f"chdb://{tmp}/chdb"
        base, servers = embedded.resolve(replace(env, data_dir=Path(tmp), clickhouse_url=clickhouse_url),
                                         prefer_local=True)
        name = f"oros_bench_web_{secrets.token_hex(3)}"
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        settings = replace(base, database_url=base.database_url.rsplit("/", 1)[0] + f"/{name}",
                           clickhouse_database=name, jwt_secret=secrets.token_urlsafe(48),
                           stripe_webhook_secret=secrets.token_urlsafe(48))
        try:
            migrate_postgres(settings)
            migrate_clickhouse(settings)
            campaign, tokens = prepare(settings, args.events, args.decisions, args.share, args.earnings_rows)
            admin = issue_token(settings, create_admin(settings, "bench-admin@example.com", secrets.token_hex(12)))
            with pg_connect(settings, autocommit=True) as pg:
                event = live_event(pg, campaign, START)
                fan = supporter(settings, pg, "bench-supporter@example.com")
            full = {"campaign": campaign, "live_event": event,
                    "tokens": {"business": tokens["stats"], "creator": tokens["me"], "admin": admin, "supporter": fan}}
            asyncio.run(measure(settings, full, empty_world(settings, tokens["stats"], admin), args.runs, args.events))
        finally:
            clickhouse_client(settings, database="").command(f"DROP DATABASE IF EXISTS `{name}`")
            with psycopg.connect(base.database_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            servers.stop()


if __name__ == "__main__":
    main()
