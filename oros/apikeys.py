"""Business API keys: a 256-bit random secret shown once, stored as its SHA-256.

The tracker verifies a key by hashing it and looking the hash up in Redis
(``apikey:{hash}`` -> owner id, or ``NEGATIVE``), falling back to Postgres and
filling Redis. Revocation overwrites the entry with ``NEGATIVE`` (``revoke``),
and a tracker fills an entry only where there is none (``remember``): a
lookup that read Postgres before the revocation committed cannot put the key
back. A revocation Redis never heard of (it was down) is told again by the
settler's ``api_key_revocations`` job (``replay_revocations``) within
``REPLAY_INTERVAL_S`` of Redis answering again: Postgres's ``revoked_at`` is
the durable record, and a revocation older than an owner's entry can live
(``REPLAY_WINDOW_S``) has nothing left to overwrite.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .connections import pg_connect, redis_client
from .keys import Keys
from .settings import Settings
from .stream import REDIS_ERRORS

log = logging.getLogger(__name__)

KEY_PREFIX = "oros_live_"
NEGATIVE = b"-"  # cached "no such key", so guessing cannot hammer Postgres
CACHE_TTL_S = 300  # a key's owner in Redis: how long a filled entry lives
# How often the settler tells Redis the recent revocations again: the most a revocation Redis missed
# (it was down) goes unseen once Redis is back.
REPLAY_INTERVAL_S = 5
# An owner's entry is filled before the revocation committed (revoked_at is its transaction's start; a
# lookup in flight may write just after) and lives CACHE_TTL_S: the slack covers the transaction, the
# lookup and the clocks of Postgres and Redis.
REPLAY_WINDOW_S = CACHE_TTL_S + 600
# Each Redis call of the replay job (connect, then each reply) gives up after this long.
REDIS_TIMEOUT_S = 1.0


def generate() -> tuple[str, str, str]:
    """Return ``(secret, display_prefix, hash)`` for a new key."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, secret[: len(KEY_PREFIX) + 6], hash_key(secret)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


RECENTLY_REVOKED_SQL = """
SELECT key_hash FROM api_keys WHERE revoked_at > now() - make_interval(secs => %(window_s)s)
"""

OWNER_SQL = """
SELECT k.user_id::text AS user_id
  FROM api_keys k
 WHERE k.key_hash = %(hash)s AND k.revoked_at IS NULL
"""


async def remember(redis, keys: Keys, key_hash: str, owner: bytes, ttl_s: int) -> None:
    """Cache a Postgres answer, unless an entry (a revocation) is already there."""
    await redis.set(keys.api_key(key_hash), owner, ex=ttl_s, nx=True)


async def revoke(redis, keys: Keys, key_hash: str) -> None:
    """Trackers refuse the key from now on: its entry becomes ``NEGATIVE``, outliving any fill in flight."""
    await redis.set(keys.api_key(key_hash), NEGATIVE, ex=CACHE_TTL_S)


def replay_revocations(settings: Settings) -> dict[str, int]:
    """Tell Redis again of every key revoked within ``REPLAY_WINDOW_S`` (the settler's job).

    The admin API tells Redis as it revokes, but Redis may be down then: the
    revocation commits all the same, and a tracker's cached owner would
    outlive it. Telling again is harmless (the entry stays ``NEGATIVE``), so
    nothing records what was told; Redis still down: the next run tries again.
    """
    with pg_connect(settings, autocommit=True) as conn:
        hashes = [r["key_hash"] for r in conn.execute(RECENTLY_REVOKED_SQL, {"window_s": REPLAY_WINDOW_S})]
    if not hashes:
        return {"told": 0}

    async def tell() -> None:
        # Bounded, as the tracker's client is: a Redis that stops answering after connecting would
        # otherwise hang the job for good (one instance at a time: every later run skipped).
        redis = redis_client(settings, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
                             retry=Retry(NoBackoff(), 1))
        try:
            for key_hash in hashes:
                await revoke(redis, settings.keys, key_hash)
        finally:
            await redis.aclose()

    try:
        asyncio.run(tell())
    except REDIS_ERRORS:
        log.warning("api key revocations not told: Redis unavailable", extra={"revocations": len(hashes)})
        return {"deferred": len(hashes)}
    return {"told": len(hashes)}
