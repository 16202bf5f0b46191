"""The click index: click id -> what a later conversion, sale or refund needs to know about its click.

The tracker writes an entry with every click (``tracker/appender.py``, through
``oros.stream``); the tracker's conversions and the Stripe webhooks (admin API)
read it. An entry is the JSON object of ``FIELDS``, in the bucket hash
``StreamShard.clicks_of(click_id)`` of the stream shard its click was
appended to. A lookup asks every shard at once (one pipeline; on a Redis
Cluster one round trip per node, in parallel): a click's shard is its
tracker worker's, which its id does not say, and a spooled click is
replayed by whichever worker finds it. Conversions are few next to
clicks, so N reads per conversion buy a click path with no routing at all.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from .connections import AnyRedis
from .keys import Keys, click_bucket
from .reasons import UNKNOWN_CAMPAIGN

FIELDS = ("link_id", "campaign_id", "creator_id", "supporter_id", "business_id")

# One entry as the appender writes it: (bucket, click id, encoded value).
Entry = tuple[int, str, bytes]


def encode(source: Mapping) -> bytes:
    """The entry's value: ``FIELDS`` taken from ``source`` (a link, a click event), absent ones null."""
    return orjson.dumps({name: source.get(name) for name in FIELDS})


def attribution(click: Mapping | None) -> dict:
    """The fields an event a click led to (a conversion, a sale, a refund) takes from the click's entry: ``FIELDS``,
    and the unknown campaign when there is no entry (no such click, or expired), for the settler to reject."""
    fields = {name: (click or {}).get(name) for name in FIELDS}
    fields["campaign_id"] = fields["campaign_id"] or UNKNOWN_CAMPAIGN
    return fields


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


async def lookup(redis: AnyRedis, keys: Keys, click_id: str) -> dict | None:
    """The indexed click ``click_id`` (a canonical UUIDv7), or None when the index does not know it."""
    if keys.stream_shards == 1:
        return decode(await redis.hget(keys.clicks_of(click_id), click_id))
    async with redis.pipeline(transaction=False) as pipe:
        for shard in keys.shards:
            pipe.hget(shard.clicks_of(click_id), click_id)
        found = await pipe.execute()
    # A click replayed from a spool may be in two shards, with the same entry.
    return next((click for click in map(decode, found) if click is not None), None)
