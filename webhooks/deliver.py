"""Delivering the outbox: claim due deliveries, sign and POST each, record the attempt, schedule the next.

Postgres writes the outbox in the transaction of each fact (sql/postgres/0066);
this process only reads it, so a request handler never sends a webhook and a
fact whose transaction rolled back is never announced. At least once: a
delivery is claimed with ``FOR UPDATE SKIP LOCKED`` and leased for
``LEASE_S``; a process that dies mid-attempt loses the lease and another
sends the same event again (same ``OROS-Event-Id``, which receivers dedupe
by). An attempt is recorded only by the holder of the lease, so a slow
process whose lease was taken over cannot overwrite the newer attempt.

Each request: ``POST`` of the JSON envelope ``{id, type, created_at, data}``
with ``OROS-Event-Id``, ``OROS-Event-Type``, ``OROS-Delivery-Attempt`` and
``OROS-Signature`` (oros/webhooks.py), no redirects followed, at most
``TIMEOUT_S``, at most ``EXCERPT_BYTES`` of the answer read (kept with the
attempt), addresses checked when connecting (webhooks/addresses.py). A 2xx
delivers; anything else is retried (webhooks/schedule.py) until the day is
over, then the delivery is failed.

Fairness: at most ``CONCURRENCY`` attempts at once, at most ``PER_ENDPOINT`` of
them for one endpoint, so a receiver that hangs until the timeout slows only
its own deliveries.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from oros import webhooks
from oros.settings import Settings

from . import schedule
from .addresses import PublicResolver, RefusedAddress
from .metrics import WebhookMetrics

log = logging.getLogger(__name__)

TIMEOUT_S = 10
CONNECT_TIMEOUT_S = 5
LEASE_S = 60  # well past TIMEOUT_S: a lease expires only when its process is gone
CONCURRENCY = 64
PER_ENDPOINT = 8
SCAN_ROWS = 1000  # due rows looked at per claim, oldest first
POLL_S = 1.0
EXCERPT_BYTES = 1024
EXCERPT_CHARS = 500
ERROR_CHARS = 500
RETENTION = timedelta(days=30)  # finished deliveries (and their attempts) are deleted after this
PRUNE_EVERY_S = 3600
PRUNE_ROWS = 10_000
STATS_EVERY_S = 15
USER_AGENT = "OROS-Webhooks/1"

# The oldest due deliveries, at most PER_ENDPOINT per endpoint and none of an endpoint already at
# its limit here, leased to this process. The endpoint's URL and its valid secrets (current first)
# come along; a disabled endpoint's delivery is claimed to be canceled.
CLAIM_SQL = """
WITH candidates AS (
  SELECT id, endpoint_id, next_attempt_at FROM webhook_deliveries
   WHERE status = 'pending' AND next_attempt_at <= %(now)s
     AND (leased_until IS NULL OR leased_until <= %(now)s)
     AND endpoint_id <> ALL(%(busy)s::uuid[])
   ORDER BY next_attempt_at
   LIMIT %(scan)s
), ranked AS (
  SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at, id) AS n
                    FROM candidates) r
   WHERE n <= %(per_endpoint)s
), due AS (
  SELECT d.id FROM webhook_deliveries d
   WHERE d.id IN (SELECT id FROM ranked)
     AND d.status = 'pending' AND (d.leased_until IS NULL OR d.leased_until <= %(now)s)
   ORDER BY d.next_attempt_at
   LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d SET leased_until = %(lease_until)s, lease_token = %(token)s
  FROM due, webhook_endpoints e
 WHERE d.id = due.id AND e.id = d.endpoint_id
RETURNING d.id::text AS id, d.event_id::text AS event_id, d.event_type, d.payload, d.attempt_count,
          d.created_at, d.give_up_at, d.endpoint_id::text AS endpoint_id, e.url, e.disabled_at IS NOT NULL AS disabled,
          array(SELECT s.secret FROM webhook_endpoint_secrets s
                 WHERE s.endpoint_id = d.endpoint_id AND (s.expires_at IS NULL OR s.expires_at > %(now)s)
                 ORDER BY s.expires_at IS NOT NULL, s.created_at DESC) AS secrets
"""

# The attempt's outcome, only while this process still holds the lease.
RECORD_SQL = """
WITH d AS (
  UPDATE webhook_deliveries
     SET attempt_count = attempt_count + 1, status = %(status)s,
         next_attempt_at = coalesce(%(next)s, next_attempt_at), finished_at = %(finished)s,
         leased_until = NULL, lease_token = NULL
   WHERE id = %(id)s AND lease_token = %(token)s
  RETURNING id, attempt_count
)
INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code, response_excerpt, error)
SELECT id, attempt_count, %(started)s, %(duration_ms)s, %(status_code)s, %(excerpt)s, %(error)s FROM d
RETURNING attempt
"""

CANCEL_SQL = """
UPDATE webhook_deliveries SET status = 'canceled', finished_at = %(now)s, leased_until = NULL, lease_token = NULL
 WHERE id = %(id)s AND lease_token = %(token)s
