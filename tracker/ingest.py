"""Ingest: drain the Redis event stream into ClickHouse in large batches.

A batch is normally the stream's JSON lines inserted as they are (ClickHouse
parses them); when ClickHouse refuses one, entries are checked in Python and
inserted as columns, and the bad ones dead-lettered. A consumer group shares
the stream between ingesters. An entry is
acknowledged (then trimmed) only after the ClickHouse insert that holds it
succeeded, so a crash or a ClickHouse outage leaves it pending and it is
inserted later, by this consumer's retry or by another consumer's
XAUTOCLAIM. Replays cannot reach money twice: the table is a
ReplacingMergeTree on the edge event id, each batch carries a
deduplication token, and the settler keys its decisions on the event id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import orjson
from clickhouse_connect.driver.exceptions import ClickHouseError
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import ResponseError

from oros.connections import clickhouse_client, redis_client
from oros.events import EVENT_TYPES, STREAM_FIELD, Event
from oros.settings import Settings

log = logging.getLogger(__name__)

COLUMNS = (
    "event_id", "event_type", "ts", "campaign_id", "link_id", "creator_id", "supporter_id",
    "business_id", "click_id", "order_id", "value", "currency", "ip", "user_agent", "referrer",
    "is_bot", "bot_reason", "source", "metadata",
)

INGESTED = Counter("oros_ingest_events_total", "Events inserted into ClickHouse")
DEAD = Counter("oros_ingest_dead_letters_total", "Stream entries moved to the dead-letter stream")
BATCH_SECONDS = Histogram("oros_ingest_batch_seconds", "ClickHouse insert latency per batch")
LAG_ENTRIES = Gauge("oros_ingest_lag_entries", "Stream entries not yet delivered to the consumer group")
LAG_SECONDS = Gauge("oros_ingest_lag_seconds", "Age of the newest entry of the last batch when it was inserted")


class InvalidMessage(ValueError):
    """A stream entry that can never be inserted; it goes to the dead-letter stream."""


@dataclass
class Batch:
    """Checked rows collected column by column, with their stream ids (the fallback path; tests and benches)."""

    columns: list[list] = field(default_factory=lambda: [[] for _ in COLUMNS])
    ids: list[bytes] = field(default_factory=list)

    def submit(self, entry_id: bytes, event: Event) -> None:
        for column, value in zip(self.columns, _row(event)):
            column.append(value)
        self.ids.append(entry_id)

    def __len__(self) -> int:
        return len(self.ids)


# The edge writes canonical lowercase ids; matching that form is 5x cheaper than parsing it.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch


def _uuid(value: str | None, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise InvalidMessage("missing id")
        return None
    if isinstance(value, str) and _CANONICAL_UUID(value):
        return value
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise InvalidMessage(f"malformed uuid {value!r}") from None


def _value(raw: str | None) -> Decimal | None:
    if raw is None:
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise InvalidMessage(f"malformed value {raw!r}") from None
    if not value.is_finite() or abs(value) >= Decimal("1e10"):
        raise InvalidMessage(f"value out of range {raw!r}")
    return value.quantize(Decimal("0.01"))


def _row(event: Event) -> tuple:
    """One event as ClickHouse column values; raises InvalidMessage for what could never insert."""
    if event.event_type not in EVENT_TYPES:
        raise InvalidMessage(f"unknown event_type {event.event_type!r}")
    if not isinstance(event.ts_ms, int) or not 0 < event.ts_ms < 2**42:
        raise InvalidMessage(f"bad ts_ms {event.ts_ms!r}")
    return (
        _uuid(event.event_id, required=True),
        event.event_type,
        datetime.fromtimestamp(event.ts_ms / 1000, tz=UTC),
        _uuid(event.campaign_id, required=True),
        _uuid(event.link_id),
        _uuid(event.creator_id),
        _uuid(event.supporter_id),
        _uuid(event.business_id),
        _uuid(event.click_id),
        None if event.order_id is None else str(event.order_id)[:200],
        _value(event.value),
        event.currency,
        event.ip or "",
        event.user_agent or "",
        event.referrer or "",
        bool(event.is_bot),
        event.bot_reason or "",
        event.source or "",
        orjson.dumps(event.metadata or {}).decode(),
    )


def write_batch(settings: Settings, batch: Batch) -> None:
    """One columnar insert of the whole batch."""
    ids = batch.columns[0]
    clickhouse_client(settings).insert(
        "events", batch.columns, column_names=list(COLUMNS), column_oriented=True,
        # The same events re-inserted after a crash carry the same token and are dropped.
        settings={"insert_deduplication_token": f"{ids[0]}:{ids[-1]}:{len(ids)}"},
    )


JSON_COLUMNS = ("ts_ms",) + tuple(c for c in COLUMNS if c != "ts")
JSON_SETTINGS = {
    "input_format_json_read_objects_as_strings": 1,  # metadata: a JSON object stored as its text
    "input_format_skip_unknown_fields": 1,  # a newer edge may add fields
    "input_format_null_as_default": 1,
}
def write_raw(settings: Settings, raws: list[bytes], first_id: bytes, last_id: bytes) -> None:
    """One insert of the stream's JSON lines, as they are (FORMAT JSONEachRow)."""
    clickhouse_client(settings).raw_insert(
        "events", list(JSON_COLUMNS), insert_block=b"\n".join(raws), fmt="JSONEachRow",
        # The same stream entries re-inserted after a crash carry the same token and are dropped.
        settings={**JSON_SETTINGS, "insert_deduplication_token": f"{first_id.decode()}:{last_id.decode()}:{len(raws)}"},
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(fields: dict) -> Event:
    raw = fields.get(STREAM_FIELD)
    if raw is None:
        raise InvalidMessage("entry has no 'e' field")
    try:
        return Event.decode(raw)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise InvalidMessage(f"undecodable event: {exc}") from None


class Ingester:
    """One consumer of the stream's consumer group.

    :param consumer: the consumer name; defaults to host and pid, so a
        restarted process is a new consumer and its predecessor's pending
        entries are re-claimed once idle for ``claim_idle_ms``.
    """

    def __init__(
        self,
        settings: Settings,
        consumer: str | None = None,
        *,
        batch_size: int = 50_000,
        block_ms: int = 1000,
        claim_idle_ms: int = 60_000,
        max_deliveries: int = 5,
        retry_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.keys = settings.keys
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.retry_s = retry_s
        self.redis = redis_client(settings)
        self._group_ready = False

    async def close(self) -> None:
        await self.redis.aclose()

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.keys.stream, self.keys.consumer_group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def drain_once(self) -> int:
        """Insert everything in the stream now (and whatever idle consumers left pending); return rows."""
        await self._ensure_group()
        total = 0
        entries = await self._next(block_ms=None)
        while entries:
            inserted, entries = await self._insert_and_read(entries)
            total += inserted
            entries = entries or await self._next(block_ms=None)
        return total

    async def _next(self, *, block_ms: int | None) -> list:
        """Our own unacknowledged entries first, then a dead consumer's, then new ones.

        Claimed entries become ours, so they are inserted in the same pass as claimed and never twice.
        """
        return await self._own_pending() or await self._claim() or await self._read(block_ms=block_ms)

    async def _insert_and_read(self, entries: list) -> tuple[int, list]:
        """Insert ``entries`` while reading the next new ones: ClickHouse and Redis work overlap.

        If the insert fails, the entries read meanwhile stay pending for this consumer.
        """
        insert = asyncio.create_task(self._insert(entries))
        try:
            following = await self._read(block_ms=None)
        finally:
            inserted = await insert
        return inserted, following

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until ``stop`` is set; a failed insert is retried (the stream only grows meanwhile)."""
        await self._ensure_group()
        entries: list = []
        while not stop.is_set():
            try:
                # A failed batch is retried from memory: re-reading it would count as redelivery
                # and a long outage would then dead-letter good events.
                entries = entries or await self._next(block_ms=self.block_ms)
                if entries:
                    _, entries = await self._insert_and_read(entries)
            except Exception:
                log.exception("ingest batch failed; retrying in %ss", self.retry_s)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.retry_s)
                except TimeoutError:
                    pass

    async def _read(self, *, block_ms: int | None) -> list:
        reply = await self.redis.xreadgroup(
            self.keys.consumer_group, self.consumer, {self.keys.stream: ">"},
            count=self.batch_size, block=block_ms,
        )
        return reply[0][1] if reply else []

    async def _own_pending(self) -> list:
        """Entries this consumer read but never acknowledged (a failed insert): retried first."""
        reply = await self.redis.xreadgroup(
            self.keys.consumer_group, self.consumer, {self.keys.stream: "0"}, count=self.batch_size
        )
        entries = reply[0][1] if reply else []
        # A deleted-but-pending entry comes back with no fields; nothing to insert, just ack it.
        gone = [entry_id for entry_id, fields in entries if not fields]
        if gone:
            await self.redis.xack(self.keys.stream, self.keys.consumer_group, *gone)
        return [(entry_id, fields) for entry_id, fields in entries if fields]

    async def _claim(self) -> list:
        """Take over entries a dead consumer left pending; dead-letter those delivered too often."""
        claimed: list = []
        start = "0-0"
        while len(claimed) < self.batch_size:
            start, entries, _deleted = await self.redis.xautoclaim(
                self.keys.stream, self.keys.consumer_group, self.consumer,
                min_idle_time=self.claim_idle_ms, start_id=start, count=self.batch_size,
            )
            claimed.extend(entries)
            if start in (b"0-0", "0-0"):
                break
        if not claimed:
            return []
        return await self._drop_overdelivered(claimed)

    async def _drop_overdelivered(self, entries: list) -> list:
        first, last = entries[0][0], entries[-1][0]
        pending = await self.redis.xpending_range(
            self.keys.stream, self.keys.consumer_group, min=first, max=last, count=len(entries) * 2,
            consumername=self.consumer,
        )
        counts = {p["message_id"]: p["times_delivered"] for p in pending}
        keep, dead = [], []
        for entry_id, fields in entries:
            if counts.get(entry_id, 0) > self.max_deliveries:
                dead.append((entry_id, fields, f"delivered {counts[entry_id]} times"))
            else:
                keep.append((entry_id, fields))
        await self._dead_letter(dead)
        return keep

    async def _dead_letter(self, dead: list) -> None:
        if not dead:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for entry_id, fields, reason in dead:
                pipe.xadd(self.keys.dead_letter, {
                    b"id": entry_id, b"reason": reason.encode(), b"e": fields.get(STREAM_FIELD, b""),
                })
            ids = [entry_id for entry_id, _, _ in dead]
            pipe.xack(self.keys.stream, self.keys.consumer_group, *ids)
            pipe.xdel(self.keys.stream, *ids)
            await pipe.execute()
        DEAD.inc(len(dead))
        log.warning("dead-lettered %d stream entries", len(dead), extra={"first_reason": dead[0][2]})

    async def _insert(self, entries: list) -> int:
        """Insert ``entries`` and acknowledge them; return rows inserted.

        Fast path: the raw JSON lines in one insert, parsed by ClickHouse. If
        ClickHouse refuses the batch, fall back to checking each entry in
        Python: good ones go in as columns, bad ones to the dead-letter stream.
        If that insert fails too (ClickHouse down) the error propagates and
        every entry stays pending.
        """
        raws = [fields.get(STREAM_FIELD) for _, fields in entries]
        started = time.perf_counter()
        if all(raws):
            try:
                await asyncio.to_thread(write_raw, self.settings, raws, entries[0][0], entries[-1][0])
            except ClickHouseError as exc:
                # Bad data or ClickHouse down: the checked path below tells them apart by failing again.
                log.warning("raw batch insert failed; checking entry by entry", extra={"error": str(exc)[:300]})
            else:
                return await self._acked([entry_id for entry_id, _ in entries], started)
        batch = Batch()
        dead = []
        for entry_id, fields in entries:
            try:
                batch.submit(entry_id, _decode(fields))
            except InvalidMessage as exc:
                dead.append((entry_id, fields, str(exc)))
        if batch:
            await asyncio.to_thread(write_batch, self.settings, batch)
        await self._dead_letter(dead)
        return await self._acked(batch.ids, started)

    async def _acked(self, ids: list[bytes], started: float) -> int:
        """Acknowledge (and trim) only what ClickHouse now holds."""
        if ids:
            BATCH_SECONDS.observe(time.perf_counter() - started)
            await self.redis.xack(self.keys.stream, self.keys.consumer_group, *ids)
            INGESTED.inc(len(ids))
            LAG_SECONDS.set(max(0.0, time.time() - int(ids[-1].split(b"-")[0]) / 1000))
        await self._trim()
        return len(ids)

    async def _trim(self) -> None:
        """Drop what every consumer has acknowledged: entries below both the oldest pending
        entry and the group's last delivered id (one XTRIM, not an XDEL per id)."""
        pending = await self.redis.xpending(self.keys.stream, self.keys.consumer_group)
        group = await self._group_info()
        if group is None:
            return
        if group.get("lag") is not None:
            LAG_ENTRIES.set(group["lag"])
        ms, seq = (int(part) for part in _text(group["last-delivered-id"]).split("-"))
        threshold = (ms, seq + 1)
        if pending["pending"]:
            low_ms, low_seq = (int(part) for part in _text(pending["min"]).split("-"))
            threshold = min(threshold, (low_ms, low_seq))
        await self.redis.xtrim(self.keys.stream, minid=f"{threshold[0]}-{threshold[1]}", approximate=False)

    async def _group_info(self) -> dict | None:
        for group in await self.redis.xinfo_groups(self.keys.stream):
            if _text(group.get("name")) == self.keys.consumer_group:
                return group
        return None



async def _run(settings: Settings, once: bool) -> None:
    ingester = Ingester(settings)
    try:
        if once:
            rows = await ingester.drain_once()
            log.info("ingest drained", extra={"rows": rows})
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await ingester.run(stop)
    finally:
        await ingester.close()


def run_ingest(settings: Settings, once: bool) -> None:
    """``oros ingest [--once]``."""
    from oros.migrate import migrate_clickhouse

    migrate_clickhouse(settings)
    asyncio.run(_run(settings, once))
