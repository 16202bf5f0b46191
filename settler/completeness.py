"""Prove that every event ClickHouse holds is decided in Postgres, and name the hours that are not.

The watermark window (``ingested_at`` since the last run, minus an overlap)
is the fast path, but ``ingested_at`` is a ClickHouse server's clock: a
clock step, several servers, or an insert that becomes visible late put a
row behind the window for good. So each run, after the window is settled,
counts per UTC hour of event time (``ts`` in ClickHouse, ``occurred_at`` in
Postgres, the same instant) how many distinct event ids ClickHouse holds
and how many Postgres has decided. Every decided id is a ClickHouse id, so
equal counts prove the hour complete. A shortfall is either an event the
next window will read anyway (it arrived during this run, with
``ingested_at`` at or after the next window's start) or one no window will
ever read: the hours holding the latter are settled again by the caller.

ClickHouse's side is one query, so it reads one snapshot of the table's
parts whatever merges or inserts run meanwhile: the counts and the
next-window ids come from the same rows, and the proof concludes under any
rate of merges (it once compared two queries over named parts, and gave up
when merges kept replacing them).

Cost stays flat with history: a ClickHouse partition whose parts have not
changed since it was last proven (its highest block number grows with every
insert into it, never with a merge) is not counted again, and Postgres
keeps its per-hour counts in ``settle_decided_hours`` (a trigger, 0028).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from oros.connections import clickhouse_client
from oros.settings import Settings

HOUR_MS = 3_600_000
# A partition is counted again at least this often, whatever its fingerprint says.
PROOF_MAX_AGE = timedelta(days=1)

# The active parts: each partition's fingerprint.
PARTS_SQL = """
SELECT partition_id, max_block_number, rows
  FROM system.parts
 WHERE database = currentDatabase() AND table = 'events' AND active
"""

# Per hour of the partitions: the distinct ids held and, for an hour holding more than Postgres
# decided ({expected}), its ids with a row the next window reads (ingested at or after its start).
# One read of the table: one snapshot of its parts, so the two are always of the same rows.
COUNT_SQL = """
SELECT hour, held, if(held > {expected:Array(UInt64)}[indexOf({hours:Array(DateTime('UTC'))}, hour)],
                      next_window, []) AS next_window
  FROM (SELECT toDateTime(toStartOfHour(ts), 'UTC') AS hour, uniqExact(event_id) AS held,
               groupUniqArrayIf(toString(event_id), ingested_at >= {horizon:DateTime64(3, 'UTC')}) AS next_window
          FROM events
         WHERE _partition_id IN {partitions:Array(String)}
         GROUP BY hour)
"""

PROVEN_SQL = """
SELECT partition_id, max_block, part_rows, decided FROM settle_proven_partitions
 WHERE proven_at > now() - %(max_age)s
"""

# Per partition, what Postgres has decided: changes when a decision is added or lost (a restore).
DECIDED_SQL = """
SELECT to_char(hour AT TIME ZONE 'UTC', 'YYYYMM') AS partition_id, sum(decided) AS decided
  FROM settle_decided_hours GROUP BY 1
"""

# Reads the decided counts of the partitions' hours and folds their deltas into one row per hour,
# in one statement: rows a concurrent insert adds meanwhile are not in its snapshot and stay.
FOLD_SQL = """
WITH folded AS (
  DELETE FROM settle_decided_hours WHERE to_char(hour AT TIME ZONE 'UTC', 'YYYYMM') = ANY(%(partitions)s)
  RETURNING hour, decided)
INSERT INTO settle_decided_hours (hour, decided)
SELECT hour, sum(decided) FROM folded GROUP BY hour
RETURNING hour, decided
"""

RECORD_SQL = """
INSERT INTO settle_proven_partitions (partition_id, max_block, part_rows, decided) VALUES (%s, %s, %s, %s)
ON CONFLICT (partition_id) DO UPDATE
   SET max_block = EXCLUDED.max_block, part_rows = EXCLUDED.part_rows, decided = EXCLUDED.decided,
       proven_at = now()
