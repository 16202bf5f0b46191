"""What a code missing from the process cache may cost, so a flood of random codes cannot reach Postgres.

A code in no cache costs a Redis GET, and when Redis does not know it
either, a Postgres query. Two bounds keep a flood of made-up codes from
starving real misses:

* ``KnownCodes``: a Bloom filter (rbloom) of every code in Postgres, loaded
  at start and every ``REFRESH_S``, told of each code published on the
  invalidation channel (the admin API publishes a link when it creates it),
  and every ``NEW_CODES_S`` of the codes made since its last read (by
  ``created_at``, re-reading ``NEW_CODES_OVERLAP`` back for transactions that
  committed late). A code the filter has never seen is answered 404 without
  Postgres, except ``PROBES_PER_S`` a second. A link whose publish was lost,
  or one inserted by SQL, is in the filter within ``NEW_CODES_S`` even while
  a flood spends the probes in its first milliseconds. The filter is consulted after
  Redis, so a link created after the last load resolves at once from the
  ``link:{code}`` entry its creation wrote; until the first load succeeds
  (Postgres down at start) every code may exist and only ``MissBudget``
  holds Postgres back.
* ``MissBudget``: per client (an IPv4 address, an IPv6 /64: one subscriber
  holds a whole /64) at most ``MISSES_PER_CLIENT_S`` misses a second that
  found no link, beyond which its misses are answered 429 before any lookup.
  Misses that find a link never count, so real users behind one address (a
  carrier NAT, a load balancer not listed in ``OROS_TRUSTED_PROXIES``) are
  never refused. And per process at most ``LOOKUPS_IN_FLIGHT`` Postgres
  lookups at once, beyond which a miss answers 503 at once instead of
  queueing on the pool (a bound on concurrency, not a rate: it lets
  through as many as Postgres answers).

Fixed one-second windows: one dict lookup and an add per miss, memory
bounded by the clients seen in one second (``MAX_CLIENTS``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import psycopg
from psycopg_pool import AsyncConnectionPool
from rbloom import Bloom

log = logging.getLogger(__name__)

REFRESH_S = 300.0
NEW_CODES_S = 5.0
NEW_CODES_OVERLAP = timedelta(minutes=1)  # longer than any transaction that makes a link
RETRY_S = 5.0
FALSE_POSITIVE_RATE = 0.01
MIN_CAPACITY = 100_000
LOAD_BATCH = 10_000
MISSES_PER_CLIENT_S = 20
# Postgres link lookups waiting or running, per process: 4 pooled connections at ~1 ms each drain 64 in ~16 ms.
LOOKUPS_IN_FLIGHT = 64
PROBES_PER_S = 5
MAX_CLIENTS = 100_000  # per window; clients beyond it count only against the total

CODES_SQL = "SELECT code FROM tracking_links"
NEW_CODES_SQL = "SELECT code FROM tracking_links WHERE created_at >= %(since)s"


class KnownCodes:
    """A Bloom filter of every code that exists; ``might_exist`` is True until it has loaded once."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._filter: Bloom | None = None
        self._added_while_loading: list[str] | None = None
        self._since: datetime | None = None  # Postgres's clock: new codes are read from here on
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
                row = await (await conn.execute("SELECT count(*) AS n, now() AS at FROM tracking_links")).fetchone()
                count, since = row["n"], row["at"] - NEW_CODES_OVERLAP
                fresh = Bloom(max(2 * count, MIN_CAPACITY), FALSE_POSITIVE_RATE)  # room to grow until the next load
                # A server-side cursor, in batches, yielding between them: a million codes must not stall redirects.
                async with conn.cursor(name="oros_known_codes") as cursor:
                    await cursor.execute(CODES_SQL)
                    while rows := await cursor.fetchmany(LOAD_BATCH):
                        fresh.update(row["code"] for row in rows)
                        await asyncio.sleep(0)
            fresh.update(self._added_while_loading)
            self._filter, self._since, self.loaded_at = fresh, since, time.time()
            return count
        finally:
            self._added_while_loading = None

    async def add_new(self) -> int:
        """Add the codes made since the last read to the filter; returns how many were read."""
        if self._filter is None:
            return 0
        async with self._pool.connection(timeout=10.0) as conn:
            at = (await (await conn.execute("SELECT now() AS at")).fetchone())["at"]
            rows = await (await conn.execute(NEW_CODES_SQL, {"since": self._since})).fetchall()
        codes = [row["code"] for row in rows]
        self._filter.update(codes)
        self._since = at - NEW_CODES_OVERLAP
        return len(codes)

    async def refresh_forever(self) -> None:
        """Load every ``REFRESH_S``, and add the new codes every ``NEW_CODES_S`` in between."""
        while True:
            try:
                count = await self.load()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("cannot load the known codes, retrying", extra={"error": repr(exc), "retry_s": RETRY_S})
                await asyncio.sleep(RETRY_S)
                continue
            log.info("known codes loaded", extra={"codes": count})
            next_load = time.monotonic() + REFRESH_S
            while (left := next_load - time.monotonic()) > 0:
                await asyncio.sleep(min(NEW_CODES_S, left))
                try:
                    await self.add_new()
                except (psycopg.Error, OSError, TimeoutError) as exc:
                    log.warning("cannot read the new codes", extra={"error": repr(exc)})


class MissBudget:
    """Allowances of misses that found nothing per client and second, of probes per second, of lookups at once.

    In process, not the Redis rate limiter (oros/ratelimit.py): it bounds the redirect's work in flight on its
    hot path, where a Redis round trip per miss is the very cost it exists to cap.
    """

    def __init__(
        self, *, per_client_s: int = MISSES_PER_CLIENT_S, lookups: int = LOOKUPS_IN_FLIGHT,
        probes_s: int = PROBES_PER_S, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._per_client_s = per_client_s
        self._max_lookups = lookups
        self.lookups = 0  # in flight
        self._probes_s = probes_s
        self._probes = 0
        self._window = -1
        self._clients: dict[str, int] = {}
        self._lookups = 0

    def _tick(self) -> None:
        window = int(self._clock())
        if window != self._window:
            self._window, self._clients, self._probes = window, {}, 0

    def exhausted(self, ip: str | None) -> bool:
        """Whether ``ip`` has had its allowance of codes that led nowhere this second."""
        self._tick()
        return self._clients.get(_client(ip), 0) >= self._per_client_s

    def not_found(self, ip: str | None) -> None:
        """Count a cache miss from ``ip`` that found no link."""
        self._tick()
        client = _client(ip)
        if client in self._clients or len(self._clients) < MAX_CLIENTS:
            self._clients[client] = self._clients.get(client, 0) + 1

    def lookup_starts(self) -> bool:
        """A Postgres lookup may start (then call ``lookup_ends``); False when too many are under way."""
        if self.lookups >= self._max_lookups:
            return False
        self.lookups += 1
        return True

    def lookup_ends(self) -> None:
        self.lookups -= 1

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
