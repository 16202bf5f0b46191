"""Business API keys: a 256-bit random secret shown once, stored as its SHA-256.

The tracker verifies a key by hashing it and looking the hash up in Redis
(``apikey:{hash}`` -> owner id), falling back to Postgres and filling Redis.
A revoked key's Redis entry is deleted by the admin API on revocation.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "oros_live_"
NEGATIVE = b"-"  # cached "no such key", so guessing cannot hammer Postgres


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
