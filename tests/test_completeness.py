"""No event is skipped forever: rows behind the watermark are found, paid once, and reconcile names them until then.

ClickHouse stamps ``ingested_at`` with its own clock. A clock step, several
servers or an insert that becomes visible late can put a row hours behind
the settler's watermark; these tests insert such rows with an explicit
``ingested_at``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from ingest.writer import JSON_COLUMNS, JSON_SETTINGS
from oros.connections import clickhouse_client
from oros.events import Event
from settler import completeness, load
from settler.load import decided_ids
from settler.reconcile import reconcile
from settler.run import settle_once

from factories import DAY_MS, now_ms

HERE = Path(__file__).resolve()
D = Decimal


def put_at(settings, events: list[Event], ingested_at: datetime) -> None:
    """Insert events the way ingest does, but stamped ``ingested_at`` (a ClickHouse clock that lies)."""
    stamp = ingested_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    rows = b"\n".join(orjson.dumps({**orjson.loads(e.encode()), "ingested_at": stamp}) for e in events)
    clickhouse_client(settings).raw_insert("events", [*JSON_COLUMNS, "ingested_at"], insert_block=rows,
                                           fmt="JSONEachRow", settings=JSON_SETTINGS)


def watermark(world) -> datetime:
    return world.pg.execute("SELECT watermark FROM settler_state WHERE name = 'settle'").fetchone()["watermark"]


def failing(world) -> set[str]:
    return {c.name for c in reconcile(world.settings) if not c.ok}


def paid_count(world, event: Event) -> int:
    return world.pg.execute("SELECT count(*) AS n FROM events WHERE id = %s AND status = 'paid'",
                            (event.event_id,)).fetchone()["n"]


@pytest.fixture
def settled(world):
    """One click campaign, one click settled: the watermark stands at that click's ingest time."""
    campaign = world.campaign(payout="1.00", fund="50.00")
    creator = world.creator(campaign)
    world.put([world.click(campaign, creator)])
    assert settle_once(world.settings)["events_paid"] == 1
    world.ids = {"campaign": campaign, "creator": creator}
    return world


def test_row_hours_behind_the_watermark_is_paid_once(settled):
    late = settled.click(settled.ids["campaign"], settled.ids["creator"])
    put_at(settled.settings, [late], watermark(settled) - timedelta(hours=3))
    # Before the next run: reconcile names the undecided event older than the settle horizon.
    assert failing(settled) == {"paid_events_match_clickhouse"}

    report = settle_once(settled.settings)

    assert report["events_paid"] == 1 and paid_count(settled, late) == 1
    assert report["completeness"]["late_events"] == 1
    assert report["completeness"]["late_hours"] == [completeness.hour_of(late.ts_ms).isoformat()]
    assert failing(settled) == set()
    again = settle_once(settled.settings)
    assert again["events_paid"] == 0 and "late_events" not in again["completeness"]
    assert paid_count(settled, late) == 1
    assert settled.campaign_row(settled.ids["campaign"])["remaining_budget"] == D("48.00")


def test_the_overlap_is_read_by_id_and_only_its_undecided_events_in_full(settled, monkeypatch):
    """Rows ingested less than the overlap behind the watermark (an insert visible late) are the window's: the
    next run reads the overlap's ids, and in full only the events no run decided, then what is new. With more
    undecided events than a query may name, it reads the whole overlap as before. Each is paid once, by the
    window, never by the proof; the overlap's decided events are not read again."""
    reads: list[set[str]] = []
    real = load.load_events

    def recorded(settings, read):
        events = real(settings, read)
        reads.append({e.event_id for e in events})
        return events

    monkeypatch.setattr(load, "load_events", recorded)
    mark = watermark(settled)
    newest = settled.pg.execute("SELECT id::text AS id FROM events").fetchone()["id"]  # ingested at the mark
    earlier, late = (settled.click(settled.ids["campaign"], settled.ids["creator"], ip=f"10.9.{i}.1")
                     for i in range(2))
    put_at(settled.settings, [earlier], mark - timedelta(seconds=60))
    first = settle_once(settled.settings)
    assert (first["events_paid"], reads[-1]) == (1, {newest, earlier.event_id})
    put_at(settled.settings, [late], mark - timedelta(seconds=30))
    second = settle_once(settled.settings)
    assert (second["events_paid"], reads[-1]) == (1, {newest, late.event_id})  # not `earlier`, decided
    assert "late_events" not in second["completeness"]

    monkeypatch.setattr(load, "MAX_NAMED", 0)  # every undecided event of the overlap is one too many
    latest = settled.click(settled.ids["campaign"], settled.ids["creator"], ip="10.9.9.1")
    put_at(settled.settings, [latest], mark - timedelta(seconds=10))
    third = settle_once(settled.settings)
    assert (third["events_paid"], reads[-1]) == (1, {newest, earlier.event_id, late.event_id, latest.event_id})
    assert [paid_count(settled, e) for e in (earlier, late, latest)] == [1, 1, 1]
    assert failing(settled) == set()


