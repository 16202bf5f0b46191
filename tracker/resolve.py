"""Code -> link, in three layers: this process, Redis, Postgres.

* In-process: a dict with a short TTL (``link_cache_ttl_s``); unknown codes
  are remembered too (``negative_cache_ttl_s``), so random codes cost a dict
  lookup. An expired entry is still served while one background refresh
  runs, so the TTL never shows in a request's latency, and a link keeps
  redirecting while Redis and Postgres are both unreachable.
* Redis ``link:{code}`` (``LinkInfo`` or ``NEGATIVE``), shared by trackers.
* Postgres, on a Redis miss, only for a code the Bloom filter of known codes
  may hold and within this second's lookup budget (tracker/misses.py);
  concurrent misses for one code share one query (single flight), and the
  answer, known or not, is written back to Redis.

``oros.links.publish`` (admin API, settler) rewrites the Redis entry and
names the code on the invalidation channel; ``listen_invalidations`` then
drops it here, so a change shows within a round trip, not a TTL.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from urllib.parse import quote, unquote_plus, urlsplit

import psycopg
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from oros import clickindex
from oros.events import click_link_fields, encode_click
from oros.keys import Keys
from oros.links import LINK_SQL, NEGATIVE, REDIS_TTL_S, LinkInfo

from .appender import REDIS_ERRORS
from .metrics import Metrics
from .misses import KnownCodes, MissBudget

log = logging.getLogger(__name__)

CID_PARAM = "oros_cid"
# Characters left as they are in a passed-through query; anything else is
# percent-encoded so a Location header never carries raw bytes.
_QUERY_SAFE = "!$&'()*+,-./:;=?@_~%"
STALE_RETRY_S = 1.0


class LinkUnavailable(Exception):
    """The code is in no cache and Postgres cannot be asked (503)."""


class Miss(enum.Enum):
    MISS = "miss"


MISS = Miss.MISS  # not in the process cache (None means: known not to exist)


@dataclass(slots=True)
class Link:
    """A resolved link and the parts every redirect through it reuses."""

    info: LinkInfo
    index_value: bytes  # the click-index entry of every click on this link
    # (click_id, ts_ms, ip, user_agent, referrer, reason, source, metadata) -> the click's
    # ``Event.encode()`` bytes: ``encode_click`` bound to this link's fields, encoded once.
    # A partial, not a method: the path every redirect takes saves a frame.
    click_event: Callable[..., bytes]
    _prefix: str  # scheme://host/path?query& (or ?) - the query is appended to it
    _fragment: str

    @classmethod
    def of(cls, info: LinkInfo) -> Link:
        parts = urlsplit(info.destination_url)
        prefix = f"{parts.scheme}://{parts.netloc}{parts.path}?"
        if parts.query:
            prefix += parts.query + "&"
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        link_fields = click_link_fields(
            info.campaign_id, info.link_id, info.creator_id, info.supporter_id, info.business_id
        )
        return cls(info, clickindex.encode(asdict(info)), partial(encode_click, link_fields), prefix, fragment)

    def location(self, raw_query: str, click_id: str) -> str:
        """The destination with the request's query passed through and the click id added."""
        if raw_query:
            return f"{self._prefix}{_passthrough(raw_query)}&{CID_PARAM}={click_id}{self._fragment}"
        return f"{self._prefix}{CID_PARAM}={click_id}{self._fragment}"


def _passthrough(raw_query: str) -> str:
    # A client-supplied oros_cid must not shadow the real one.
    if CID_PARAM in raw_query.lower() or "%" in raw_query:
        raw_query = "&".join(
            part for part in raw_query.split("&") if part and unquote_plus(part.split("=", 1)[0]) != CID_PARAM
        )
    return quote(raw_query, safe=_QUERY_SAFE)


