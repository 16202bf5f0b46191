"""The click index: click id -> what a later conversion, sale or refund needs to know about its click.

The tracker writes an entry with every click (``tracker/appender.py``, through
``oros.stream``); the tracker's conversions and the Stripe webhooks (admin API)
read it. An entry is the JSON object of ``FIELDS``, in the bucket hash
``Keys.clicks_of(click_id)`` names.
"""

from __future__ import annotations

from typing import Mapping

import orjson
import redis.asyncio as aioredis

from .keys import Keys, click_bucket

FIELDS = ("link_id", "campaign_id", "creator_id", "supporter_id", "business_id")

# One entry as the appender writes it: (bucket, click id, encoded value).
Entry = tuple[int, str, bytes]


def encode(source: Mapping) -> bytes:
    """The entry's value: ``FIELDS`` taken from ``source`` (a link, a click event), absent ones null."""
    return orjson.dumps({name: source.get(name) for name in FIELDS})


def decode(raw: bytes | None) -> dict | None:
    """The entry's fields, or None when there is no entry or it is not one."""
    if not raw:
        return None
    try:
        click = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return click if isinstance(click, dict) else None


def entry(click_id: str, value: bytes) -> Entry:
    return click_bucket(click_id), click_id, value


async def lookup(redis: aioredis.Redis, keys: Keys, click_id: str) -> dict | None:
    """The indexed click ``click_id`` (a canonical UUIDv7), or None when the index does not know it."""
    return decode(await redis.hget(keys.clicks_of(click_id), click_id))
