"""``api_keys.last_used_at``, kept current without a Postgres write per request.

Keys are verified from Redis, so Postgres never sees a key being used. Each
tracker process writes a key's ``last_used_at`` at most once per
``INTERVAL_S``, in the background: the answer never waits for it, and a
failed write only leaves the timestamp a little older.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import psycopg
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

INTERVAL_S = 300.0
TOUCH_SQL = """
UPDATE api_keys SET last_used_at = now()
 WHERE key_hash = %(hash)s AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => %(interval)s))
"""


class KeyUsage:
    def __init__(self, pool: AsyncConnectionPool, interval_s: float = INTERVAL_S) -> None:
        self._pool = pool
        self._interval_s = interval_s
        self._written: dict[str, float] = {}  # key hash -> monotonic time of the last write
        self._tasks: set[asyncio.Task] = set()

    def touch(self, key_hash: str) -> None:
        """Note that the key was used; writes it if this process has not lately."""
        now = time.monotonic()
        if now - self._written.get(key_hash, -self._interval_s) < self._interval_s:
            return
        self._written[key_hash] = now
        task = asyncio.create_task(self._write(key_hash))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, key_hash: str) -> None:
        try:
            async with self._pool.connection(timeout=2.0) as conn:
                await conn.execute(TOUCH_SQL, {"hash": key_hash, "interval": self._interval_s})
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.debug("api key last_used_at not written", extra={"error": repr(exc)})

    async def close(self) -> None:
        """Let the writes in flight finish (briefly), then stop."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 2.0)
