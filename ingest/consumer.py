"""The consumer-group loops: stream entries into ClickHouse, acknowledged only after the insert.

A consumer group shares the stream between ingesters. A sharded stream
(``OROS_STREAM_SHARDS``, docs/scaling.md) has a group per shard, and an
ingester runs one loop per shard (``ShardConsumer``) under one consumer
name: each shard is read, retried, re-claimed, dead-lettered and trimmed on
its own, with the shard's own keys, so on a Redis Cluster every command and
MULTI stays on the shard's slot, and one shard's outage or backlog does not
hold up the others. Each pass takes this
consumer's own unacknowledged entries, then entries a dead consumer left
idle, then new ones, and inserts them in one insert while it reads the next
batch. An entry is acknowledged (then trimmed) only after the insert that
holds it succeeded, so a crash or an outage leaves it pending and it is
inserted later. Replays cannot reach money twice: the table is a
ReplacingMergeTree on the edge event id, each insert carries a
deduplication token, and the settler keys its decisions on the event id.

When ClickHouse refuses a batch's data, the entries its own limits refuse
are found in Python (``rows.check``) and dead-lettered, the rest go in one
insert, and if that fails too the batch is bisected with ClickHouse as the
judge: O(log n) inserts per bad entry, each bad one dead-lettered with the
reason ClickHouse gave, every good one inserted. When ClickHouse is
unavailable the batch stays pending and is retried from memory with
backoff (a re-read would count as a redelivery), however long it takes:
an outage never dead-letters anything. Retries are counted per batch: from
the ``probe_after``-th on, each failure is followed by a probe; if
ClickHouse takes a row it already holds but not this batch, the batch is to
blame whatever its error code said, and it is split as refused data (each
entry that still fails alone is blamed only after another probe passes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from datetime import timedelta

from redis.exceptions import ResponseError

from oros.connections import redis_client
from oros.events import STREAM_FIELD
from oros.keys import StreamShard
from oros.settings import Settings

from . import deadletter
from .attribute import attribute
from .enrich import Enricher, anonymized
from .metrics import IngestMetrics
from .rows import InvalidEvent, NotWireFormat, check
from .writer import BatchRefused, BatchWriter, ClickHouseUnavailable, Probe, probe

log = logging.getLogger(__name__)

_NOT_AHEAD = object()  # an entry not enriched ahead (``_enriched`` holds None for one that cannot be)
UNANONYMIZABLE = "ip: no address can be read in the entry to anonymize (OROS_ANONYMIZE_IP)"
# A suspect's marker outlives any insert; it only stays behind when an ingester died inserting it.
SUSPECT_MARK_TTL = timedelta(days=7)


class Interrupted(Exception):
    """A pass failed part way; ``pending`` is every entry read and not yet inserted or dead-lettered."""

    def __init__(self, pending: list) -> None:
        super().__init__(f"{len(pending)} entries pending")
        self.pending = pending


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Ingester:
    """One consumer of every stream shard's consumer group.

    :param consumer: the consumer name; defaults to host and pid, so a
        restarted process is a new consumer and its predecessor's pending
        entries are re-claimed once idle for ``claim_idle_ms``.
    :param max_deliveries: a claimed entry delivered more often than this is
        inserted alone; if an ingester dies while inserting it alone, the
        next one dead-letters it (a poison that kills consumers).
    :param probe_after: a batch that failed this many times in a row as "unavailable" is
        probed for after each failure (``writer.probe``): if ClickHouse takes other inserts,
        the batch is split as refused data.
    :param enrich: add country, device, browser, OS, referrer host and the IP hash
        (``ingest.enrich``), and give conversions and sales their click's (``ingest.attribute``);
        off only for the benchmark's baseline.
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
        max_retry_s: float = 30.0,
        probe_after: int = 3,
        metrics: IngestMetrics | None = None,
        enrich: bool = True,
    ) -> None:
        self.settings = settings
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.probe_after = probe_after
        self.metrics = metrics or IngestMetrics()
        self.enricher = Enricher(settings) if enrich else None
        self.redis = redis_client(settings)
        self.shards = [ShardConsumer(self, shard) for shard in settings.keys.shards]
        self._lags: dict[int, tuple[int | None, float | None]] = {}  # shard -> (entries, seconds)
        self._unavailable_since: dict[int, float] = {}  # shard -> when its inserts began to fail
        self._batch_retries: dict[int, int] = {}  # shard -> failed attempts in a row of its waiting batch

    async def close(self) -> None:
        await self.redis.aclose()

    async def drain_once(self) -> int:
        """Insert everything in every shard now (and whatever idle consumers left pending); return rows.

        Raises ``ClickHouseUnavailable`` (or a Redis error) instead of waiting, unless a probe finds
        ClickHouse taking other inserts: then the failing batch is split as refused data at once.
        """
        total = 0
        for shard in self.shards:
            total += await shard.drain_once()
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Drain every shard until ``stop`` is set, each in a loop of its own."""
        await asyncio.gather(*(shard.run(stop) for shard in self.shards))

    def report_unavailable(self, shard: int, unavailable: bool) -> None:
        """Whether one shard's inserts fail: the gauge holds the first failure of any shard's outage, so
        a shard with nothing to insert does not clear the outage another one is waiting out."""
        if unavailable:
            self._unavailable_since.setdefault(shard, time.time())
        else:
            self._unavailable_since.pop(shard, None)
        self.metrics.unavailable_since.set(min(self._unavailable_since.values(), default=0))

    def report_retries(self, shard: int, failures: int) -> None:
        """Failed attempts in a row of one shard's waiting batch: the gauge shows the most of any shard."""
        self._batch_retries[shard] = failures
        self.metrics.batch_retries.set(max(self._batch_retries.values()))

    def report_lag(self, shard: int, *, entries: int | None = None, seconds: float | None = None) -> None:
        """One shard's lag: the gauges show the shards' total entries and their oldest batch's age."""
        old_entries, old_seconds = self._lags.get(shard, (None, None))
        self._lags[shard] = (old_entries if entries is None else entries, old_seconds if seconds is None else seconds)
        self.metrics.lag_entries.set(sum(e for e, _ in self._lags.values() if e is not None))
        self.metrics.lag_seconds.set(max((s for _, s in self._lags.values() if s is not None), default=0.0))