"""

STATS_SQL = """
SELECT count(*) AS due, min(next_attempt_at) AS oldest FROM webhook_deliveries
 WHERE status = 'pending' AND next_attempt_at <= %(now)s
"""

PRUNE_SQL = """
DELETE FROM webhook_deliveries WHERE id IN (
  SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND finished_at < %(before)s LIMIT %(rows)s)
"""


def current_time() -> datetime:
    """The deliverer's clock; tests pass their own."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Attempt:
    """What one attempt of one delivery led to (returned to tests, logged)."""

    delivery_id: str
    event_id: str
    outcome: str  # webhooks.metrics.OUTCOMES
    status_code: int | None
    error: str | None
    next_attempt_at: datetime | None


def envelope(event_id: str, event_type: str, created_at: datetime, payload: dict) -> bytes:
    """The request body: the same bytes on every attempt (the signature's timestamp is what changes)."""
    return orjson.dumps({"id": event_id, "type": event_type,
                         "created_at": created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                         "data": payload})


def _clean(text: str, limit: int) -> str:
    # Postgres text refuses NUL; anything a receiver sends is kept printable-ish and short.
    return text.replace("\x00", "\ufffd")[:limit]


class Deliverer:
    """Delivers due outbox rows until stopped; ``deliver_due`` runs one pass (tests, ``--once``)."""

    def __init__(self, settings: Settings, *, metrics: WebhookMetrics | None = None,
                 clock: Callable[[], datetime] = current_time, rng: Callable[[], float] = random.random,
                 poll_s: float = POLL_S, timeout_s: float = TIMEOUT_S) -> None:
        self.settings = settings
        self.metrics = metrics or WebhookMetrics()
        self.clock = clock
        self.rng = rng
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.allow_private = settings.allows_private_webhooks
        self.token = str(uuid.uuid4())  # this process's leases
        self._pool: AsyncConnectionPool | None = None
        self._session: aiohttp.ClientSession | None = None
        self._in_flight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task] = set()
        self._next_stats = 0.0
        self._next_prune = 0.0

    async def open(self) -> None:
        self._pool = AsyncConnectionPool(self.settings.database_url, min_size=1, max_size=4,
                                         kwargs={"row_factory": dict_row, "autocommit": True}, open=False,
                                         name="webhooks")
        await self._pool.open(wait=True)
        # No per-host limit: endpoints of many users may share a host, and a request queued for a
        # connection spends its timeout waiting. PER_ENDPOINT bounds each endpoint instead.
        connector = aiohttp.TCPConnector(resolver=PublicResolver(allow_private=self.allow_private),
                                         limit=CONCURRENCY, limit_per_host=0, ttl_dns_cache=10)
        self._session = aiohttp.ClientSession(
            connector=connector, trust_env=False, auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s, connect=CONNECT_TIMEOUT_S),
            headers={"User-Agent": USER_AGENT})

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._pool is not None:
            await self._pool.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep up to ``CONCURRENCY`` attempts going until ``stop``; attempts under way finish first."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                await self._housekeeping()
                started = await self._fill()
                if started == 0 or len(self._tasks) >= CONCURRENCY:
                    await asyncio.wait({stopping, *self._tasks}, timeout=self.poll_s,
                                       return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def deliver_due(self) -> list[Attempt]:
        """Attempt every delivery due now (by the clock) once, and wait for all of them."""
        done: list[Attempt] = []
        while True:
            claimed = await self._claim(CONCURRENCY)
            if not claimed:
                return done
            done += await asyncio.gather(*(self._attempt(job) for job in claimed))

    async def _fill(self) -> int:
        try:
            claimed = await self._claim(CONCURRENCY - len(self._tasks))
        except (psycopg.OperationalError, PoolTimeout) as exc:
            self.metrics.claim_errors.inc()
            self.metrics.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("webhook claim failed", extra={"error": self.metrics.last_error})
            return 0
        for job in claimed:
            task = asyncio.create_task(self._attempt(job))
            self._tasks.add(task)
            task.add_done_callback(self._finished)
        return len(claimed)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # logged by _attempt; its lease expires and another attempt follows

    async def _claim(self, limit: int) -> list[dict]:
        if limit <= 0:
            return []
        now = self.clock()
        busy = [endpoint for endpoint, n in self._in_flight.items() if n >= PER_ENDPOINT]
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(CLAIM_SQL, {
                "now": now, "busy": busy, "scan": SCAN_ROWS, "per_endpoint": PER_ENDPOINT, "limit": limit,
                "lease_until": now + timedelta(seconds=LEASE_S), "token": self.token,
            })).fetchall()
        self.metrics.last_claim_ok, self.metrics.last_error = time.time(), None
        for row in rows:
            self._in_flight[row["endpoint_id"]] += 1
        return rows

    async def _attempt(self, job: dict) -> Attempt:
        self.metrics.in_flight.inc()
        try:
            if job["disabled"]:
                return await self._cancel(job)
            attempt = job["attempt_count"] + 1
            started_at = self.clock()
            started = time.perf_counter()
            status_code, excerpt, error = await self._post(job, attempt, started_at)
            duration_s = time.perf_counter() - started
            self.metrics.attempt_seconds.observe(duration_s)
            return await self._record(job, started_at, duration_s, status_code, excerpt, error)
        except Exception:  # one delivery's bug must not stop the others; its lease expires and it is tried again
            log.exception("webhook attempt failed unexpectedly", extra={"delivery": job["id"]})
            raise
        finally:
            self.metrics.in_flight.dec()
            self._in_flight[job["endpoint_id"]] -= 1
            if self._in_flight[job["endpoint_id"]] <= 0:
                del self._in_flight[job["endpoint_id"]]

    async def _post(self, job: dict, attempt: int, started_at: datetime) -> tuple[int | None, str | None, str | None]:
        """(status code, start of the answer, error): what the receiver said, or why it said nothing."""
        body = envelope(job["event_id"], job["event_type"], job["created_at"], job["payload"])
        timestamp = int(started_at.timestamp())
        headers = {
            "Content-Type": "application/json",
            webhooks.EVENT_ID_HEADER: job["event_id"],
            webhooks.EVENT_TYPE_HEADER: job["event_type"],
            webhooks.ATTEMPT_HEADER: str(attempt),
            webhooks.SIGNATURE_HEADER: webhooks.signature_header(job["secrets"], timestamp, body),
        }
        try:
            url = webhooks.check_url(job["url"], allow_private=self.allow_private)
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                try:
                    raw = await response.content.read(EXCERPT_BYTES)
                except (TimeoutError, aiohttp.ClientError):
                    raw = b""  # the status came; a body that never ends does not undo it
                return response.status, _clean(raw.decode("utf-8", "replace"), EXCERPT_CHARS), None
        except webhooks.UnsafeTarget as exc:
            return None, None, f"refused: the URL {exc}"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedAddress):
                return None, None, f"refused: {exc.os_error}"
            return None, None, _clean(f"connection failed: {exc.os_error or exc}", ERROR_CHARS)
        except TimeoutError:
            return None, None, f"timed out after {self.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            return None, None, _clean(f"{type(exc).__name__}: {exc}", ERROR_CHARS)

    async def _record(self, job: dict, started_at: datetime, duration_s: float, status_code: int | None,
                      excerpt: str | None, error: str | None) -> Attempt:
        attempt = job["attempt_count"] + 1
        now = self.clock()
        if status_code is not None and 200 <= status_code < 300:
            outcome, next_at = "delivered", None
        else:
            if error is None:
                error = f"HTTP {status_code}" + (" (redirects are not followed)" if 300 <= status_code < 400 else "")
            next_at = schedule.next_attempt_at(attempt, now, job["give_up_at"], self.rng)
            outcome = "retrying" if next_at is not None else "failed"
        status = {"delivered": "delivered", "retrying": "pending", "failed": "failed"}[outcome]
        async with self._pool.connection() as conn:
            row = await (await conn.execute(RECORD_SQL, {
                "status": status, "next": next_at, "finished": None if status == "pending" else now,
                "id": job["id"], "token": self.token, "started": started_at,
                "duration_ms": round(duration_s * 1000), "status_code": status_code, "excerpt": excerpt,
                "error": error,
            })).fetchone()
        if row is None:
            outcome = "lease_lost"
            log.warning("webhook lease lost before the attempt was recorded", extra={"delivery": job["id"]})
        else:
            self.metrics.attempts.labels(outcome).inc()
        log.info("webhook attempt", extra={
            "delivery": job["id"], "event_id": job["event_id"], "event_type": job["event_type"],
            "endpoint": job["endpoint_id"], "attempt": attempt, "outcome": outcome, "status_code": status_code,
            "error": error, "duration_ms": round(duration_s * 1000),
            "next_attempt_at": next_at.isoformat() if next_at else None})
        return Attempt(job["id"], job["event_id"], outcome, status_code, error, next_at)

    async def _cancel(self, job: dict) -> Attempt:
        async with self._pool.connection() as conn:
            await conn.execute(CANCEL_SQL, {"now": self.clock(), "id": job["id"], "token": self.token})
        self.metrics.attempts.labels("canceled").inc()
        return Attempt(job["id"], job["event_id"], "canceled", None, None, None)

    async def prune(self) -> int:
        """Delete the deliveries finished more than ``RETENTION`` ago, a batch per statement."""
        pruned, batch = 0, PRUNE_ROWS
        before = self.clock() - RETENTION
        while batch == PRUNE_ROWS:
            async with self._pool.connection() as conn:
                batch = (await conn.execute(PRUNE_SQL, {"before": before, "rows": PRUNE_ROWS})).rowcount
            pruned += batch
        if pruned:
            log.info("webhook deliveries pruned", extra={"rows": pruned})
        return pruned

    async def _housekeeping(self) -> None:
        """Now and then: how much is due (metrics), and finished deliveries past retention deleted."""
        at = time.monotonic()
        try:
            if at >= self._next_stats:
                self._next_stats = at + STATS_EVERY_S
                now = self.clock()
                async with self._pool.connection() as conn:
                    row = await (await conn.execute(STATS_SQL, {"now": now})).fetchone()
                self.metrics.due.set(row["due"])
                self.metrics.oldest_due_s.set((now - row["oldest"]).total_seconds() if row["oldest"] else 0)
            if at >= self._next_prune:
                self._next_prune = at + PRUNE_EVERY_S
                await self.prune()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            log.warning("webhook housekeeping failed", extra={"error": f"{type(exc).__name__}: {exc}"})
