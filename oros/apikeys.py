"""Business API keys: a 256-bit random secret shown once, stored as its SHA-256.

The tracker verifies a key by hashing it and looking the hash up in Redis
(``apikey:{hash}`` -> owner id, or ``NEGATIVE``), falling back to Postgres and
filling Redis. Revocation overwrites the entry with ``NEGATIVE`` (``revoke``),
and a tracker fills an entry only where there is none (``remember``): a
lookup that read Postgres before the revocation committed cannot put the key
back. A revocation Redis never heard of (it was down) is seen once the
owner's entry expires, ``CACHE_TTL_S`` at most.
"""

from __future__ import annotations

import hashlib
import secrets

from .keys import Keys

KEY_PREFIX = "oros_live_"
NEGATIVE = b"-"  # cached "no such key", so guessing cannot hammer Postgres
CACHE_TTL_S = 300  # a key's owner in Redis: how long a revocation Redis missed can go unseen


def generate() -> tuple[str, str, str]:
    """Return ``(secret, display_prefix, hash)`` for a new key."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, secret[: len(KEY_PREFIX) + 6], hash_key(secret)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


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