class Resolver:
    def __init__(
        self,
        redis: aioredis.Redis,
        pool: AsyncConnectionPool,
        keys: Keys,
        metrics: Metrics,
        known: KnownCodes,
        budget: MissBudget,
        *,
        ttl_s: float,
        negative_ttl_s: float,
        max_entries: int = 200_000,
    ) -> None:
        self._redis = redis
        self._pool = pool
        self._known = known
        self._budget = budget
        self._keys = keys
        self._metrics = metrics
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._max_entries = max_entries
        self._local: dict[str, tuple[float, Link | None]] = {}
        self._inflight: dict[str, asyncio.Future] = {}
        self._refreshing: set[asyncio.Task] = set()
        # Bumped by every invalidation: a load that started before one must not
        # cache what it read, which may be the very value being invalidated.
        self._generation = 0

    def cached(self, code: str) -> Link | None | Miss:
        """The in-process answer for ``code`` without awaiting, or ``MISS``."""
        entry = self._local.get(code)
        if entry is None:
            return MISS
        self._metrics.link_cache[("local",)] += 1
        expires_at, link = entry
        if expires_at < time.monotonic():
            self._refresh(code, link)
        return link

    async def load(self, code: str) -> Link | None:
        """The link for a code ``cached`` missed, None if there is none. Raises ``LinkUnavailable``.

        Asks Redis, then Postgres; concurrent loads of one code share one query.
        """
        self._metrics.link_cache[("miss",)] += 1
        future = self._inflight.get(code)
        if future is None:
            future = asyncio.ensure_future(self._load(code))
            self._inflight[code] = future
            future.add_done_callback(lambda _: self._inflight.pop(code, None))
        # shield: one caller going away must not cancel the others' query.
        return await asyncio.shield(future)

    def forget(self, code: str) -> None:
        """``code`` was published: drop it, and from now on it may exist (a new link is published as it is made)."""
        self._generation += 1
        self._local.pop(code, None)
        self._known.add(code)

    def forget_all(self) -> None:
        self._generation += 1
        self._local.clear()

    def _refresh(self, code: str, stale: Link | None) -> None:
        # Serve the stale entry meanwhile; push its expiry out so only one refresh starts.
        self._local[code] = (time.monotonic() + STALE_RETRY_S, stale)
        task = asyncio.create_task(self._load(code, stale_ok=True))
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def _load(self, code: str, *, stale_ok: bool = False) -> Link | None:
        generation = self._generation
        try:
            info, known = await self._from_redis(code)
            if not known:
                # A refresh of a cached code is one per code and TTL, never a flood: it skips the checks.
                if not stale_ok and not self._may_ask_postgres(code):
                    self._metrics.link_cache[("filtered",)] += 1
                    return None  # and not remembered: made-up codes must not evict real ones from the cache
                if not self._budget.lookup_starts():
                    raise LinkUnavailable(code)
                try:
                    info = await self._from_postgres(code)
                finally:
                    self._budget.lookup_ends()
                await self._fill_redis(code, info)
        except LinkUnavailable:
            if stale_ok:
                return None  # keep serving the stale entry
            raise
        link = Link.of(info) if info is not None else None
        if generation == self._generation:
            self._remember(code, link)
        return link

    def _may_ask_postgres(self, code: str) -> bool:
        """False for a code to answer 404 without asking."""
        if self._known.might_exist(code):
            return True
        # Unknown to the filter: a few a second are asked anyway, so a link whose publish was
        # lost (Redis down as it was made) resolves before the next load; a flood spends them at once.
        return self._budget.probe()

    async def _from_redis(self, code: str) -> tuple[LinkInfo | None, bool]:
        try:
            raw = await self._redis.get(self._keys.link(code))
        except REDIS_ERRORS as exc:
            log.debug("redis link lookup failed", extra={"code": code, "error": repr(exc)})
            return None, False
        if raw is None:
            return None, False
        self._metrics.link_cache[("redis",)] += 1
        return (None if raw == NEGATIVE else LinkInfo.decode(raw)), True

    async def _from_postgres(self, code: str) -> LinkInfo | None:
        self._metrics.link_cache[("postgres",)] += 1
        try:
            async with self._pool.connection(timeout=2.0) as conn:
                cur = await conn.execute(LINK_SQL, {"code": code})
                row = await cur.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("postgres link lookup failed", extra={"code": code, "error": repr(exc)})
            raise LinkUnavailable(code) from exc
        return LinkInfo(**row) if row else None

    async def _fill_redis(self, code: str, info: LinkInfo | None) -> None:
        try:
            if info is None:
                await self._redis.set(self._keys.link(code), NEGATIVE, ex=self._negative_ttl_s)
            else:
                await self._redis.set(self._keys.link(code), info.encode(), ex=REDIS_TTL_S)
        except REDIS_ERRORS:
            pass  # the next miss asks Postgres again; correctness does not depend on it

    def _remember(self, code: str, link: Link | None) -> None:
        if len(self._local) >= self._max_entries:
            # Bounded memory under a flood of random codes: drop the oldest tenth.
            for stale in list(self._local)[: self._max_entries // 10]:
                del self._local[stale]
        ttl = self._ttl_s if link is not None else self._negative_ttl_s
        self._local[code] = (time.monotonic() + ttl, link)


async def listen_invalidations(
    resolver: Resolver, redis: aioredis.Redis, channel: str, subscribed: asyncio.Event, *, retry_s: float = 1.0
) -> None:
    """Drop cached codes named on ``channel`` (``*`` drops all), reconnecting forever.

    ``subscribed`` is set once listening, so the app can start serving after it.
    """
    while True:
        try:
            async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(channel)
                # Whatever was published while we were not listening is lost.
                resolver.forget_all()
                subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        continue
                    code = message["data"].decode()
                    if code == "*":
                        resolver.forget_all()
                    else:
                        resolver.forget(code)
        except REDIS_ERRORS as exc:
            log.warning("invalidation channel lost, reconnecting", extra={"error": repr(exc)})
            await asyncio.sleep(retry_s)
