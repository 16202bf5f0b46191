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
# A merge replacing a counted part during the proof makes it inconclusive; it is taken again.
ATTEMPTS = 3

# The active parts: each partition's fingerprint, and the exact set of rows one proof reads.
PARTS_SQL = """
SELECT partition_id, name, max_block_number, rows
  FROM system.parts
 WHERE database = currentDatabase() AND table = 'events' AND active
"""

STILL_ACTIVE_SQL = """
SELECT count() FROM system.parts
 WHERE database = currentDatabase() AND table = 'events' AND active AND name IN {parts:Array(String)}
"""

HELD_SQL = """
SELECT toStartOfHour(ts) AS hour, uniqExact(event_id)
  FROM events
 WHERE _part IN {parts:Array(String)}
 GROUP BY hour
"""

# Ids in the short hours that the next window reads (a row ingested at or after its start).
NEXT_WINDOW_SQL = """
SELECT DISTINCT toString(event_id), toStartOfHour(ts)
  FROM events
 WHERE _part IN {parts:Array(String)}
   AND toStartOfHour(ts) IN {hours:Array(DateTime('UTC'))}
   AND ingested_at >= {horizon:DateTime64(3, 'UTC')}
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
    # Merges kept replacing the counted parts: nothing proven this run, the next one tries again.
    inconclusive: bool = False

    def as_dict(self) -> dict:
        return {"partitions_checked": self.partitions_checked,
                "late_hours": [h.isoformat() for h in self.late_hours],
                "undecided_next_run": self.undecided, "decided_not_in_clickhouse": self.not_in_clickhouse,
                "inconclusive": self.inconclusive}


@dataclass(frozen=True)
class _Snapshot:
    """The active parts of the changed partitions at one moment, and each partition's fingerprint."""

    parts: list[str]
    fingerprints: dict[str, tuple[int, int, int]]


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
    for _ in range(ATTEMPTS):
        snapshot = _changed_parts(client, conn)
        proof = Proof(partitions_checked=sorted(snapshot.fingerprints))
        if not snapshot.parts:
            return proof
        _count(client, conn, snapshot, proof, read_ids, horizon, pending, is_decided)
        # Both counts read exactly the snapshot's rows only if none of its parts was merged away meanwhile.
        still = client.query(STILL_ACTIVE_SQL, parameters={"parts": snapshot.parts}).result_rows[0][0]
        if still == len(snapshot.parts):
            return proof
    return Proof(partitions_checked=proof.partitions_checked, inconclusive=True)


def _changed_parts(client, conn: psycopg.Connection) -> _Snapshot:
    # Fingerprints are taken before counting: a row inserted or decided after them changes them.
    totals = {r["partition_id"]: int(r["decided"]) for r in conn.execute(DECIDED_SQL)}
    parts: dict[str, list[str]] = {}
    blocks: Counter = Counter()
    rows: Counter = Counter()
    for partition, name, block, n in client.query(PARTS_SQL).result_rows:
        parts.setdefault(partition, []).append(name)
        blocks[partition] = max(blocks[partition], int(block))
        rows[partition] += int(n)
    known = {r["partition_id"]: (r["max_block"], r["part_rows"], r["decided"])
             for r in conn.execute(PROVEN_SQL, {"max_age": PROOF_MAX_AGE})}
    fingerprints = {p: (blocks[p], rows[p], totals.get(p, 0)) for p in parts}
    changed = {p: f for p, f in fingerprints.items() if known.get(p) != f}
    return _Snapshot(parts=sorted(name for p in changed for name in parts[p]), fingerprints=changed)


def _count(client, conn, snapshot: _Snapshot, proof: Proof, read_ids, horizon, pending, is_decided) -> None:
    """Fill ``proof`` from one snapshot: short hours, the next window's share of them, the late ones."""
    held = {_utc(h): n for h, n in client.query(HELD_SQL, parameters={"parts": snapshot.parts}).result_rows}
    decided = {r["hour"]: r["decided"] for r in conn.execute(FOLD_SQL, {"partitions": proof.partitions_checked})}
    short = {}
    unprovable = set()
    for hour in held.keys() | decided.keys():
        missing = held.get(hour, 0) - decided.get(hour, 0) - pending.get(hour, 0)
        if missing > 0:
            short[hour] = missing
        elif missing < 0:
            proof.not_in_clickhouse -= missing
            unprovable.add(partition_of(hour))
    next_window = _next_window(client, snapshot.parts, short, read_ids, horizon, is_decided)
    proof.undecided = sum(next_window.values())
    proof.late_hours = sorted(h for h, missing in short.items() if missing > next_window[h])
    unprovable.update(partition_of(h) for h in proof.late_hours)
    proof.proven = {p: f for p, f in snapshot.fingerprints.items() if p not in unprovable}


def _next_window(client, parts: list[str], short: dict[datetime, int], read_ids: set[str],
                 horizon: datetime, is_decided) -> Counter:
    """Per short hour, the undecided ids the next window will read."""
    if not short:
        return Counter()
    rows = client.query(NEXT_WINDOW_SQL, parameters={
        "parts": parts, "hours": sorted(short), "horizon": horizon}).result_rows
    unread = {event_id: _utc(hour) for event_id, hour in rows if event_id not in read_ids}
    decided = is_decided(list(unread))
    return Counter(hour for event_id, hour in unread.items() if event_id not in decided)


def record(conn: psycopg.Connection, proven: dict[str, tuple[int, int, int]]) -> None:
    """Remember the proven partitions, so the next run counts only what changed since."""
    with conn.transaction():
        for partition, (block, rows, decided) in sorted(proven.items()):
            conn.execute(RECORD_SQL, (partition, block, rows, decided))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