class ShardConsumer:
    """The consumer loop of one stream shard, for an ``Ingester`` (its settings, name, clients, metrics)."""

    def __init__(self, ingester: Ingester, shard: StreamShard) -> None:
        self.ingester = ingester
        self.shard = shard
        self.settings, self.consumer, self.redis = ingester.settings, ingester.consumer, ingester.redis
        self.metrics, self.enricher = ingester.metrics, ingester.enricher
        self.batch_size, self.block_ms = ingester.batch_size, ingester.block_ms
        self.claim_idle_ms, self.max_deliveries = ingester.claim_idle_ms, ingester.max_deliveries
        self.retry_s, self.max_retry_s = ingester.retry_s, ingester.max_retry_s
        self.probe_after = ingester.probe_after
        self._known_good: bytes | None = None  # this shard's last entry inserted: what a probe inserts again
        self._enriched: dict[bytes, bytes] = {}  # entry id -> line, made while the previous batch inserts
        self._group_ready = False

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.shard.stream, self.shard.consumer_group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def drain_once(self) -> int:
        """Insert everything in this shard now (and whatever idle consumers left pending); return rows."""
        await self._ensure_group()
        total, blamed = 0, False
        entries = await self._next(block_ms=None)
        while entries:
            try:
                inserted, entries = await self._insert_and_read(entries, blamed=blamed)
            except Interrupted as exc:
                # No retries to count here: a failure ClickHouse's probe does not explain is raised at once.
                if blamed or not await self._to_blame(exc.__cause__):
                    raise exc.__cause__ from None
                entries, blamed = exc.pending, True
                continue
            total += inserted
            blamed = False
            entries = entries or await self._next(block_ms=None)
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until ``stop`` is set; a failed batch is retried from memory, with backoff."""
        await self._ensure_group()
        entries: list = []
        failures = 0  # in a row, of the batch in ``entries``
        blamed = False
        while not stop.is_set():
            try:
                entries = entries or await self._next(block_ms=self.block_ms)
                if entries:
                    # No reading ahead while retrying: an outage must not pull the backlog into memory.
                    _, entries = await self._insert_and_read(entries, read_ahead=not failures, blamed=blamed)
                failures, blamed = 0, False
                self.ingester.report_retries(self.shard.number, 0)
                self.ingester.report_unavailable(self.shard.number, False)
                continue
            except Interrupted as exc:
                entries = exc.pending
                cause = exc.__cause__
            except Exception as exc:  # noqa: BLE001 - Redis down or a bug: the loop must outlive it
                cause = exc
            failures, blamed = failures + 1, False
            self.ingester.report_retries(self.shard.number, failures)
            delay = min(self.retry_s * 2 ** min(failures - 1, 16), self.max_retry_s)
            if isinstance(cause, ClickHouseUnavailable):
                self.metrics.retries.inc()
                self.ingester.report_unavailable(self.shard.number, True)
                log.warning("ClickHouse unavailable; %d entries of shard %d wait, retry %d in %.1fs: %s",
                            len(entries), self.shard.number, failures, delay, str(cause)[:300])
                blamed = failures >= self.probe_after and await self._to_blame(cause)
                if blamed:
                    log.warning("ClickHouse takes other inserts but not shard %d's batch of %d, failed %d times: "
                                "splitting it as refused data", self.shard.number, len(entries), failures)
                    continue
            else:
                log.error("ingest pass of shard %d failed; retry %d in %.1fs", self.shard.number, failures, delay,
                          exc_info=cause)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _next(self, *, block_ms: int | None) -> list:
        """Our own unacknowledged entries first, then a dead consumer's, then new ones.

        Claimed entries become ours, so they are inserted in the same pass as claimed and never twice.
        """
        return await self._own_pending() or await self._claim() or await self._read(block_ms=block_ms)

    async def _insert_and_read(self, entries: list, *, read_ahead: bool = True,
                               blamed: bool = False) -> tuple[int, list]:
        """Insert ``entries`` while reading the next new ones: ClickHouse and Redis work overlap.

        If either fails, ``Interrupted`` carries what is still to do (the next entries were read,
        so they are ours and pending; keeping them in memory spares a redelivery). ``blamed``: a
        probe found the batch to blame, so it is split at once.
        """
        settled: set[bytes] = set()
        insert = asyncio.create_task(self._insert(entries, settled, blamed=blamed))
        following: list = []
        failure: Exception | None = None
        try:
            if read_ahead:
                following = await self._read(block_ms=None)
                # ClickHouse parses the batch in its own thread meanwhile (chDB and the HTTP client
                # release the GIL), so enriching the next one here costs little of the wall time.
                self._enrich_ahead(following)
        except Exception as exc:  # noqa: BLE001 - reported below, once the insert is done
            failure = exc
        try:
            inserted = await insert
        except Exception as exc:  # noqa: BLE001 - the insert's failure is the one that matters
            failure = exc
        if failure is not None:
            raise Interrupted([e for e in entries if e[0] not in settled] + following) from failure
        return inserted, following

    def _enrich_ahead(self, entries: list) -> None:
        if self.enricher is None:
            return
        ids = [entry_id for entry_id, fields in entries if fields.get(STREAM_FIELD)]
        raws = [fields[STREAM_FIELD] for _, fields in entries if fields.get(STREAM_FIELD)]
        self._enriched.update(zip(ids, self.enricher.lines(raws), strict=True))

    def _lines(self, ids: list[bytes], raws: list[bytes]) -> list[bytes | None]:
        """What ClickHouse gets: each entry enriched (ahead, or now); None for one that would keep a full
        IP (``Enricher.line``). A dead letter keeps the entry as the edge wrote it (``_kept``), so a replay
        is enriched anew."""
        if self.enricher is None:
            return raws
        ahead = [self._enriched.pop(entry_id, _NOT_AHEAD) for entry_id in ids]
        return [self.enricher.line(raw) if line is _NOT_AHEAD else line for line, raw in zip(ahead, raws, strict=True)]

    async def _read(self, *, block_ms: int | None) -> list:
        reply = await self.redis.xreadgroup(
            self.shard.consumer_group, self.consumer, {self.shard.stream: ">"},
            count=self.batch_size, block=block_ms,
        )
        return reply[0][1] if reply else []

    async def _own_pending(self) -> list:
        """Entries this consumer read but never acknowledged (a failed insert): retried first."""
        reply = await self.redis.xreadgroup(
            self.shard.consumer_group, self.consumer, {self.shard.stream: "0"}, count=self.batch_size
        )
        entries = reply[0][1] if reply else []
        # A deleted-but-pending entry comes back with no fields; nothing to insert, just ack it.
        gone = [entry_id for entry_id, fields in entries if not fields]
        if gone:
            await self.redis.xack(self.shard.stream, self.shard.consumer_group, *gone)
        return [(entry_id, fields) for entry_id, fields in entries if fields]

    async def _claim(self) -> list:
        """Take over entries a dead consumer left pending; those delivered too often go in alone."""
        claimed: list = []
        start = "0-0"
        while len(claimed) < self.batch_size:
            start, entries, _deleted = await self.redis.xautoclaim(
                self.shard.stream, self.shard.consumer_group, self.consumer,
                min_idle_time=self.claim_idle_ms, start_id=start, count=self.batch_size,
            )
            claimed.extend(entries)
            if start in (b"0-0", "0-0"):
                break
        if not claimed:
            return []
        return await self._isolate_overdelivered(claimed)

    async def _isolate_overdelivered(self, entries: list) -> list:
        """Insert alone each entry delivered more than ``max_deliveries`` times; return the others.

        Several consumers died holding it: an outage with restarts, or an entry that kills
        the process. Alone, it inserts, is refused, or waits out the outage like any entry;
        if this process dies meanwhile, its marker tells the next consumer to dead-letter it.
        """
        first, last = entries[0][0], entries[-1][0]
        pending = await self.redis.xpending_range(
            self.shard.stream, self.shard.consumer_group, min=first, max=last, count=len(entries) * 2,
            consumername=self.consumer,
        )
        counts = {p["message_id"]: p["times_delivered"] for p in pending}
        suspects = [e for e in entries if counts.get(e[0], 0) > self.max_deliveries]
        if not suspects:
            return entries
        marks = await self.redis.hmget(self.shard.ingest_suspects, [entry_id for entry_id, _ in suspects])
        crashed = [(entry_id, fields, "crashed", f"delivered {counts[entry_id]} times; ingester {_text(mark)} "
                    "died while inserting it alone")
                   for (entry_id, fields), mark in zip(suspects, marks, strict=True) if mark]
        settled: set[bytes] = set()
        await self._dead_letter(crashed, settled)
        if crashed:
            await self.redis.hdel(self.shard.ingest_suspects, *settled)
        for entry in suspects:
            if entry[0] not in settled:
                await self._insert_alone(entry)
        return [e for e in entries if counts.get(e[0], 0) <= self.max_deliveries]

    async def _insert_alone(self, entry: tuple) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.shard.ingest_suspects, entry[0], self.consumer)
            pipe.expire(self.shard.ingest_suspects, SUSPECT_MARK_TTL)
            await pipe.execute()
        try:
            await self._insert([entry], set())
        finally:
            await self.redis.hdel(self.shard.ingest_suspects, entry[0])

    async def _insert(self, entries: list, settled: set[bytes], *, blamed: bool = False) -> int:
        """Insert ``entries`` and acknowledge them; dead-letter what can never insert; return rows.

        ``settled`` collects the ids inserted or dead-lettered so far, so a failure part way
        leaves the caller knowing what is still to do. ``ClickHouseUnavailable`` propagates.
        ``blamed``: skip the one insert that failed before, and split.
        """
        ids = [entry_id for entry_id, _ in entries]
        raws = [fields.get(STREAM_FIELD) for _, fields in entries]
        if not all(raws):
            empty = [(entry_id, fields, "invalid", "the stream entry holds no event")
                     for (entry_id, fields), raw in zip(entries, raws, strict=True) if not raw]
            await self._dead_letter(empty, settled)
            ids, raws = [i for i, raw in zip(ids, raws, strict=True) if raw], [raw for raw in raws if raw]
            if not ids:
                return 0
        lines = self._lines(ids, raws)
        if None in lines:
            unreadable = [(entry_id, {STREAM_FIELD: raw}, "invalid", UNANONYMIZABLE)
                          for entry_id, raw, line in zip(ids, raws, lines, strict=True) if line is None]
            await self._dead_letter(unreadable, settled)
            kept = [(i, raw, line) for i, raw, line in zip(ids, raws, lines, strict=True) if line is not None]
            ids, raws, lines = [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]
            if not ids:
                return 0
        if self.enricher is not None:
            lines = await asyncio.to_thread(attribute, self.settings, lines)
        if blamed:
            return await self._isolate(ids, raws, lines, settled, blamed=True)
        try:
            return await self._write(ids, lines, settled)
        except BatchRefused as exc:
            log.warning("ClickHouse refused a batch of %d; isolating the bad entries: %s", len(ids), exc.reason[:300])
            return await self._isolate(ids, raws, lines, settled)

    async def _write(self, ids: list[bytes], raws: list[bytes], settled: set[bytes]) -> int:
        writer = BatchWriter(self.settings, self.metrics, stream=self.shard.stream)
        writer.extend(ids, raws)
        await asyncio.to_thread(writer.close)
        self._known_good = raws[-1]
        return await self._acked(ids, settled)

    async def _isolate(self, ids: list[bytes], raws: list[bytes], lines: list[bytes], settled: set[bytes], *,
                       blamed: bool = False) -> int:
        """Insert the good entries of a refused batch, dead-letter the bad ones; return rows inserted.

        ``lines`` are the entries as inserted (enriched), ``raws`` as the stream holds them.
        ``blamed``: a part that fails as "unavailable" is split too (or, alone, dead-lettered) while
        a probe shows ClickHouse taking other inserts; when it does not, the outage propagates.
        """
        invalid, rest, originals = [], ([], []), {}
        for entry_id, raw, line in zip(ids, raws, lines, strict=True):
            try:
                check(line)
            except InvalidEvent as exc:
                invalid.append((entry_id, {STREAM_FIELD: raw}, "invalid", str(exc)))
                continue
            except NotWireFormat:
                pass  # ClickHouse decides, below
            rest[0].append(entry_id)
            rest[1].append(line)
            originals[entry_id] = raw
        await self._dead_letter(invalid, settled)
        # Python found the culprits: the rest goes in at once. Otherwise ClickHouse finds them.
        parts = [rest] if invalid else _halves(rest)
        inserted = 0
        while parts:
            part_ids, part_lines = parts.pop()
            if not part_ids:
                continue
            try:
                inserted += await self._write(part_ids, part_lines, settled)
            except BatchRefused as exc:
                if len(part_ids) > 1:
                    parts += _halves((part_ids, part_lines))
                elif exc.row_level:
                    dead = (part_ids[0], {STREAM_FIELD: originals[part_ids[0]]}, "refused", exc.reason)
                    await self._dead_letter([dead], settled)
                else:
                    raise ClickHouseUnavailable(exc.reason) from exc
            except ClickHouseUnavailable as exc:
                if not blamed or not await self._to_blame(exc):
                    raise
                if len(part_ids) > 1:
                    parts += _halves((part_ids, part_lines))
                else:
                    reason = f"{exc.reason} (ClickHouse took other inserts meanwhile)"
                    await self._dead_letter([(part_ids[0], {STREAM_FIELD: originals[part_ids[0]]}, "refused", reason)],
                                            settled)
        return inserted

    async def _to_blame(self, failure: BaseException | None) -> bool:
        """Whether a batch that failed with ``failure`` is to blame: ClickHouse takes a row it holds
        (or, holding none, answers, and the failure's code is no known outage)."""
        if not isinstance(failure, ClickHouseUnavailable):
            return False
        found = await asyncio.to_thread(probe, self.settings, self._known_good)
        self.metrics.probes.labels(found.value).inc()
        return found is Probe.TAKES_INSERTS or (found is Probe.ANSWERS and not failure.explained)

    async def _dead_letter(self, dead: list, settled: set[bytes]) -> None:
        if not dead:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            deadletter.queue(pipe, self.shard, self.consumer, [self._kept(*letter) for letter in dead])
            await pipe.execute()
        settled.update(entry_id for entry_id, *_ in dead)
        for _, _, reason_class, _ in dead:
            self.metrics.dead.labels(reason_class).inc()
        log.warning("dead-lettered %d stream entries", len(dead),
                    extra={"first_id": _text(dead[0][0]), "first_reason": dead[0][3][:300]})

    def _kept(self, entry_id: bytes, fields: dict, reason_class: str, reason: str) -> tuple:
        """What a dead letter keeps of an entry: while anonymizing, its IP truncated, or no event at all when
        none can be read in it (dead letters stay until an operator acts; docs/security.md)."""
        raw = fields.get(STREAM_FIELD)
        if raw is None or not self.settings.anonymize_ip:
            return entry_id, fields, reason_class, reason
        kept = anonymized(raw)
        if kept is None:
            return entry_id, {}, reason_class, f"{reason} (the event is not kept: {UNANONYMIZABLE})"
        return entry_id, {STREAM_FIELD: kept}, reason_class, reason

    async def _acked(self, ids: list[bytes], settled: set[bytes]) -> int:
        """Acknowledge (and trim) only what ClickHouse now holds."""
        await self.redis.xack(self.shard.stream, self.shard.consumer_group, *ids)
        settled.update(ids)
        self.metrics.inserted.inc(len(ids))
        self.ingester.report_lag(self.shard.number, seconds=max(0.0, time.time() - int(ids[-1].split(b"-")[0]) / 1000))
        await self._trim()
        return len(ids)

    async def _trim(self) -> None:
        """Drop what every consumer has acknowledged: entries below both the oldest pending
        entry and the group's last delivered id (one XTRIM, not an XDEL per id)."""
        pending = await self.redis.xpending(self.shard.stream, self.shard.consumer_group)
        group = await self._group_info()
        if group is None:
            return
        if group.get("lag") is not None:
            self.ingester.report_lag(self.shard.number, entries=group["lag"])
        ms, seq = (int(part) for part in _text(group["last-delivered-id"]).split("-"))
        threshold = (ms, seq + 1)
        if pending["pending"]:
            low_ms, low_seq = (int(part) for part in _text(pending["min"]).split("-"))
            threshold = min(threshold, (low_ms, low_seq))
        await self.redis.xtrim(self.shard.stream, minid=f"{threshold[0]}-{threshold[1]}", approximate=False)

    async def _group_info(self) -> dict | None:
        for group in await self.redis.xinfo_groups(self.shard.stream):
            if _text(group.get("name")) == self.shard.consumer_group:
                return group
        return None


def _halves(part: tuple[list, list]) -> list[tuple[list, list]]:
    """The two halves of a part (ids, raws), in the order ``pop()`` takes them: first half first."""
    ids, raws = part
    mid = len(ids) // 2
    return [(ids[mid:], raws[mid:]), (ids[:mid], raws[:mid])]
