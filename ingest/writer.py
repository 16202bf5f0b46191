"""The one ClickHouse writer: ``submit()`` collects stream entries, ``close()`` inserts them once.

Entries go in as the JSON the edge wrote (``FORMAT JSONEachRow``): ClickHouse
parses and types it far faster than Python could build columns, and the
table derives ``ts`` and checks every constraint. A failed insert is told
apart by ClickHouse's error code: ``BatchRefused`` (the data: some entry
cannot insert, or the batch as a whole cannot) or ``ClickHouseUnavailable``
(anything else: down, overloaded, missing table, or a code we cannot
explain); the consumer splits the first and retries the second as it is.
A batch that keeps failing while ``probe`` shows ClickHouse taking other
inserts is to blame after all, whatever the code said (docs/ingest.md).
"""

from __future__ import annotations

import dataclasses
import enum
import re
import time
import uuid
from collections.abc import Iterable

from clickhouse_connect.driver.exceptions import ClickHouseError, scrub_error_details

from oros.connections import clickhouse_client
from oros.events import ENRICHED_LIMITS, Event
from oros.settings import Settings

from .metrics import IngestMetrics

# The JSON keys ClickHouse reads: every field of the event model (ts_ms is the table's EPHEMERAL column)
# and what ingest adds (an entry without them, inserted as the edge wrote it, stores their defaults).
JSON_COLUMNS = (*(f.name for f in dataclasses.fields(Event)), *ENRICHED_LIMITS)
JSON_SETTINGS = {
    "input_format_json_read_objects_as_strings": 1,  # metadata: a JSON object stored as its text
    "input_format_skip_unknown_fields": 1,  # a newer edge may add fields
    "input_format_null_as_default": 1,
}
# Errors one entry's data can cause (parse, type, range, constraint, nesting): the batch has bad data.
ROW_ERRORS = frozenset({
    6, 19, 25, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 128, 130, 131, 306, 321, 346, 349, 376, 407,
    441, 467, 469, 546, 563, 632, 675, 676, 691,
})
# Errors that say ClickHouse takes no insert now, whatever the data: missing database or table,
# timeouts, the network, memory, read-only, disk, Keeper, overload, access. Only a probe that
# inserts a row can blame a batch that fails with one of these (see ``probe``).
OUTAGE_ERRORS = frozenset({
    60, 81, 159, 164, 173, 202, 203, 209, 210, 225, 236, 241, 242, 243, 244, 279, 319, 364, 394, 425, 497,
    516, 735, 749, 762, 774, 776, 777, 778, 999, 1019, 1020,
})
# TOO_MANY_PARTS: more partitions (months of ts) in one insert than ClickHouse allows; smaller parts
# insert, so the batch is split, but no single entry is to blame (nor is it when the server is
# behind on merges, which shares the code).
BATCH_ERRORS = frozenset({252})
_CODE = re.compile(r"Code: (\d+)")
_NOISE = re.compile(r":? \(in file/uri [^)]*\)|\(version [^)]*\)")
REASON_CHARS = 600


class ClickHouseUnavailable(Exception):
    """ClickHouse did not take a batch for a reason of its own: retry the same batch later.

    ``explained``: no code (the connection) or one of ``OUTAGE_ERRORS``; otherwise ClickHouse gave
    a code that names neither the data nor an outage.
    """

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.explained = code is None or code in OUTAGE_ERRORS