def test_the_most_undecided_events_a_window_names_are_read(settled):
    """At its limit the named list still makes a query ClickHouse takes, and finds the event it names."""
    late = settled.click(settled.ids["campaign"], settled.ids["creator"], ip="10.9.8.1")
    mark = watermark(settled)
    put_at(settled.settings, [late], mark - timedelta(seconds=30))
    named = [str(uuid.uuid4()) for _ in range(load.MAX_NAMED - 1)] + [late.event_id]
    read = load.Read.window(mark - timedelta(minutes=2), mark, named)
    newest = settled.pg.execute("SELECT id::text AS id FROM events").fetchone()["id"]  # ingested at the mark
    assert "has(" in read.where
    assert {e.event_id for e in load.load_events(settled.settings, read)} == {newest, late.event_id}


def test_late_row_in_a_partition_already_proven(settled):
    """A proven partition is not counted again until an insert changes it: the late insert does."""
    assert settle_once(settled.settings)["completeness"]["partitions_checked"] == []
    late = settled.click(settled.ids["campaign"], settled.ids["creator"], ts_ms=now_ms() - 10 * 60_000)
    put_at(settled.settings, [late], watermark(settled) - timedelta(days=2))
    assert settle_once(settled.settings)["events_paid"] == 1
    assert paid_count(settled, late) == 1
    settled.assert_books()


def test_old_event_ingested_now_and_old_event_ingested_late(settled):
    """An event from months ago ingested now (the window's), and one ingested behind the watermark (the proof's)."""
    long_ago = now_ms() - 70 * DAY_MS
    campaign = settled.campaign(payout="1.00", fund="50.00", active_since_ms=long_ago - DAY_MS)
    creator = settled.creator(campaign)
    now_ingested = settled.click(campaign, creator, ts_ms=long_ago)
    settled.put([now_ingested])
    late_ingested = settled.click(campaign, creator, ts_ms=long_ago + 3_600_000 * 5)
    put_at(settled.settings, [late_ingested], watermark(settled) - timedelta(days=1))

    report = settle_once(settled.settings)

    assert report["events_paid"] == 2
    assert paid_count(settled, now_ingested) == paid_count(settled, late_ingested) == 1
    settled.assert_books()


def test_replayed_row_behind_the_watermark_is_not_paid_twice(settled):
    """The same event ingested twice (ReplacingMergeTree holds both rows until a merge), once late."""
    click = settled.click(settled.ids["campaign"], settled.ids["creator"])
    settled.put([click])
    assert settle_once(settled.settings)["events_paid"] == 1
    put_at(settled.settings, [click], watermark(settled) - timedelta(hours=5))
    report = settle_once(settled.settings)
    assert report["events_paid"] == 0 and report["completeness"]["late_hours"] == []
    assert paid_count(settled, click) == 1
    settled.assert_books()


def test_dry_run_reports_the_late_row_and_writes_nothing(settled):
    late = settled.click(settled.ids["campaign"], settled.ids["creator"])
    put_at(settled.settings, [late], watermark(settled) - timedelta(hours=3))
    report = settle_once(settled.settings, dry_run=True)
    assert report["events_paid"] == 1 and report["completeness"]["late_events"] == 1
    assert paid_count(settled, late) == 0
    assert settled.pg.execute("SELECT count(*) AS n FROM settle_proven_partitions").fetchone()["n"] == 1
    assert settle_once(settled.settings)["events_paid"] == 1 and paid_count(settled, late) == 1


def test_settler_clock_skew_does_not_change_what_is_read(settled):
    late = settled.click(settled.ids["campaign"], settled.ids["creator"])
    put_at(settled.settings, [late], watermark(settled) - timedelta(hours=3))
    report = settle_once(settled.settings, now=datetime.now(UTC) + timedelta(days=1))
    assert report["events_paid"] == 1 and paid_count(settled, late) == 1
    settled.assert_books()


def test_lost_decisions_are_decided_again(settled):
    """Postgres lost decisions (restored from a backup): the partition's decided count changed, so it is counted."""
    bots = [settled.click(settled.ids["campaign"], settled.ids["creator"], is_bot=True) for _ in range(3)]
    settled.put(bots)
    assert settle_once(settled.settings)["events_rejected"] == 3
    settled.pg.execute("DELETE FROM events WHERE id = ANY(%s::uuid[])", ([b.event_id for b in bots],))
    # A second settle with nothing new reads an empty window; the proof finds the three.
    report = settle_once(settled.settings)
    assert report["events_rejected"] == 3 and report["rejected_by_reason"] == {"bot": 3}
    settled.assert_books()


