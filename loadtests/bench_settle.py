"""Settlement throughput against its physical ceiling and a naive baseline, measured in the same run.

    .venv/bin/python loadtests/bench_settle.py --events 1000000

Builds a throwaway Postgres database and a chDB directory, a realistic mix
of campaigns (60% pay per click, 25% per conversion, 15% per sale) and
creators (a tenth with a fee tier that starts mid-window, a twentieth owing
the platform), and events: human clicks with some bots and repeat clicks, and
conversions/sales naming earlier clicks. Then, in this order:

* one settle run over all of them (the settle rate and its phases);
* the ceiling: exactly the rows that run wrote (its events, its ledger
  legs, the campaign, earnings and link rows it changed), written with one
  COPY per table into a copy of the database taken just before the run:
  the same tables, indexes, constraints and triggers, so the wallets move
  by the same statement-level trigger. No settlement can write its rows
  faster than that; the run's ratio to it is printed (1.0 = as fast as
  COPY; the run may pass it, since it posts on two connections);
* the runs a scheduler makes after the backlog;
* the naive way on a sample (one transaction per event: lock the campaign,
  insert the event, insert its ledger legs, update the budget and
  earnings), and the speed-up ratio against it, as the last line.

    .venv/bin/python loadtests/bench_settle.py --events 1000000 --webhooks

``--rollup`` measures what the report sums' triggers (sql/postgres/0140, ``event_hours``)
cost the same way: copies of the loaded database settled without them and with them, in turn.

``--seed-indexes`` measures what the five single-column indexes of the seed that 0162 dropped cost:
copies of the loaded database settled as migrated and with those indexes made again, in turn.

``--workers 1 2`` measures how the settle scales with the connections posting campaigns at once
(``OROS_SETTLE_WORKERS``): copies of the loaded database settled with each, in turn.

``--webhooks`` measures what the webhook outbox triggers (sql/postgres/0066)
cost instead: the same ClickHouse events are settled into copies of the
loaded database, one without the triggers (as before 0066), one with them
and no endpoint, one where the business listens to its three event types and
one creator to earning.credited. Each variant runs ``--rounds`` times, in
turn, and the last lines are each rate over the one without triggers.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import click_mix

from ingest.enrich import Enricher
from ingest.writer import BatchWriter
from oros import embedded
from oros.connections import pg_connect
from oros.events import Event, uuid7
from oros.migrate import migrate_clickhouse, migrate_postgres
from oros.money import split_fee
from oros.settings import Settings
from settler.run import settle_once

CHUNK = 200_000


def setup(pg, n_campaigns: int, creators_per: int, rng: random.Random) -> list[dict]:
    """Campaigns with accepted creators and links; budgets sized so a few run out mid-run."""
    business = pg.execute("INSERT INTO users (email) VALUES (%s) RETURNING id::text AS id",
                          (f"biz-{uuid.uuid4().hex}@bench",)).fetchone()["id"]
    since = datetime.now(UTC) - timedelta(days=60)
    campaigns = []
    for i in range(n_campaigns):
        objective = rng.choices(["click", "conversion", "sale"], [60, 25, 15])[0]
        payout = {"click": Decimal("0.05"), "conversion": Decimal("2.50"), "sale": Decimal("7.25")}[objective]
        fund = Decimal("900000.00") if i % 10 else Decimal("100.00")
        cid = pg.execute(
            "INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget, destination_url)"
            " VALUES (%s, 'bench', %s, %s, %s, 'https://example.com/') RETURNING id::text AS id",
            (business, objective, payout, fund)
        ).fetchone()["id"]
        pg.execute("SELECT oros_fund_campaign(%s, %s, 'manual', 'bench', NULL)", (cid, fund))
        pg.execute("UPDATE campaigns SET status = 'active' WHERE id = %s", (cid,))
        pg.execute("UPDATE campaign_status_history SET changed_at = %s WHERE campaign_id = %s", (since, cid))
        links = []
        for _ in range(creators_per):
            creator = pg.execute("INSERT INTO users (email) VALUES (%s) RETURNING id::text AS id",
                                 (f"c-{uuid.uuid4().hex}@bench",)).fetchone()["id"]
            pg.execute("INSERT INTO campaign_creators (campaign_id, creator_id, status) VALUES (%s, %s, 'accepted')",
                       (cid, creator))
            link = pg.execute(
                "INSERT INTO tracking_links (campaign_id, creator_id, code, url, destination_url)"
                " VALUES (%s, %s, %s, 'http://t', 'https://example.com') RETURNING id::text AS id",
                (cid, creator, uuid.uuid4().hex[:16])).fetchone()["id"]
            links.append((creator, link))
        campaigns.append({"id": cid, "objective": objective, "payout": payout, "links": links, "rich": i % 10 > 0})
    tiers_and_debts(pg, [creator for c in campaigns for creator, _ in c["links"]])
    return campaigns, business


def tiers_and_debts(pg, creators: list[str]) -> None:
    """A tenth of the creators hold creator_pro since the middle of the events' window (their events before
    and after it pay different fees: two transfers), a twentieth owe 1.00 (their first earnings repay it)."""
    pro = creators[::10]
    pg.execute("INSERT INTO memberships (user_id, membership_type, status, billing_provider_id, started_at)"
               " SELECT u, 'creator_pro', 'active', 'sub_bench' || n, now() FROM unnest(%s::uuid[])"
               " WITH ORDINALITY AS x(u, n)", (pro,))
    pg.execute("INSERT INTO fee_history (user_id, membership_id, fee_pct, effective_from)"
               " SELECT user_id, id, 5, now() - interval '2 days' FROM memberships WHERE user_id = ANY(%s::uuid[])",
               (pro,))
    for creator in creators[5::20]:
        pg.execute("""INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction,
                                                  status, description)
                      SELECT w, t, 'refund', %(c)s, 1.00, d, 'settled', 'bench: a debt'
                        FROM (VALUES (oros_receivable_wallet(%(c)s), 'debit'),
                                     (oros_platform_wallet('clearing'), 'credit')) AS legs(w, d),
                             (SELECT gen_random_uuid() AS t) AS tr""", {"c": creator})


# Blocks allocated across the RIRs' regions, so the clicks' countries spread as real traffic's do.
PUBLIC_FIRST_OCTETS = (24, 31, 37, 46, 62, 66, 73, 77, 81, 86, 92, 98, 103, 109, 151, 176, 177, 185, 188, 193, 200,
                       212, 217)
REPEAT_VISITOR = "81.2.69.160"


def generate(campaigns: list[dict], business: str, n: int, rng: random.Random):
    """Yield events: per campaign, clicks first, then conversions naming those clicks.

    Clicks carry what browsers send (``click_mix``'s user agents and referrers, by weight) from public
    addresses, and are enriched by ingest's ``Enricher`` on loading, so each decided event has the
    country, device, browser, OS and referrer the report sums fan out over."""
    base = int(time.time() * 1000) - 3 * 86_400_000
    per = n // len(campaigns)
    agents = [ua for _, (ua, _) in click_mix.BROWSERS]
    agent_weights = [w for w, _ in click_mix.BROWSERS]
    referrers = [r or None for _, r in click_mix.REFERRERS]
    referrer_weights = [w for w, _ in click_mix.REFERRERS]
    for c in campaigns:
        conversions = per // 3 if c["objective"] != "click" else 0
        clicks = []
        for i in range(per - conversions):
            creator, link = c["links"][i % len(c["links"])]
            ts = base + rng.randrange(2 * 86_400_000)
            # 3% bots, and 5% repeat an earlier visitor's IP (duplicate clicks).
            ip = (f"{rng.choice(PUBLIC_FIRST_OCTETS)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                  if rng.random() > 0.05 else REPEAT_VISITOR)
            e = Event(event_id=str(uuid7(ts)), event_type="click", ts_ms=ts, campaign_id=c["id"], link_id=link,
                      creator_id=creator, ip=ip, is_bot=rng.random() < 0.03,
                      user_agent=rng.choices(agents, agent_weights)[0],
                      referrer=rng.choices(referrers, referrer_weights)[0])
            clicks.append(e)
            yield e
        kind = c["objective"]
        for i in range(conversions):
            click = clicks[rng.randrange(len(clicks))]
            ts = click.ts_ms + rng.randrange(3_600_000)
            yield Event(event_id=str(uuid7(ts)), event_type=kind, ts_ms=ts, campaign_id=c["id"],
                        link_id=click.link_id, creator_id=click.creator_id, click_id=click.event_id,
                        order_id=f"o-{i}", business_id=business, value="25.00", source="api")


def load(settings: Settings, events) -> int:
    """Write ``events`` to ClickHouse as ingest would: enriched, in batches of ``CHUNK``."""
    enricher, writer, n = Enricher(settings), BatchWriter(settings), 0
    for e in events:
        writer.submit(e.event_id.encode(), enricher.line(e.encode()))
        if len(writer) == CHUNK:
            n += len(writer)
            writer.close()
            writer = BatchWriter(settings)
    writer.close()
    return n + len(writer)


def steady(settings: Settings, campaigns: list[dict], business: str, rng: random.Random) -> None:
    """The runs a scheduler makes after the backlog: one with nothing new, one with a minute's 2,000 events."""
    t = time.perf_counter()
    settle_once(settings)
    print(f"steady state, nothing new: {time.perf_counter() - t:.2f}s")
    now = int(time.time() * 1000)
    fresh = [replace(e, event_id=str(uuid7(now - i)), ts_ms=now - i)
             for i, e in enumerate(generate([c for c in campaigns if c["objective"] == "click"], business, 2000, rng))]
    load(settings, fresh)
    t = time.perf_counter()
    report = settle_once(settings)
    print(f"steady state, {report['events_seen']} new events: {time.perf_counter() - t:.2f}s"
          f" (phases {report['timings_s']})")


def naive(settings: Settings, campaigns: list[dict], sample: int) -> float:
    """One transaction per event, the way a first version would settle: events per second."""
    fee_pct = settings.platform_fee_pct
    with pg_connect(settings) as conn:
        escrow, fees = (conn.execute("SELECT oros_platform_wallet(%s) AS id", (p,)).fetchone()["id"]
                        for p in ("escrow", "fees"))
        wallets = {r["user_id"]: r["id"] for r in conn.execute(
            "SELECT user_id::text AS user_id, id FROM wallets WHERE purpose = 'main'")}
        conn.commit()
        started = time.perf_counter()
        for i in range(sample):
            c = campaigns[i % len(campaigns)]
            creator, link = c["links"][i % len(c["links"])]
            net, fee = split_fee(c["payout"], fee_pct)
            transfer = uuid.uuid4()
            with conn.transaction():
                conn.execute("SELECT remaining_budget FROM campaigns WHERE id = %s FOR UPDATE", (c["id"],))
                conn.execute("INSERT INTO events (id, campaign_id, creator_id, tracking_link_id, event_type, status,"
                             " transfer_id, payout_amount, platform_fee, paid) VALUES (%s, %s, %s, %s, %s, 'paid', %s,"
                             " %s, %s, TRUE)", (uuid7(), c["id"], creator, link, c["objective"], transfer,
                                                c["payout"], fee))
                conn.execute(
                    "INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction,"
                    " status, hold_until) VALUES (%s, %s, 'campaign', %s, %s, 'debit', 'settled', NULL),"
                    " (%s, %s, 'campaign', %s, %s, 'credit', 'pending', now()), (%s, %s, 'campaign', %s, %s,"
                    " 'credit', 'pending', now())",
                    (escrow, transfer, c["id"], c["payout"], wallets[creator], transfer, c["id"], net,
                     fees, transfer, c["id"], fee))
                conn.execute("UPDATE campaigns SET remaining_budget = remaining_budget - %s WHERE id = %s",
                             (c["payout"], c["id"]))
                conn.execute("UPDATE campaign_creators SET total_earned = total_earned + %s"
                             " WHERE campaign_id = %s AND creator_id = %s", (net, c["id"], creator))
        return sample / (time.perf_counter() - started)


ROLLUP_TRIGGERS = (("events_hours_inserted", "events"), ("events_hours_updated", "events"),
                   ("events_hours_deleted", "events"), ("events_hours_truncated", "events"))
SEED_INDEXES = ("CREATE INDEX idx_events_campaign ON events(campaign_id)",
                "CREATE INDEX idx_events_creator ON events(creator_id)",
                "CREATE INDEX idx_events_type ON events(event_type)",
                "CREATE INDEX idx_events_verified ON events(verified)",
                "CREATE INDEX idx_events_created ON events(created_at DESC)")
WEBHOOK_TRIGGERS = (("events_webhooks", "events"), ("ledger_entries_webhooks", "ledger_entries"),
                    ("withdrawals_webhooks", "withdrawals"), ("settlement_runs_webhooks", "settlement_runs"))


def _prepare_variant(pg, variant: str, business: str) -> None:
    # Time spent inside the trigger functions, whatever the machine's noise (needs a superuser; else none).
    try:
        pg.execute(f"ALTER DATABASE {pg.info.dbname} SET track_functions = 'pl'")
    except psycopg.errors.InsufficientPrivilege:
        pass
    if variant in ("no triggers", "no event_hours"):
        for trigger, table in WEBHOOK_TRIGGERS if variant == "no triggers" else ROLLUP_TRIGGERS:
            pg.execute(f"DROP TRIGGER {trigger} ON {table}")
        return
    if variant == "seed indexes":
        for statement in SEED_INDEXES:
            pg.execute(statement)
        return
    if variant == "subscribed":
        creator = pg.execute("SELECT creator_id FROM campaign_creators LIMIT 1").fetchone()["creator_id"]
        for owner, events in ((business, ["conversion.recorded", "event.rejected", "settlement.completed"]),
                              (creator, ["earning.credited"])):
            endpoint = pg.execute("INSERT INTO webhook_endpoints (owner_id, url, events) VALUES (%s, %s, %s)"
                                  " RETURNING id", (owner, "https://hooks.example.com/bench", events)).fetchone()["id"]
            pg.execute("INSERT INTO webhook_endpoint_secrets (endpoint_id, secret) VALUES (%s, %s)",
                       (endpoint, "whsec_" + "b" * 43))


def compare_webhooks(settings: Settings, db: str, business: str, rounds: int,
                     variants: tuple[str, ...] = ("no triggers", "triggers, no endpoint", "subscribed")) -> None:
    """Settle the loaded events into copies of the database, without the triggers (the first variant) and with."""
    admin_url = settings.database_url.rsplit("/", 1)[0]
    rates: dict[str, list[float]] = {}
    posting: dict[str, list[float]] = {}  # the phase the triggers run in
    for _ in range(rounds):
        for variant in variants:
            clone = f"{db}_{len(rates.get(variant, []))}_{variant.split()[0].strip(',')}"
            with psycopg.connect(f"{admin_url}/postgres", autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{clone}" TEMPLATE "{db}"')
            variant_settings = replace(settings, database_url=f"{admin_url}/{clone}")
            if variant.startswith("workers "):
                variant_settings = replace(variant_settings, settle_workers=int(variant.split()[1]))
            try:
                with pg_connect(variant_settings, autocommit=True) as pg:
                    _prepare_variant(pg, variant, business)
                t = time.perf_counter()
                report = settle_once(variant_settings)
                elapsed = time.perf_counter() - t
                time.sleep(1)  # the settler's connections report their function statistics as they exit
                with pg_connect(variant_settings, autocommit=True) as pg:
                    outbox = pg.execute("SELECT count(*) AS n FROM webhook_deliveries").fetchone()["n"]
                    in_triggers = pg.execute(
                        "SELECT coalesce(sum(total_time), 0) / 1000 AS s, coalesce(sum(calls), 0) AS calls"
                        " FROM pg_stat_user_functions WHERE funcname LIKE %s",
                        ("oros_count_event_hours" if "event_hours" in variant else "oros_webhooks_on_%",)).fetchone()
                rate = report["events_seen"] / elapsed
                rates.setdefault(variant, []).append(rate)
                posting.setdefault(variant, []).append(report["timings_s"]["post_ledger"])
                print(f"{variant:22s} settled {report['events_seen']} events in {elapsed:.1f}s: {rate:,.0f} events/s,"
                      f" {outbox:,} webhook deliveries written, {in_triggers['s']:.3f}s in {in_triggers['calls']}"
                      f" {'event_hours' if 'event_hours' in variant else 'webhook'}"
                      f" trigger calls (phases {report['timings_s']})")
            finally:
                with psycopg.connect(f"{admin_url}/postgres", autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{clone}" WITH (FORCE)')
    # On a shared machine the best of each is the least disturbed; the medians say how noisy it was.
    baseline, base_posting = max(rates[variants[0]]), min(posting[variants[0]])
    for variant, values in rates.items():
        print(f"{variant:22s} best {max(values):,.0f} events/s ({max(values) / baseline:.2f}x the rate of"
              f" '{variants[0]}', median {statistics.median(values) / statistics.median(rates[variants[0]]):.2f}x);"
              f" posting best {min(posting[variant]):.1f}s ({min(posting[variant]) / base_posting:.2f}x)")


def export_written(settings: Settings, run_id: str) -> dict:
    """Exactly the rows the run wrote, as COPY text: its events and ledger legs, and the campaign,
    earnings and link rows it updated (their values after the run)."""
    out = {}
    with pg_connect(settings) as conn:
        for table, where in (("events", "settlement_run_id = %(run)s"),
                             ("ledger_entries", "metadata->>'run_id' = %(run)s"), ("settlement_runs", "id = %(run)s"),
                             ("campaigns", "TRUE"), ("campaign_creators", "TRUE"), ("tracking_links", "TRUE")):
            sql = psycopg.ClientCursor(conn).mogrify(f"SELECT * FROM {table} WHERE {where}", {"run": run_id})
            with conn.cursor().copy(f"COPY ({sql}) TO STDOUT") as copy:
                out[table] = b"".join(bytes(b) for b in copy)
    return out


CEILING_UPDATES = {
    "campaigns": "UPDATE campaigns t SET remaining_budget = s.remaining_budget, status = s.status FROM s"
                 " WHERE t.id = s.id AND (t.remaining_budget, t.status)"
                 " IS DISTINCT FROM (s.remaining_budget, s.status)",
    "campaign_creators": "UPDATE campaign_creators t SET total_earned = s.total_earned FROM s WHERE t.id = s.id"
                         " AND t.total_earned <> s.total_earned",
    "tracking_links": "UPDATE tracking_links t SET click_count = s.click_count, conversion_count = s.conversion_count"
                      " FROM s WHERE t.id = s.id AND (t.click_count, t.conversion_count)"
                      " <> (s.click_count, s.conversion_count)",
}


def ceiling(settings: Settings, written: dict) -> float:
    """Seconds to write ``written`` into a copy of the database as it was before the run: one COPY
    per table (the same tables, indexes, constraints and triggers, so the wallets move by the same
    statement-level trigger), and one UPDATE per table of the rows the run changed."""
    with pg_connect(settings) as conn:
        started = time.perf_counter()
        for table in ("settlement_runs", "events", "ledger_entries"):
            with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                copy.write(written[table])
        for table, update in CEILING_UPDATES.items():
            conn.execute(f"CREATE TEMP TABLE s (LIKE {table}) ON COMMIT DROP")
            with conn.cursor().copy("COPY s FROM STDIN") as copy:
                copy.write(written[table])
            conn.execute(update)
            conn.execute("DROP TABLE s")
        conn.commit()
        return time.perf_counter() - started


def cpu_seconds() -> tuple[float, float]:
    """(this process's CPU seconds, the whole machine's busy CPU seconds) so far: the settler's own work
    against everything else the run costs (Postgres's backends, on a quiet machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in stat.readline().split()[1:8])
    # Not steal (the hypervisor's, not ours) nor guest (already inside user and nice).
    busy = user + nice + system + irq + softirq
    return usage.ru_utime + usage.ru_stime, busy / os.sysconf("SC_CLK_TCK")


def _connections(text: str) -> int:
    """A --workers value: what OROS_SETTLE_WORKERS accepts."""
    n = int(text)
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError(f"{n}: OROS_SETTLE_WORKERS is 1 to 64")
    return n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--campaigns", type=int, default=200)
    parser.add_argument("--creators", type=int, default=10, help="per campaign")
    parser.add_argument("--sample", type=int, default=2000, help="events for the naive baseline")
    parser.add_argument("--webhooks", action="store_true",
                        help="compare settling without the webhook triggers, with them idle, and with listeners")
    parser.add_argument("--rollup", action="store_true",
                        help="compare settling without the event_hours triggers and with them")
    parser.add_argument("--seed-indexes", action="store_true",
                        help="compare settling as migrated and with the seed's five indexes 0162 dropped")
    parser.add_argument("--workers", type=_connections, nargs="+", metavar="N",
                        help="compare settling on these numbers of posting connections (OROS_SETTLE_WORKERS)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --webhooks, --rollup, --seed-indexes or --workers: runs of each variant, in turn")
    args = parser.parse_args()
    rng = random.Random(7)
    tmp = Path(tempfile.mkdtemp(prefix="oros-bench-settle-"))
    base, servers = embedded.resolve(
        replace(Settings.from_env(), data_dir=tmp, clickhouse_url=os.environ.get("CLICKHOUSE_URL", f"chdb://{tmp}/ch")),
        prefer_local=True)
    db = f"oros_bench_{os.getpid()}"
    with psycopg.connect(base.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    settings = replace(base, database_url=base.database_url.rsplit("/", 1)[0] + f"/{db}",
                       clickhouse_database=db, redis_prefix=f"bench:{os.getpid()}:")
    try:
        migrate_postgres(settings)
        migrate_clickhouse(settings)
        with pg_connect(settings, autocommit=True) as pg:
            campaigns, business = setup(pg, args.campaigns, args.creators, rng)
        # The ceiling writes the run's rows into this copy of the database as it was before the run.
        with psycopg.connect(base.database_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{db}_ceiling" TEMPLATE "{db}"')
        ceiling_settings = replace(settings, database_url=settings.database_url + "_ceiling")
        t = time.perf_counter()
        n = load(settings, generate(campaigns, business, args.events, rng))
        print(f"generated and loaded {n} events into ClickHouse in {time.perf_counter() - t:.1f}s")
        if args.webhooks:
            compare_webhooks(settings, db, business, args.rounds)
            return
        if args.rollup:
            compare_webhooks(settings, db, business, args.rounds, ("no event_hours", "with event_hours"))
            return
        if args.seed_indexes:
            compare_webhooks(settings, db, business, args.rounds, ("migrated", "seed indexes"))
            return
        if args.workers:
            compare_webhooks(settings, db, business, args.rounds, tuple(f"workers {n}" for n in args.workers))
            return
        t, (own, busy) = time.perf_counter(), cpu_seconds()
        report = settle_once(settings, progress=sys.stderr.isatty())
        elapsed = time.perf_counter() - t
        own, busy = (after - before for after, before in zip(cpu_seconds(), (own, busy), strict=True))
        rate = report["events_seen"] / elapsed
        print(f"settled {report['events_seen']} events in {elapsed:.1f}s: {rate:,.0f} events/s"
              f" (paid {report['events_paid']}, rejected {report['rejected_by_reason']},"
              f" amount {report['amount_paid']}, fees {report['fees']})")
        print(f"phases (s): {report['timings_s']}")
        print(f"CPU: the settler's process {own:.1f}s, the rest of the machine {busy - own:.1f}s, in {elapsed:.1f}s"
              f" on {os.cpu_count()} cores")
        written = export_written(settings, report["run_id"])
        ceiling_s = ceiling(ceiling_settings, written)
        print(f"ceiling (COPY of the {len(written['events'].splitlines()):,} events and"
              f" {len(written['ledger_entries'].splitlines()):,} ledger legs the run wrote, same tables):"
              f" {ceiling_s:.1f}s; settle = {ceiling_s / elapsed:.2f}x the ceiling")
        steady(settings, campaigns, business, rng)
        base_rate = naive(settings, [c for c in campaigns if c["rich"]], args.sample)
        print(f"naive baseline (one transaction per event, {args.sample} events): {base_rate:,.0f} events/s")
        print(f"ratio: {rate / base_rate:.1f}x")
    finally:
        with psycopg.connect(base.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            admin.execute(f'DROP DATABASE IF EXISTS "{db}_ceiling" WITH (FORCE)')
        servers.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
