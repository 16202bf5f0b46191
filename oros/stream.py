"""Appending to the event stream: the one way any producer writes it.

One script call XADDs every event (field ``STREAM_FIELD``) and HSETs the
click-index entries into their bucket hashes (``oros.clickindex``), so an
event and its index entry land together. The tracker packs the call itself
(``packed``) and pipelines it on a connection of its own, spooling a batch
Redis refused (tracker/appender.py); the admin API's Stripe webhooks call
``append`` and answer 503 on failure, for Stripe to retry.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import hiredis
import redis.asyncio as aioredis

from .clickindex import Entry
from .events import STREAM_FIELD
from .keys import Keys

APPEND_LUA = """
-- KEYS[1] stream, KEYS[2..] click-index bucket hashes
-- ARGV[1] index ttl (s), ARGV[2] event count n, ARGV[3..n+2] events, then per bucket
-- (KEYS order) its entry count m and m click id / index value pairs
local n = tonumber(ARGV[2])
for i = 3, n + 2 do
  redis.call('XADD', KEYS[1], '*', '%s', ARGV[i])
end
local at = n + 3
for k = 2, #KEYS do
  local last = at + 2 * tonumber(ARGV[at])
  local from = at + 1
  while from <= last do  -- unpack() is limited to a few thousand values
    local to = math.min(from + 1999, last)
    redis.call('HSET', KEYS[k], unpack(ARGV, from, to))
    from = to + 1
  end
  redis.call('EXPIRE', KEYS[k], ARGV[1])
  at = last + 1
end
return n
""" % STREAM_FIELD.decode()

APPEND_SHA = hashlib.sha1(APPEND_LUA.encode()).hexdigest()


def script_call(keys: Keys, index_ttl_s: int, events: Sequence[bytes], index: Sequence[Entry]) -> tuple[list, list]:
    """The script's (KEYS, ARGV) that append ``events`` and set the ``index`` entries."""
    script_keys = [keys.stream]
    args: list = [index_ttl_s, len(events), *events]
    for bucket, ids, values in _by_bucket(index):
        pairs = [None] * (2 * len(ids))
        pairs[::2], pairs[1::2] = ids, values
        script_keys.append(keys.clicks(bucket))
        args.append(len(ids))
        args += pairs
    return script_keys, args


def packed(keys: Keys, index_ttl_s: int, events: Sequence[bytes], index: Sequence[Entry]) -> bytes:
    """The append as one ``EVALSHA`` command on the wire (the script must be loaded)."""
    script_keys, args = script_call(keys, index_ttl_s, events, index)
    # hiredis packs the command in C; redis-py's Python packer re-joins a
    # growing buffer per argument and cost more than the rest of a flush.
    return hiredis.pack_command(("EVALSHA", APPEND_SHA, len(script_keys), *script_keys, *args))


async def append(
    redis: aioredis.Redis, keys: Keys, events: Sequence[bytes], index: Sequence[Entry] = (), *, index_ttl_s: int = 0
) -> None:
    """Append through a redis-py client (loading the script if Redis lacks it); raises its errors."""
    script_keys, args = script_call(keys, index_ttl_s, events, index)
    await redis.register_script(APPEND_LUA)(keys=script_keys, args=args)


def _by_bucket(index: Sequence[Entry]) -> list[tuple[int, Sequence[str], Sequence[bytes]]]:
    """The entries grouped by bucket: (bucket, click ids, values); a batch rarely spans two."""
    if not index:
        return []
    buckets, ids, values = zip(*index)
    if min(buckets) == max(buckets):
        return [(buckets[0], ids, values)]
    groups: dict[int, tuple[list[str], list[bytes]]] = {}
    for bucket, click_id, value in index:
        group = groups.setdefault(bucket, ([], []))
        group[0].append(click_id)
        group[1].append(value)
    return [(bucket, group_ids, group_values) for bucket, (group_ids, group_values) in groups.items()]
