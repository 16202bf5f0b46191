"""Group commit of events to the Redis stream.

A request submits its event to the open batch and awaits that batch's
flush, so it answers only once its event is durable. The flusher takes the
open batch whenever the event loop has run everything ready, or as soon as
it holds ``SEND_AT`` events; up to ``MAX_FLUSHES_IN_FLIGHT`` flushes
overlap, and while that many are in flight everything submitted joins the
next batch, so batches grow with load and durability costs one Redis round
trip per batch, not per request.

A flush is one ``EVALSHA`` of the stream's append script (``oros.stream``, which
every producer uses), which XADDs every event and HSETs the batch's
click-index entries into their bucket hash: one command to pack and
one reply to parse, measured 4x cheaper for the client than a pipeline of
2N commands. Flushes are pipelined on one connection of our own
(``StreamConnection``). Where replicas must confirm an append
(``OROS_STREAM_REPLICAS``), the flush's ``WAIT`` follows it on the same
write, and a batch they did not confirm in time is spooled like one Redis
refused.

The appender writes one shard of a sharded stream (``Keys.shard``): the
shard of the number it draws from a Redis counter when it first connects,
so the appenders of every host spread evenly over the shards, and every
flush is one script on one slot of one node. On a Redis Cluster it
connects to the node that holds its shard, and asks the cluster again after
losing the connection (a failover promoted a replica, or the slot moved).

When Redis fails the batch goes to the local spool instead (see spool.py)
and the appender keeps spooling, without retrying Redis per batch, until the
replayer finds Redis back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial

import hiredis
import orjson
from redis import exceptions as redis_errors

from oros import clickindex, stream
from oros.clickindex import Entry as IndexEntry
from oros.connections import AnyRedis, node_of
from oros.events import canonical_uuid
from oros.keys import Keys, StreamShard

from .metrics import Metrics
from .spool import ClaimedFile, Spool, SpoolError

log = logging.getLogger(__name__)

REDIS_ERRORS = stream.REDIS_ERRORS

# Flushes overlap, up to this many: a request then waits for one Redis round
# trip, not for the flush ahead of it as well; measured (docs/tracker.md) to
# matter when Redis shares a busy core. Past a few, batches only get smaller.
MAX_FLUSHES_IN_FLIGHT = 4

# A batch is sent once it holds this many events, before the loop turn that
# fills it ends. Without it, a turn that parsed many requests sends them to
# Redis only after the last one is handled; they then come back, are answered
# and return from the client all together, and the tracker idles while that
# one clump waits on Redis. Measured (docs/tracker.md): idle 5% -> 1%, +5%
# req/s at 64 connections; 24 to 40 did equally well, 8 and 16 worse (more
# flushes), 48 and more as before. Batches stay large enough to amortize a flush.
SEND_AT = 32

class AppendError(Exception):
    """Neither Redis nor the spool took the event; the request must fail (503)."""


class Batch:
    """Events collected for one flush. Closed before it is written; never reused."""

    __slots__ = ("events", "index", "waiters", "closed")

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.index: list[IndexEntry] = []
        self.waiters: list[asyncio.Future] = []
        self.closed = False

    def __len__(self) -> int:
        return len(self.events)

    def submit(self, event: bytes, index: IndexEntry | None, waiter: asyncio.Future) -> None:
        assert not self.closed, "batch already flushed"
        self.events.append(event)
        if index is not None:
            self.index.append(index)
        self.waiters.append(waiter)

    def close(self) -> None:
        self.closed = True

    def succeed(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():  # a cancelled request no longer waits
                waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(exc)


class StreamConnection(asyncio.Protocol):
    """One Redis connection the appender pipelines its flushes on.

    A flush writes its packed command straight to the socket; ``data_received``
    hands each reply, in order, to the callback its command was sent with.
    Compared with redis-py (a pool, a ``wait_for`` task per send, a read
    loop, then a task to wake) this saves the CPU and, more, the event-loop
    turns that under load are most of a click's latency (docs/tracker.md).

    Replies come in order, so one overdue reply means the connection is stuck:
    a single watchdog timer checks the oldest command and closes the
    connection, which fails (so spools) every flush still waiting on it.
    """

    def __init__(self, timeout_s: float) -> None:
        self._loop = asyncio.get_running_loop()  # protocols are made inside the loop
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader()
        self._callbacks: deque[Callable[[object], None]] = deque()
        self._sent_at: deque[float] = deque()  # loop time each awaited command was written
        self._watchdog: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, params: dict, timeout_s: float) -> StreamConnection:
        """Connect as ``params`` say (``oros.connections.node_of``), authenticate, select the db, load the script."""
        loop = asyncio.get_running_loop()
        factory = partial(cls, timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                if params.get("path"):
                    _, conn = await loop.create_unix_connection(factory, params["path"])
                else:
                    ssl = True if params.get("ssl") else None
                    host, port = params.get("host", "localhost"), params.get("port", 6379)
                    _, conn = await loop.create_connection(factory, host, port, ssl=ssl)
                if params.get("password"):
                    auth = [params["username"]] if params.get("username") else []
                    await conn.call(hiredis.pack_command(("AUTH", *auth, params["password"])))
                if params.get("db"):
                    await conn.call(hiredis.pack_command(("SELECT", params["db"])))
                await conn.call(hiredis.pack_command(("SCRIPT", "LOAD", stream.APPEND_LUA)))
        except (TimeoutError, OSError) as exc:
            raise redis_errors.ConnectionError(f"cannot open the stream connection: {exc!r}") from None
        return conn

    @property
    def closed(self) -> bool:
        return self._transport is None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            if isinstance(reply, hiredis.ReplyError):
                reply = redis_errors.ResponseError(str(reply))
            self._sent_at.popleft()
            self._callbacks.popleft()(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._sent_at.clear()
        error = redis_errors.ConnectionError(f"stream connection lost: {exc!r}")
        while self._callbacks:
            self._callbacks.popleft()(error)

    def send(self, command: bytes, *on_replies: Callable[[object], None]) -> None:
        """Write ``command`` (one or more packed commands); each of ``on_replies`` gets its command's
        reply in turn, or the exception that replaces it."""
        if self._transport is None:
            raise redis_errors.ConnectionError("stream connection closed")
        now = self._loop.time()
        for on_reply in on_replies:
            self._callbacks.append(on_reply)
            self._sent_at.append(now)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._timeout_s, self._check_overdue)
        self._transport.write(command)

    def _check_overdue(self) -> None:
        self._watchdog = None
        if not self._sent_at:
            return
        left = self._sent_at[0] + self._timeout_s - self._loop.time()
        if left <= 0:
            log.warning("no reply from redis in time, dropping the stream connection",
                        extra={"waiting": len(self._sent_at)})
            self.close()
        else:
            self._watchdog = self._loop.call_later(left, self._check_overdue)

    async def call(self, command: bytes, replies: int = 1):
        """Send ``command`` (``replies`` packed commands); the last reply, or the first error."""
        waiter = asyncio.get_running_loop().create_future()
        got: list = []

        def settle(reply: object) -> None:
            got.append(reply)
            if len(got) < replies or waiter.done():
                return
            error = next((r for r in got if isinstance(r, Exception)), None)
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(got[-1])

        self.send(command, *[settle] * replies)
        return await waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class Appender:
    def __init__(
        self,
        redis: AnyRedis,
        keys: Keys,
        spool: Spool,
        metrics: Metrics,
        *,
        index_ttl_s: int,
        max_batch: int,
        linger_ms: int = 0,
        timeout_s: float = 2.0,
        replicas: int = 0,
        wait_ms: int = 500,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._shard: StreamShard | None = None  # drawn when it first connects
        self._replicas = replicas
        self._wait = stream.packed_wait(replicas, wait_ms) if replicas else b""
        self._spool = spool
        self._metrics = metrics
        self._index_ttl_s = index_ttl_s
        self._max_batch = max_batch
        self._linger_s = linger_ms / 1000
        self._timeout_s = timeout_s
        self._batch = Batch()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start()
        self._flush_due = False  # a _flush call is scheduled
        self._closed = False
        self._drained = asyncio.Event()  # set once closed and nothing is left to flush
        self._conn: StreamConnection | None = None
        self._connecting = asyncio.Lock()
        self._in_flight = 0  # flushes sent and not yet answered (fast path)
        self._slow: set[asyncio.Task] = set()  # flushes that must connect or split first
        self.redis_ok = True

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def append(self, event: bytes, index: IndexEntry | None = None) -> asyncio.Future:
        """Submit ``event`` (and its click-index entry); await the result to know both are durable.

        The future is done once the batch is in the stream or the spool. A plain
        function, not a coroutine: every click saves a frame.
        """
        if self._closed:
            raise AppendError("the tracker is shutting down")
        waiter = self._loop.create_future()
        batch = self._batch
        if not batch.events:  # else a flush is already due, or the next reply will take it
            self._schedule_flush()
        batch.submit(event, index, waiter)
        if len(batch.events) >= SEND_AT and self._slot_free():
            # The flush already due takes whatever joins the next batch this turn.
            self._batch = Batch()
            self._dispatch(batch)
        return waiter

    async def close(self) -> None:
        """Refuse new events, flush the ones already submitted, stop."""
        self._closed = True
        self._schedule_flush()
        await self._drained.wait()
        if self._conn is not None:
            self._conn.close()

    def _schedule_flush(self) -> None:
        # call_soon runs after every callback already ready, so the batch takes
        # all the requests this loop turn has parsed; a linger waits longer.
        if not self._flush_due:
            self._flush_due = True
            if self._linger_s and not self._closed:
                self._loop.call_later(self._linger_s, self._flush)
            else:
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        # When full, what arrives meanwhile joins one bigger batch, which the
        # next finished flush dispatches (_flushed).
        if self._batch and self._slot_free():
            batch, self._batch = self._batch, Batch()
            self._dispatch(batch)
        if self._closed and not self._batch and not self._in_flight and not self._slow:
            self._drained.set()

    def _slot_free(self) -> bool:
        return self._in_flight + len(self._slow) < MAX_FLUSHES_IN_FLIGHT

    def _flushed(self) -> None:
        """A flush finished: its slot is free for the open batch, if any."""
        if self._batch or self._closed:
            self._schedule_flush()

    def _dispatch(self, batch: Batch) -> None:
        """Start flushing ``batch``: straight onto the socket when connected, else in a task."""
        batch.close()
        started = time.perf_counter()
        if not self.redis_ok:
            self._spooled(batch, started)
            return
        conn = self._conn
        if conn is None or conn.closed or len(batch) > self._max_batch:
            task = asyncio.create_task(self._flush_slowly(batch, started))
            self._slow.add(task)
            task.add_done_callback(self._slow_done)
            return
        self._in_flight += 1

        def answered(error: Exception | None) -> None:
            self._in_flight -= 1
            if error is not None:
                self._redis_failed(batch, started, error)
            else:
                self._streamed(batch, started)
            self._flushed()

        self._send(conn, self._command(batch.events, batch.index), answered)

    def _send(self, conn: StreamConnection, command: bytes, done: Callable[[Exception | None], None]) -> None:
        """Write an append (and its WAIT); ``done`` gets None once it is durable, else the exception."""
        if not self._replicas:
            conn.send(command, lambda reply: done(reply if isinstance(reply, Exception) else None))
            return
        script: list = []  # the script's reply: its error outranks the WAIT's answer

        def waited(reply: object) -> None:
            if isinstance(script[0], Exception):
                done(script[0])
            elif isinstance(reply, Exception):
                done(reply)
            else:
                try:
                    stream.check_replicated(reply, self._replicas)
                except stream.NotReplicated as exc:
                    done(exc)
                    return
                done(None)

        conn.send(command + self._wait, script.append, waited)

    def _slow_done(self, task: asyncio.Task) -> None:
        self._slow.discard(task)
        self._flushed()

    async def _flush_slowly(self, batch: Batch, started: float) -> None:
        try:
            await self.write(batch.events, batch.index)
        except REDIS_ERRORS as exc:
            self._redis_failed(batch, started, exc)
            return
        except Exception as exc:  # a bug: fail these requests rather than leave them waiting
            log.exception("flush failed", extra={"events": len(batch)})
            batch.fail(AppendError(str(exc)))
            return
        self._streamed(batch, started)

    def _streamed(self, batch: Batch, started: float) -> None:
        self._metrics.flush_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(batch))
        self._metrics.events[("stream",)] += len(batch)
        batch.succeed()

    def _redis_failed(self, batch: Batch, started: float, exc: BaseException) -> None:
        if self.redis_ok:
            log.warning("redis unavailable, spooling events", extra={"error": repr(exc), "events": len(batch)})
            self.redis_ok = False
            self._metrics.redis_up.set(0)
        self._metrics.flush_failures.inc()
        if self._conn is not None:
            self._conn.close()  # start afresh (and reload the script) once Redis is back
        self._spooled(batch, started)

    def _spooled(self, batch: Batch, started: float) -> None:
        try:
            self._spool.write(batch.events)
        except OSError as exc:
            log.exception("events could not be made durable", extra={"events": len(batch)})
            batch.fail(AppendError(str(exc)))
            return
        self._metrics.flush_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(batch))
        batch.succeed()

    def resume(self) -> None:
        """Redis answers again: write to it from the next flush on."""
        if not self.redis_ok:
            log.info("redis is back, appending to the stream again")
        self.redis_ok = True
        self._metrics.redis_up.set(1)

    async def write(self, events: list[bytes], index: list[IndexEntry]) -> None:
        """Append ``events`` and set the index entries, one script call per ``max_batch`` of each."""
        # An oversized batch (a burst during a slow flush) is split so no one
        # script blocks Redis for long. There are never more index entries than
        # events, so the events' ranges cover every entry.
        step = self._max_batch
        for start in range(0, len(events), step):
            chunk = slice(start, start + step)
            await self._call(events[chunk], index[chunk])

    def _command(self, events: list[bytes], index: list[IndexEntry]) -> bytes:
        return stream.packed(self._shard, self._index_ttl_s, events, index)

    async def _call(self, events: list[bytes], index: list[IndexEntry]) -> None:
        conn = await self._connection()
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._replicas:
                    reply = await conn.call(self._command(events, index) + self._wait, replies=2)
                    stream.check_replicated(reply, self._replicas)
                else:
                    await conn.call(self._command(events, index))
        except TimeoutError:
            conn.close()
            raise redis_errors.TimeoutError("no reply to a flush") from None
        except redis_errors.ResponseError as exc:
            if str(exc).startswith("NOSCRIPT"):
                conn.close()  # reconnecting loads the script again
            raise

    async def _connection(self) -> StreamConnection:
        if self._conn is None or self._conn.closed:
            async with self._connecting:
                if self._conn is None or self._conn.closed:
                    if self._shard is None:
                        self._shard = await self._draw_shard()
                    # A connection was lost: where the shard lives may have changed (a failover).
                    node = await node_of(self._redis, self._shard.stream, refresh=self._conn is not None)
                    self._conn = await StreamConnection.open(node, self._timeout_s)
        return self._conn

    async def _draw_shard(self) -> StreamShard:
        keys = self._keys
        if keys.stream_shards == 1:
            return keys.shard(0)
        number = (await self._redis.incr(keys.appenders) - 1) % keys.stream_shards
        log.info("appending to stream shard %d of %d", number, keys.stream_shards)
        return keys.shard(number)

    async def replay_spool(self) -> int:
        """If Redis answers, append to it again and replay every spool file no one holds.

        Returns the number of events replayed. Raises a Redis error if Redis is
        still (or again) unavailable; the files left are retried next time.
        """
        if self.redis_ok and not self._spool.has_files():
            return 0
        await self._connection()  # the node that holds our shard answers (a ping, on a cluster, asks them all)
        self.resume()
        replayed, failed = 0, []
        try:
            self._spool.seal()
        except OSError as exc:  # our own file waits for the next tick; every other file can be replayed now
            log.exception("cannot seal the active spool file")
            failed.append(f"sealing the active file: {exc!r}")
        try:
            for claimed in self._spool.claim():
                try:
                    replayed += await self._replay_file(claimed)
                except OSError as exc:  # this file's disk; the others may still be read
                    log.exception("cannot replay a spool file", extra={"path": str(claimed.path)})
                    failed.append(f"{claimed.path.name}: {exc!r}")
                finally:
                    claimed.release()
        except OSError as exc:
            raise SpoolError(f"spool directory: {exc!r}") from exc
        if failed:
            raise SpoolError("; ".join(failed))
        return replayed

    async def _replay_file(self, claimed: ClaimedFile) -> int:
        events = claimed.read_events()
        for start in range(0, len(events), self._max_batch):
            await self._replay_chunk(events[start : start + self._max_batch])
        claimed.remove()
        self._spool.replayed(len(events))
        log.info("replayed a spool file", extra={"path": str(claimed.path), "events": len(events)})
        return len(events)

    async def _replay_chunk(self, events: list[bytes]) -> None:
        index, valid = [], []
        for raw in events:
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                event = None
            if not isinstance(event, dict):
                log.error("skipping a corrupt spool line", extra={"line": raw[:200]})
                continue
            valid.append(raw)  # an object that is no valid event is ingest's to dead-letter, not ours to drop
            # The click index was never written for a spooled click; rebuild it.
            click_id = canonical_uuid(event.get("event_id"))
            if event.get("event_type") == "click" and click_id is not None and event.get("link_id"):
                index.append(clickindex.entry(click_id, clickindex.encode(event)))
        await self._call(valid, index)