def test_clickhouse_down_during_the_proof_fails_the_run_and_the_next_repairs(settled, monkeypatch):
    fresh = settled.click(settled.ids["campaign"], settled.ids["creator"])
    settled.put([fresh])
    late = settled.click(settled.ids["campaign"], settled.ids["creator"])
    put_at(settled.settings, [late], watermark(settled) - timedelta(hours=3))
    before = watermark(settled)
    # ClickHouse answers the window's reads, then fails at the proof (the table is gone for that query).
    monkeypatch.setattr(completeness, "PARTS_SQL", "SELECT * FROM missing_table_clickhouse_is_down")
    with pytest.raises(Exception, match="missing_table"):
        settle_once(settled.settings)
    assert paid_count(settled, fresh) == 1 and paid_count(settled, late) == 0
    assert watermark(settled) == before
    assert settled.pg.execute("SELECT status FROM settlement_runs ORDER BY started_at DESC LIMIT 1"
                              ).fetchone()["status"] == "failed"
    monkeypatch.undo()
    assert settle_once(settled.settings)["events_paid"] == 1 and paid_count(settled, late) == 1
    settled.assert_books()


def test_clickhouse_down_at_the_start_changes_nothing(settled):
    late = settled.click(settled.ids["campaign"], settled.ids["creator"])
    put_at(settled.settings, [late], watermark(settled) - timedelta(hours=3))
    down = replace(settled.settings, clickhouse_database="no_such_database")
    with pytest.raises(DatabaseError, match="no_such_database"):
        settle_once(down)
    assert {c.detail.split(":")[0] for c in reconcile(down) if not c.ok} == {"ClickHouse unavailable"}
    assert settle_once(settled.settings)["events_paid"] == 1
    settled.assert_books()


def test_event_arriving_during_the_run_is_left_to_the_next_window(settled):
    """An undecided row ingested at or after the next window's start is not a late row: nothing is re-read."""
    arrived = settled.click(settled.ids["campaign"], settled.ids["creator"])
    settled.put([arrived])
    ingested = clickhouse_client(settled.settings).query(
        "SELECT max(ingested_at) FROM events").result_rows[0][0].replace(tzinfo=UTC)

    def prove(horizon):
        return completeness.prove(settled.settings, settled.pg, read_ids=set(), horizon=horizon, pending=Counter(),
                                  is_decided=lambda ids: decided_ids(settled.pg, ids))

    next_window = prove(ingested - timedelta(seconds=1))
    assert next_window.late_hours == [] and next_window.undecided == 1
    assert next_window.proven  # the next window reads it, so the partition is proven
    behind = prove(ingested + timedelta(seconds=1))
    assert behind.late_hours == [completeness.hour_of(arrived.ts_ms)] and behind.proven == {}