class BatchRefused(Exception):
    """ClickHouse refused a batch's data. ``row_level``: some single entry is to blame."""

    def __init__(self, reason: str, *, row_level: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.row_level = row_level


def classify(exc: Exception) -> Exception:
    """The error an insert failure means for ingest: ``BatchRefused`` or ``ClickHouseUnavailable``."""
    message, code = str(exc), getattr(exc, "code", None)
    if isinstance(exc.__cause__, UnicodeDecodeError):
        # chDB could not decode the engine's message, which quoted the entry's non-UTF-8 bytes.
        message = exc.__cause__.object.decode("utf-8", "replace")
        match = _CODE.search(message)
        code = int(match.group(1)) if match else None
    # Our temporary file's name and the server's version say nothing about the entry.
    reason = " ".join(_NOISE.sub("", scrub_error_details(message)).split())[:REASON_CHARS]
    if code in ROW_ERRORS:
        return BatchRefused(reason, row_level=True)
    if code in BATCH_ERRORS:
        return BatchRefused(reason, row_level=False)
    return ClickHouseUnavailable(reason, code)


class Probe(enum.Enum):
    """What ``probe`` found ClickHouse doing."""

    TAKES_INSERTS = "takes_inserts"  # a row it holds went in again
    ANSWERS = "answers"  # it answers and has the table, but holds no row to insert again
    FAILS = "fails"


# A row ClickHouse holds, as ingest inserts it (ts_ms is the EPHEMERAL column ts derives from).
HELD_ROW_SQL = """
SELECT toUnixTimestamp64Milli(ts) AS ts_ms, * EXCEPT (ts, ingested_at) FROM events LIMIT 1
SETTINGS output_format_json_quote_64bit_integers = 0, output_format_json_quote_decimals = 1
"""


def _insert(client, block: bytes | str, token: str) -> None:
    """The one insert into events: wire-format lines (``block``) under the deduplication ``token``."""
    client.raw_insert("events", list(JSON_COLUMNS), insert_block=block, fmt="JSONEachRow",
                      settings={**JSON_SETTINGS, "insert_deduplication_token": token})


def probe(settings: Settings, known_good: bytes | None) -> Probe:
    """Whether ClickHouse takes an insert into events now, data aside.

    ``known_good`` (an entry inserted before), else a row read back from the table, is inserted
    again the way every batch is (same table, constraints and materialized views), under a
    deduplication token of its own so that it is really written. It collapses with its twin: the
    table replaces by event id, the settler reads one row per id and reports read ``FINAL``.
    """
    try:
        client = clickhouse_client(settings)  # making one may fail already (chDB: a missing database)
        line = known_good or client.raw_query(HELD_ROW_SQL, fmt="JSONEachRow").strip()
        if not line:
            return Probe.ANSWERS
        _insert(client, line, f"probe:{uuid.uuid4()}")
    except (ClickHouseError, OSError):
        return Probe.FAILS
    return Probe.TAKES_INSERTS


class BatchWriter:
    """One insert of stream entries (or of events, to seed ClickHouse without the stream).

    ``key`` is the entry's stream id (for events, their id): the insert's
    deduplication token names ``stream``, the first, the last and the count, so
    the same entries inserted again after a crash are dropped by ClickHouse.
    ``stream`` is the stream (shard) the ids are of: each shard numbers its
    entries on its own, so two shards' batches may have the same ids, and
    ClickHouse would drop the second as a repeat of the first.
    """

    def __init__(self, settings: Settings, metrics: IngestMetrics | None = None, *, stream: str = "") -> None:
        self.settings = settings
        self.metrics = metrics
        self.stream = stream
        self.keys: list[bytes] = []
        self.raws: list[bytes] = []
        self.closed = False

    def submit(self, key: bytes, raw: bytes) -> None:
        assert not self.closed, "a batch writer inserts once"
        self.keys.append(key)
        self.raws.append(raw)

    def extend(self, keys: list[bytes], raws: list[bytes]) -> None:
        """``submit`` each pair: a batch's worth at C speed, off the path every entry takes."""
        assert not self.closed, "a batch writer inserts once"
        self.keys.extend(keys)
        self.raws.extend(raws)

    def __len__(self) -> int:
        return len(self.keys)

    def close(self) -> None:
        """Insert everything submitted in one statement; raise ``BatchRefused`` or ``ClickHouseUnavailable``."""
        assert not self.closed, "a batch writer inserts once"
        self.closed = True
        if not self.keys:
            return
        started = time.perf_counter()
        token = f"{self.stream}:{self.keys[0].decode()}:{self.keys[-1].decode()}:{len(self.keys)}"
        try:
            _insert(clickhouse_client(self.settings), b"\n".join(self.raws), token)
        except (ClickHouseError, OSError) as exc:
            failure = classify(exc)
            self._count("refused" if isinstance(failure, BatchRefused) else "unavailable")
            raise failure from exc
        self._count("ok")
        if self.metrics:
            self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _count(self, outcome: str) -> None:
        if self.metrics:
            self.metrics.inserts.labels(outcome).inc()


def insert_events(settings: Settings, events: Iterable[Event]) -> int:
    """Seed ClickHouse with events directly, without the stream (tests, benchmarks); return how many."""
    writer = BatchWriter(settings)
    for event in events:
        writer.submit(event.event_id.encode(), event.encode())
    writer.close()
    return len(writer)
