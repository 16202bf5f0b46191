"""Appending to the event stream: the one way any producer writes it.

One script call XADDs every event (field ``STREAM_FIELD``) to one stream
shard and HSETs the click-index entries into that shard's bucket hashes
(``oros.clickindex``), so an event and its index entry land together, on
one Redis Cluster slot. The tracker packs the call itself (``packed``) and
pipelines it on a connection of its own, spooling a batch Redis refused
(tracker/appender.py); the admin API (Stripe webhooks, live sales and
refunds) and ingest's dead-letter replay call ``append_durably`` and fail
(503, or the letter stays) when Redis or its replicas did not take it.

Durable means on ``replicas`` replicas as well (``OROS_STREAM_REPLICAS``):
each append is followed, on the same connection, by ``WAIT replicas
timeout``, and one that fewer replicas confirmed in time fails with
``NotReplicated``, so its caller spools or retries it. A master that dies
then loses nothing acknowledged: its replica, which the cluster promotes,
had it. A retried append that did reach the stream is a duplicate, which
ingest and the settler collapse by event id. docs/scaling.md, "Redis".
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence

import hiredis
from redis import exceptions as redis_errors
from redis.exceptions import RedisError

from .clickindex import Entry
from .connections import AnyRedis, connection_to
from .events import STREAM_FIELD
from .keys import Keys, StreamShard
from .settings import Settings

APPEND_LUA = f"""
-- KEYS[1] stream, KEYS[2..] click-index bucket hashes
-- ARGV[1] index ttl (s), ARGV[2] event count n, ARGV[3..n+2] events, then per bucket
-- (KEYS order) its entry count m and m click id / index value pairs
local n = tonumber(ARGV[2])
for i = 3, n + 2 do
  redis.call('XADD', KEYS[1], '*', '{STREAM_FIELD.decode()}', ARGV[i])
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
"""

APPEND_SHA = hashlib.sha1(APPEND_LUA.encode()).hexdigest()


class NotReplicated(RedisError):
    """Fewer replicas than required confirmed an append in time: a failover could lose it."""


# What "Redis is unavailable" looks like to redis-py, for every producer; anything else is a bug.
# (A cluster with no node for a slot, mid-failover, raises RedisClusterException, which is no RedisError.)
REDIS_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.ResponseError,
                redis_errors.RedisClusterException, NotReplicated, OSError)


def script_call(
    shard: StreamShard, index_ttl_s: int, events: Sequence[bytes], index: Sequence[Entry]
) -> tuple[list, list]:
    """The script's (KEYS, ARGV) that append ``events`` to ``shard`` and set the ``index`` entries there."""
    script_keys = [shard.stream]
    args: list = [index_ttl_s, len(events), *events]
    for bucket, ids, values in _by_bucket(index):
        pairs = [None] * (2 * len(ids))
        pairs[::2], pairs[1::2] = ids, values
        script_keys.append(shard.clicks(bucket))
        args.append(len(ids))
        args += pairs
    return script_keys, args


def packed(shard: StreamShard, index_ttl_s: int, events: Sequence[bytes], index: Sequence[Entry]) -> bytes:
    """The append as one ``EVALSHA`` command on the wire (the script must be loaded)."""
    script_keys, args = script_call(shard, index_ttl_s, events, index)
    # hiredis packs the command in C; redis-py's Python packer re-joins a
    # growing buffer per argument and cost more than the rest of a flush.
    return hiredis.pack_command(("EVALSHA", APPEND_SHA, len(script_keys), *script_keys, *args))


def packed_wait(replicas: int, wait_ms: int) -> bytes:
    """The ``WAIT`` that follows an append on its connection when replicas must confirm it."""
    return hiredis.pack_command(("WAIT", replicas, wait_ms))


def check_replicated(reply: object, replicas: int) -> None:
    """Raise ``NotReplicated`` unless ``reply`` (WAIT's) counts at least ``replicas``."""
    if not isinstance(reply, int) or reply < replicas:
        raise NotReplicated(f"{reply} of the {replicas} replicas required confirmed the append in time")


def shard_for(keys: Keys, events: Sequence[bytes]) -> StreamShard:
    """Where a producer without a shard of its own appends: spread by content, the same for a retry."""
    return keys.shard(zlib.crc32(events[0]) % keys.stream_shards)


async def append(
    redis: AnyRedis, keys: Keys, events: Sequence[bytes], index: Sequence[Entry] = (), *,
    index_ttl_s: int = 0, replicas: int = 0, wait_ms: int = 500, shard: StreamShard | None = None,
) -> None:
    """Append through a redis-py client, durably on ``replicas`` replicas; raises its errors.

    :param shard: where to append (a dead letter goes back to its own shard); by content otherwise.
    """
    shard = shard or shard_for(keys, events)
    script_keys, args = script_call(shard, index_ttl_s, events, index)
    commands = [("EVAL", APPEND_LUA, len(script_keys), *script_keys, *args)]
    if replicas:
        commands.append(("WAIT", replicas, wait_ms))
    async with connection_to(redis, shard.stream) as conn:
        await conn.send_packed_command(conn.pack_commands(commands))
        replies = [await conn.read_response() for _ in commands]
    if replicas:
        check_replicated(replies[-1], replicas)


async def append_durably(redis: AnyRedis, settings: Settings, events: Sequence[bytes], *,
                         shard: StreamShard | None = None) -> None:
    """``append`` as the deployment requires it durable (``OROS_STREAM_REPLICAS``, ``OROS_STREAM_WAIT_MS``):
    how every producer but the tracker's appender (which packs its own calls) appends."""
    await append(redis, settings.keys, events, replicas=settings.stream_replicas, wait_ms=settings.stream_wait_ms,
                 shard=shard)


def _by_bucket(index: Sequence[Entry]) -> list[tuple[int, Sequence[str], Sequence[bytes]]]:
    """The entries grouped by bucket: (bucket, click ids, values); a batch rarely spans two."""
    if not index:
        return []
    buckets, ids, values = zip(*index, strict=True)
    if min(buckets) == max(buckets):
        return [(buckets[0], ids, values)]
    groups: dict[int, tuple[list[str], list[bytes]]] = {}
    for bucket, click_id, value in index:
        group = groups.setdefault(bucket, ([], []))
        group[0].append(click_id)
        group[1].append(value)
    return [(bucket, group_ids, group_values) for bucket, (group_ids, group_values) in groups.items()]