class _MergingClient:
    """ClickHouse merging the table before every query the proof makes: steady inserts and merges."""

    def __init__(self, client, merge) -> None:
        self._client, self._merge = client, merge

    def query(self, *args, **kwargs):
        self._merge()
        return self._client.query(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def _insert_and_merge(world) -> None:
    """One more event (a bot click: decided, never paid) in a new part, then every part merged into one."""
    world.put([world.click(world.ids["campaign"], world.ids["creator"], is_bot=True)])
    clickhouse_client(world.settings).command("OPTIMIZE TABLE events FINAL")


def test_the_proof_concludes_when_every_query_meets_a_merge(settled, monkeypatch):
    """Each ClickHouse query of the proof comes after an insert and a merge that replace every part: the proof
    once compared two queries over named parts and gave up after three tries, so a late row waited forever."""
    late = settled.click(settled.ids["campaign"], settled.ids["creator"])
    put_at(settled.settings, [late], watermark(settled) - timedelta(hours=3))
    real = completeness.clickhouse_client
    monkeypatch.setattr(completeness, "clickhouse_client",
                        lambda settings: _MergingClient(real(settings), lambda: _insert_and_merge(settled)))
    for _ in range(2):
        report = settle_once(settled.settings)
        assert report["completeness"]["partitions_checked"] and report["completeness"]["late_hours"] in (
            [], [completeness.hour_of(late.ts_ms).isoformat()])
    assert paid_count(settled, late) == 1
    monkeypatch.undo()
    assert settle_once(settled.settings)["events_paid"] == 0  # the bot clicks the merges added are rejected
    settled.assert_books()


def test_the_proof_makes_progress_while_inserts_and_merges_run(settled):
    """A thread inserting and merging all along; a late row arriving mid-way is paid by the next run."""
    import threading

    stop = threading.Event()
    merges = []

    def churn() -> None:
        while not stop.is_set():
            _insert_and_merge(settled)
            merges.append(1)

    churning = threading.Thread(target=churn)
    churning.start()
    try:
        settle_once(settled.settings)
        late = settled.click(settled.ids["campaign"], settled.ids["creator"])
        put_at(settled.settings, [late], watermark(settled) - timedelta(hours=3))
        report = settle_once(settled.settings)
    finally:
        stop.set()
        churning.join()
    assert len(merges) > 2 and paid_count(settled, late) == 1
    # Its hour was re-read (with whatever the thread had added to it by then, all decided now).
    assert report["completeness"]["late_hours"] == [completeness.hour_of(late.ts_ms).isoformat()]
    settle_once(settled.settings)
    settled.assert_books()


def test_two_settlers_and_a_late_row_pay_once(settled):
    import threading

    late = settled.click(settled.ids["campaign"], settled.ids["creator"])
    put_at(settled.settings, [late], watermark(settled) - timedelta(hours=3))
    reports: list[dict] = []
    threads = [threading.Thread(target=lambda: reports.append(settle_once(settled.settings))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["events_paid"] for r in reports) == [0, 1]
    assert paid_count(settled, late) == 1
    settled.assert_books()


def test_decided_counts_follow_inserts_and_deletes(settled):
    counts = settled.pg.execute("SELECT sum(decided) AS n FROM settle_decided_hours").fetchone()["n"]
    assert counts == settled.pg.execute("SELECT count(*) AS n FROM events").fetchone()["n"] == 1
    with pytest.raises(Exception, match="immutable"):
        settled.pg.execute("UPDATE events SET occurred_at = occurred_at - interval '1 day'")


# --- ``oros settle --once --rescan --since T`` as an operator runs it, in its own process ----------

def _worker(command: str, path: str) -> int:
    """Subprocess entry point: insert the events in ``path`` with the ``ingested_at`` each line names."""
    from oros.migrate import migrate_clickhouse
    from oros.settings import Settings

    settings = Settings.from_env()
    migrate_clickhouse(settings)
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        put_at(settings, [Event(**record["event"])], datetime.fromisoformat(record["ingested_at"]))
    return 0


def test_rescan_command_decides_what_is_undecided_once(world, tmp_path):
    """Settled once, then a row lands behind the watermark: a normal run's window never reads it (the proof
    finds it), a rescan since after it does not read it either, and a rescan since before it decides it."""
    env = {**os.environ, "DATABASE_URL": world.settings.database_url, "REDIS_URL": world.settings.redis_url,
           "CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}", "OROS_REDIS_PREFIX": world.settings.redis_prefix,
           "OROS_CLICKHOUSE_DATABASE": "rescan", "OROS_DATA_DIR": str(tmp_path),
           "PYTHONPATH": str(HERE.parent.parent)}
    oros = [sys.executable, "-m", "oros_cli"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*args], env=env, capture_output=True, timeout=300, text=True)

    def load(event: Event, ingested_at: datetime) -> None:
        path = tmp_path / f"{event.event_id}.jsonl"
        path.write_text(json.dumps({"event": json.loads(event.encode()), "ingested_at": ingested_at.isoformat()}))
        loaded = run(sys.executable, str(HERE), "load", str(path))
        assert loaded.returncode == 0, loaded.stderr

    def settle(*args: str) -> dict:
        done = run(*oros, "settle", "--once", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    campaign = world.campaign(payout="1.00", fund="50.00")
    creator = world.creator(campaign)
    ontime, behind = world.click(campaign, creator), world.click(campaign, creator)
    load(ontime, datetime.now(UTC))
    assert settle()["events_paid"] == 1
    load(behind, watermark(world) - timedelta(hours=3))  # no window will ever read it
    behind_hour = completeness.hour_of(behind.ts_ms).isoformat()

    normal = settle("--dry-run")
    assert normal["events_paid"] == 1 and normal["completeness"]["late_events"] == 1  # the proof's, not the window's
    assert normal["completeness"]["late_hours"] == [behind_hour]
    after = settle("--dry-run", "--rescan", "--since", (behind.occurred_at + timedelta(seconds=1)).isoformat())
    assert after["completeness"]["late_hours"] == [behind_hour] and after["completeness"]["late_events"] == 1
    rescan = settle("--rescan", "--since", (behind.occurred_at - timedelta(hours=1)).isoformat())
    assert rescan["events_seen"] == rescan["events_paid"] == 1  # read by the rescan itself:
    assert rescan["completeness"]["late_hours"] == [] and "late_events" not in rescan["completeness"]
    again = settle("--rescan", "--since", (behind.occurred_at - timedelta(hours=1)).isoformat())
    assert again["events_paid"] == 0 and again["events_seen"] == 0
    assert paid_count(world, ontime) == paid_count(world, behind) == 1
    reconciled = run(*oros, "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert run(*oros, "settle", "--once", "--rescan").returncode == 2  # --rescan needs --since


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], sys.argv[2]))
