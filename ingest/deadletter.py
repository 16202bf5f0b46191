"""The dead letters: stream entries ingest will not insert, each with why, for an operator.

A dead letter is an entry of its stream shard's ``dead_letter`` holding the original
stream id (``id``), the reason class (``class``: invalid, refused, crashed),
ClickHouse's or the check's words (``reason``), the consumer that gave up
(``consumer``) and the entry's event as it was (``e``). Its own stream id
says when. Moving an entry there is one MULTI with its XACK and XDEL, so an
entry is either pending, inserted, or dead-lettered, never two of them.

An operator fixes a dead letter by fixing what refused it (a code or schema
change) and replaying it as it is, or drops it; dead letters are never
edited. One fix is made on replay: ``restamp`` sets the event's ``ts_ms``
to when Redis accepted the entry (the ms of its original stream id), for a
tracker whose clock was wrong, and records the old value in the event's
metadata. A replay checks the event again (``rows.check``) and re-queues it
through the normal stream (``oros.stream.append_durably``), removing the letter
once the event is durable; the event keeps its id, so a replay of something
already inserted collapses downstream.

A sharded stream keeps its dead letters per shard, beside the shard's
stream, so moving or replaying one stays on the shard's cluster slot; the
operator's id of such a letter is ``<shard>:<its stream id>``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import orjson
from redis.asyncio import Redis

from oros import stream
from oros.events import STREAM_FIELD, Event
from oros.keys import Keys, StreamShard
from oros.settings import Settings

from .rows import InvalidEvent, NotWireFormat, check

# The metadata key a restamped event keeps its old time under: {"ts_ms": old, "stream_id": original id}.
RESTAMPED = "restamped"


@dataclass(frozen=True)
class DeadLetter:
    id: str  # the operator's: the stream id in its shard's dead letters, "<shard>:" before it when sharded
    entry_id: str  # in the event stream, when it was given up
    reason_class: str
    reason: str
    consumer: str
    event: bytes | None
    shard: int = 0

    @property
    def letter_id(self) -> str:
        """Its id in the shard's dead-letter stream."""
        return self.id.rpartition(":")[2]

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(int(self.letter_id.split("-")[0]) / 1000, tz=UTC)


def queue(pipe, shard: StreamShard, consumer: str, dead: list[tuple[bytes, dict, str, str]]) -> None:
    """Queue on a MULTI pipeline: each ``(entry_id, fields, reason_class, reason)`` moved to the dead letters."""
    for entry_id, fields, reason_class, reason in dead:
        letter = {b"id": entry_id, b"class": reason_class, b"reason": reason.encode(), b"consumer": consumer}
        if fields.get(STREAM_FIELD) is not None:
            letter[STREAM_FIELD] = fields[STREAM_FIELD]
        pipe.xadd(shard.dead_letter, letter)
    ids = [entry_id for entry_id, *_ in dead]
    pipe.xack(shard.stream, shard.consumer_group, *ids)
    pipe.xdel(shard.stream, *ids)


def _letter(keys: Keys, shard: StreamShard, letter_id: bytes, fields: dict) -> DeadLetter:
    text = {k: v.decode("utf-8", "replace") for k, v in fields.items() if k != STREAM_FIELD}
    own_id = letter_id.decode()
    return DeadLetter(
        id=own_id if keys.stream_shards == 1 else f"{shard.number}:{own_id}", entry_id=text.get(b"id", ""),
        reason_class=text.get(b"class", ""), reason=text.get(b"reason", ""), consumer=text.get(b"consumer", ""),
        event=fields.get(STREAM_FIELD), shard=shard.number,
    )


def _located(keys: Keys, letter_id: str) -> tuple[StreamShard, str] | None:
    """The shard and own id an operator's id names; None when it names none."""
    number, _, own_id = letter_id.rpartition(":")
    if keys.stream_shards == 1:
        return (keys.shard(0), own_id) if not number else None
    if not number.isdigit() or int(number) >= keys.stream_shards:
        return None
    return keys.shard(int(number)), own_id


async def read(redis: Redis, keys: Keys, *, ids: list[str] | None = None, limit: int | None = None) -> list[DeadLetter]:
    """The dead letters named by ``ids`` (those that exist), or the oldest ``limit`` of them."""
    if ids is None:
        letters = [_letter(keys, shard, i, f) for shard in keys.shards
                   for i, f in await redis.xrange(shard.dead_letter, count=limit)]
        letters.sort(key=lambda letter: tuple(int(part) for part in letter.letter_id.split("-")))
        return letters[:limit]
    located = [where for where in (_located(keys, letter_id) for letter_id in ids) if where is not None]
    async with redis.pipeline(transaction=False) as pipe:
        for shard, own_id in located:
            pipe.xrange(shard.dead_letter, own_id, own_id)
        found = await pipe.execute()
    return [_letter(keys, shard, i, f) for (shard, _), entries in zip(located, found, strict=True) for i, f in entries]


async def count(redis: Redis, keys: Keys) -> int:
    return sum([await redis.xlen(shard.dead_letter) for shard in keys.shards])


def why_not_replayable(letter: DeadLetter) -> str | None:
    """None if the event would insert now; else why it stays a dead letter."""
    try:
        check(letter.event)
    except InvalidEvent as exc:
        return str(exc)
    except NotWireFormat as exc:
        return f"not the event wire format ({exc}); drop it"
    return None


def restamp(letter: DeadLetter) -> DeadLetter:
    """The letter with its event stamped at the time Redis accepted it (its original stream id's ms).

    The event's old ``ts_ms`` and that stream id go into its metadata under ``RESTAMPED``, so the
    event says it was moved. An event that is not in the wire format comes back unchanged (it is
    not replayed anyway).
    """
    try:
        stream_ms = int(letter.entry_id.split("-")[0])
        event = Event.decode(letter.event)
        if not isinstance(event.metadata, dict) or not isinstance(event.ts_ms, int):
            return letter
    except (TypeError, ValueError, orjson.JSONDecodeError):
        return letter
    metadata = {**event.metadata, RESTAMPED: {"ts_ms": event.ts_ms, "stream_id": letter.entry_id}}
    return replace(letter, event=replace(event, ts_ms=stream_ms, metadata=metadata).encode())


async def replay(redis: Redis, settings: Settings, letters: list[DeadLetter], *,
                 restamped: bool = False) -> list[DeadLetter]:
    """Re-queue each letter's event to the stream, then remove the letter; return those re-queued.

    Appended as every producer appends (``oros.stream.append_durably``: on the replicas the deployment
    requires), and the letter removed only once it was: a failure raises with the letter kept, and a
    letter re-queued twice (removal lost) is a duplicate event, which ingest collapses by id.
    ``restamped``: each event is re-queued as ``restamp`` makes it (the letter is removed all the same).
    """
    if restamped:
        letters = [restamp(letter) for letter in letters]
    replayable = [letter for letter in letters if why_not_replayable(letter) is None]
    for letter in replayable:
        shard = settings.keys.shard(letter.shard)  # back to its own shard
        await stream.append_durably(redis, settings, [letter.event], shard=shard)
        await redis.xdel(shard.dead_letter, letter.letter_id)
    return replayable


async def drop(redis: Redis, keys: Keys, ids: list[str]) -> int:
    """Delete dead letters for good; return how many existed."""
    dropped = 0
    for shard, own_id in (where for where in (_located(keys, letter_id) for letter_id in ids) if where is not None):
        dropped += await redis.xdel(shard.dead_letter, own_id)
    return dropped
