"""What a code missing from the process cache may cost, so a flood of random codes cannot reach Postgres.

A code in no cache costs a Redis GET, and when Redis does not know it
either, a Postgres query. Two bounds keep a flood of made-up codes from
starving real misses:

* ``KnownCodes``: a Bloom filter (rbloom) of every code in Postgres, loaded
  at start and every ``REFRESH_S``, and told of each code published on the
  invalidation channel (the admin API publishes a link when it creates it).
  A code the filter has never seen is answered 404 without Postgres,
  except ``PROBES_PER_S`` a second (a link whose publish was lost, or one
  inserted by SQL, resolves without waiting for the next load; a flood
  spends them in its first milliseconds). The filter is consulted after
  Redis, so a link created after the last load resolves at once from the
  ``link:{code}`` entry its creation wrote; until the first load succeeds
  (Postgres down at start) every code may exist and only ``MissBudget``
  holds Postgres back.
* ``MissBudget``: per client (an IPv4 address, an IPv6 /64: one subscriber
  holds a whole /64) at most ``MISSES_PER_CLIENT_S`` cache misses a second,
  beyond which the redirect answers 429; and per process at most
  ``LOOKUPS_PER_S`` Postgres lookups a second, beyond which a miss answers
  503 at once instead of queueing on the pool.

Fixed one-second windows: one dict lookup and an add per miss, memory
bounded by the clients seen in one second (``MAX_CLIENTS``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Callable

import psycopg
from psycopg_pool import AsyncConnectionPool
from rbloom import Bloom

log = logging.getLogger(__name__)

REFRESH_S = 300.0
RETRY_S = 5.0
FALSE_POSITIVE_RATE = 0.01
MIN_CAPACITY = 100_000
MISSES_PER_CLIENT_S = 20
LOOKUPS_PER_S = 200
PROBES_PER_S = 5
MAX_CLIENTS = 100_000  # per window; clients beyond it count only against the total

CODES_SQL = "SELECT code FROM tracking_links"


class KnownCodes:
    """A Bloom filter of every code that exists; ``might_exist`` is True until it has loaded once."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._filter: Bloom | None = None
        self._added_while_loading: list[str] | None = None
        self.loaded_at: float | None = None

    def might_exist(self, code: str) -> bool:
        return self._filter is None or code in self._filter

    def add(self, code: str) -> None:
        if self._filter is not None:
            self._filter.add(code)
        if self._added_while_loading is not None:  # the filter being built started before this code existed
            self._added_while_loading.append(code)

    async def load(self) -> int:
        """Build a new filter from Postgres and swap it in; returns how many codes it holds."""
        self._added_while_loading = []
        try:
            async with self._pool.connection(timeout=10.0) as conn:
                count = (await (await conn.execute("SELECT count(*) AS n FROM tracking_links")).fetchone())["n"]
                fresh = Bloom(max(2 * count, MIN_CAPACITY), FALSE_POSITIVE_RATE)  # room to grow until the next load
                cursor = conn.cursor()
                async for row in cursor.stream(CODES_SQL):
                    fresh.add(row["code"])
            fresh.update(self._added_while_loading)
            self._filter, self.loaded_at = fresh, time.time()
            return count
        finally:
            self._added_while_loading = None

    async def refresh_forever(self) -> None:
        while True:
            try:
                count = await self.load()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("cannot load the known codes, retrying", extra={"error": repr(exc), "retry_s": RETRY_S})
                await asyncio.sleep(RETRY_S)
                continue
            log.info("known codes loaded", extra={"codes": count})
            await asyncio.sleep(REFRESH_S)


class MissBudget:
    """Per-second allowances of cache misses per client and of Postgres lookups in total."""

    def __init__(
        self, *, per_client_s: int = MISSES_PER_CLIENT_S, lookups_s: int = LOOKUPS_PER_S, probes_s: int = PROBES_PER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._per_client_s = per_client_s
        self._lookups_s = lookups_s
        self._probes_s = probes_s
        self._probes = 0
        self._window = -1
        self._clients: dict[str, int] = {}
        self._lookups = 0

    def _tick(self) -> None:
        window = int(self._clock())
        if window != self._window:
            self._window, self._clients, self._lookups, self._probes = window, {}, 0, 0

    def miss(self, ip: str | None) -> bool:
        """Count a cache miss from ``ip``; False when that client is over its allowance."""
        self._tick()
        client = _client(ip)
        count = self._clients.get(client, 0) + 1
        if count > self._per_client_s:
            return False
        if count > 1 or len(self._clients) < MAX_CLIENTS:
            self._clients[client] = count
        return True

    def lookup(self) -> bool:
        """Count a Postgres lookup of a code that may exist; False when this second's are spent."""
        self._tick()
        self._lookups += 1
        return self._lookups <= self._lookups_s

    def probe(self) -> bool:
        """Count a Postgres lookup of a code the filter does not know; False when this second's are spent."""
        self._tick()
        self._probes += 1
        return self._probes <= self._probes_s


def _client(ip: str | None) -> str:
    """Who a miss is counted against: the address, or for IPv6 its /64."""
    if ip is None or ":" not in ip:
        return ip or "unknown"
    try:
        address = ipaddress.IPv6Address(ip)
    except ValueError:
        return ip
    if address.ipv4_mapped is not None:  # an IPv4 client on a dual-stack socket
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False).network_address)