"""


@dataclass
class Proof:
    """What one run proved: the hours to settle again, and the partitions now proven complete."""

    partitions_checked: list[str] = field(default_factory=list)
    # Hours holding an undecided event that no window will read: settle them again.
    late_hours: list[datetime] = field(default_factory=list)
    # Partition -> fingerprint, for partitions whose every event is decided or the next window's.
    proven: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    # Undecided events the next window will read (they arrived while this run was settling).
    undecided: int = 0
    # Decided events ClickHouse does not hold (lost ClickHouse data): reconcile names them.
    not_in_clickhouse: int = 0

    def as_dict(self) -> dict:
        return {"partitions_checked": self.partitions_checked,
                "late_hours": [h.isoformat() for h in self.late_hours],
                "undecided_next_run": self.undecided, "decided_not_in_clickhouse": self.not_in_clickhouse}


def partition_of(hour: datetime) -> str:
    """The ClickHouse partition (``toYYYYMM(ts)``) an hour of event time lies in."""
    return hour.astimezone(UTC).strftime("%Y%m")


def hour_of(ts_ms: int) -> datetime:
    """The UTC hour of event time an event is counted under (``toStartOfHour(ts)``)."""
    return datetime.fromtimestamp(ts_ms // HOUR_MS * 3600, tz=UTC)


def prove(settings: Settings, conn: psycopg.Connection, *, read_ids: set[str], horizon: datetime,
          pending: Counter, is_decided: Callable[[Iterable[str]], set[str]]) -> Proof:
    """Compare ClickHouse's and Postgres's per-hour counts over the partitions changed since proven.

    :param read_ids: every id this run has read (decided now, or found decided).
    :param horizon: where the next run's window starts (``ingested_at``).
    :param pending: per hour, ids this run read but did not write (a dry run).
    :param is_decided: the subset of ids Postgres ``events`` holds.
    """
    client = clickhouse_client(settings)
    fingerprints = _changed(client, conn)
    proof = Proof(partitions_checked=sorted(fingerprints))
    if not fingerprints:
        return proof
    # Postgres first: no decision is made while the proof runs (the settle lock), and a row that
    # reaches ClickHouse after this read is counted as undecided, never as decided.
    folded = conn.execute(FOLD_SQL, {"partitions": proof.partitions_checked})
    expected = Counter({r["hour"]: r["decided"] for r in folded})
    expected.update(pending)
    hours = sorted(expected)
    rows = client.query(COUNT_SQL, parameters={
        "partitions": proof.partitions_checked, "horizon": horizon, "hours": hours,
        "expected": [expected[h] for h in hours]}).result_rows
    held = {_utc(hour): n for hour, n, _ in rows}
    short, unprovable = {}, set()
    for hour in held.keys() | expected.keys():
        missing = held.get(hour, 0) - expected.get(hour, 0)
        if missing > 0:
            short[hour] = missing
        elif missing < 0:
            proof.not_in_clickhouse -= missing
            unprovable.add(partition_of(hour))
    next_window = _next_window({_utc(hour): ids for hour, _, ids in rows if ids}, read_ids, is_decided)
    proof.undecided = sum(next_window.values())
    proof.late_hours = sorted(h for h, missing in short.items() if missing > next_window[h])
    unprovable.update(partition_of(h) for h in proof.late_hours)
    proof.proven = {p: f for p, f in fingerprints.items() if p not in unprovable}
    return proof


def _changed(client, conn: psycopg.Connection) -> dict[str, tuple[int, int, int]]:
    """The fingerprint of each partition changed since it was last proven.

    Taken before counting: a row inserted or decided after it changes the fingerprint, so the
    next run counts that partition again.
    """
    totals = {r["partition_id"]: int(r["decided"]) for r in conn.execute(DECIDED_SQL)}
    blocks: Counter = Counter()
    rows: Counter = Counter()
    for partition, block, n in client.query(PARTS_SQL).result_rows:
        blocks[partition] = max(blocks[partition], int(block))
        rows[partition] += int(n)
    known = {r["partition_id"]: (r["max_block"], r["part_rows"], r["decided"])
             for r in conn.execute(PROVEN_SQL, {"max_age": PROOF_MAX_AGE})}
    fingerprints = {p: (blocks[p], rows[p], totals.get(p, 0)) for p in blocks}
    return {p: f for p, f in fingerprints.items() if known.get(p) != f}


def _next_window(ids_by_hour: dict[datetime, list[str]], read_ids: set[str], is_decided) -> Counter:
    """Per short hour, the undecided ids the next window will read."""
    unread = {event_id: hour for hour, ids in ids_by_hour.items() for event_id in ids if event_id not in read_ids}
    decided = is_decided(list(unread)) if unread else set()
    return Counter(hour for event_id, hour in unread.items() if event_id not in decided)


def record(conn: psycopg.Connection, proven: dict[str, tuple[int, int, int]]) -> None:
    """Remember the proven partitions, so the next run counts only what changed since."""
    with conn.transaction():
        for partition, (block, rows, decided) in sorted(proven.items()):
            conn.execute(RECORD_SQL, (partition, block, rows, decided))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
