"""The dead letters: stream entries ingest will not insert, each with why, for an operator.

A dead letter is an entry of ``keys.dead_letter`` holding the original
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
through the normal stream; the event keeps its id, so a replay of something
already inserted collapses downstream.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import orjson
from redis.asyncio import Redis

from oros.events import STREAM_FIELD, Event
from oros.keys import Keys

from .rows import InvalidEvent, NotWireFormat, check

# The metadata key a restamped event keeps its old time under: {"ts_ms": old, "stream_id": original id}.
RESTAMPED = "restamped"


@dataclass(frozen=True)
class DeadLetter:
    id: str  # in the dead-letter stream
    entry_id: str  # in the event stream, when it was given up
    reason_class: str
    reason: str
    consumer: str
    event: bytes | None

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(int(self.id.split("-")[0]) / 1000, tz=UTC)


def queue(pipe, keys: Keys, consumer: str, dead: list[tuple[bytes, dict, str, str]]) -> None:
    """Queue on a MULTI pipeline: each ``(entry_id, fields, reason_class, reason)`` moved to the dead letters."""
    for entry_id, fields, reason_class, reason in dead:
        letter = {b"id": entry_id, b"class": reason_class, b"reason": reason.encode(), b"consumer": consumer}
        if fields.get(STREAM_FIELD) is not None:
            letter[STREAM_FIELD] = fields[STREAM_FIELD]
        pipe.xadd(keys.dead_letter, letter)
    ids = [entry_id for entry_id, *_ in dead]
    pipe.xack(keys.stream, keys.consumer_group, *ids)
    pipe.xdel(keys.stream, *ids)


def _letter(letter_id: bytes, fields: dict) -> DeadLetter:
    text = {k: v.decode("utf-8", "replace") for k, v in fields.items() if k != STREAM_FIELD}
    return DeadLetter(
        id=letter_id.decode(), entry_id=text.get(b"id", ""), reason_class=text.get(b"class", ""),
        reason=text.get(b"reason", ""), consumer=text.get(b"consumer", ""), event=fields.get(STREAM_FIELD),
    )


async def read(redis: Redis, keys: Keys, *, ids: list[str] | None = None, limit: int | None = None) -> list[DeadLetter]:
    """The dead letters named by ``ids`` (those that exist), or the oldest ``limit`` of them."""
    if ids is None:
        return [_letter(i, f) for i, f in await redis.xrange(keys.dead_letter, count=limit)]
    async with redis.pipeline(transaction=False) as pipe:
        for letter_id in ids:
            pipe.xrange(keys.dead_letter, letter_id, letter_id)
        found = await pipe.execute()
    return [_letter(i, f) for entries in found for i, f in entries]


async def count(redis: Redis, keys: Keys) -> int:
    return await redis.xlen(keys.dead_letter)


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


async def replay(redis: Redis, keys: Keys, letters: list[DeadLetter], *, restamped: bool = False) -> list[DeadLetter]:
    """Re-queue each letter's event to the stream and remove the letter, atomically; return those re-queued.

    ``restamped``: each event is re-queued as ``restamp`` makes it (the letter is removed all the same).
    """
    if restamped:
        letters = [restamp(letter) for letter in letters]
    replayable = [letter for letter in letters if why_not_replayable(letter) is None]
    for letter in replayable:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.stream, {STREAM_FIELD: letter.event})
            pipe.xdel(keys.dead_letter, letter.id)
            await pipe.execute()
    return replayable


async def drop(redis: Redis, keys: Keys, ids: list[str]) -> int:
    """Delete dead letters for good; return how many existed."""
    return await redis.xdel(keys.dead_letter, *ids) if ids else 0
