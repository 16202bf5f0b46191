"""settler.load: which of a read's ids are decided, however they are spread; its ClickHouse visitor key."""

from __future__ import annotations

import random

from addresses import ADDRESSES

from oros.clientip import visitor_key
from oros.events import uuid7_str
from settler import load

T0 = 1_790_000_000_000


def record(pg, ids: list[str]) -> None:
    """Decided rows for ``ids`` (rejected, the least a row needs)."""
    with pg.cursor().copy("COPY events (id, event_type, occurred_at, status, rejection_reason) FROM STDIN") as copy:
        for event_id in ids:
            copy.write_row((event_id, "click", "2026-09-21 00:00:00+00", "rejected", "bot"))


def test_decided_ids_are_exact_for_dense_scattered_and_crowded_reads(pg):
    rng = random.Random(5)
    # Dense: 3,000 ids a few ms apart (read as one range), two in three decided.
    dense = [uuid7_str(T0 + i * 7) for i in range(3_000)]
    # Scattered: an hour apart (looked up one by one).
    scattered = [uuid7_str(T0 + 10 * 86_400_000 + i * 3_600_000) for i in range(50)]
    # Crowded: a stretch where Postgres holds ten times what the read holds (falls back to one by one).
    crowd = [uuid7_str(T0 + 20 * 86_400_000 + i) for i in range(20_000)]
    crowded_read = sorted(rng.sample(crowd, 2_000))
    decided = [e for e in dense if rng.random() < 2 / 3] + scattered[::2] + crowd
    record(pg, decided)
    read = dense + scattered + crowded_read + [uuid7_str(T0 + 30 * 86_400_000)]
    rng.shuffle(read)

    assert load.decided_ids(pg, read) == set(read) & set(decided)
    assert [len(run) for run in load._runs(sorted(dense + scattered[:2]))] == [3_000, 1, 1]



def test_the_clickhouse_visitor_key_is_visitor_key(ch):
    """settler.load.VISITOR (addresses stored as they are) gives every address the key oros.clientip gives it."""
    rows = ch.query(f"SELECT ip, {load.VISITOR[False]} FROM (SELECT arrayJoin({{addresses:Array(String)}}) AS ip)",
                    parameters={"addresses": ADDRESSES}).result_rows
    assert dict(rows) == {a: visitor_key(a) for a in ADDRESSES}
