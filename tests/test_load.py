"""settler.load: which of a read's ids are decided, however they are spread; its ClickHouse visitor key."""

from __future__ import annotations

import random

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


# IPv4, IPv6 (any case, compressed or not), IPv4-mapped in both spellings, zones, and what is not an address.
ADDRESSES = ["1.2.3.4", "::ffff:1.2.3.4", "::ffff:102:304", "::FFFF:1.2.3.4", "0:0:0:0:0:ffff:1.2.3.4", "::ffff:0:0",
             "::ffff:1.2.3.4%eth0", "2001:db8:1:2:3:4:5:6", "2001:DB8:1:2::9", "2001:db8:0:0:1::1", "0:0:0:1::5", "::1",
             "::", "::1.2.3.4", "64:ff9b::1.2.3.4", "2001:db8::ffff:1.2.3.4", "fe80::1%eth0", "fe80::1%", "fe80::1%a%b",
             "::ffff:1.2.3.04", "not:an:ip", "garbage", "", "1.2.3", "1.2.3.4:80", "[::1]", "1:2:3:4:5:6:7:8:9",
             "2001:db8::g"]


def test_the_clickhouse_visitor_key_is_visitor_key(ch):
    """settler.load.VISITOR (addresses stored as they are) gives every address the key oros.clientip gives it."""
    rows = ch.query(f"SELECT ip, {load.VISITOR[False]} FROM (SELECT arrayJoin({{addresses:Array(String)}}) AS ip)",
                    parameters={"addresses": ADDRESSES}).result_rows
    assert dict(rows) == {a: visitor_key(a) for a in ADDRESSES}
