"""The event model shared by the tracker (producer), ingest and the settler.

An event id is a UUIDv7 generated at the edge: time-ordered (so ClickHouse
and Postgres indexes append), unique without coordination, and the click id
the end user carries in ``oros_cid``. Replays of the same event keep its id,
which is what makes every later stage idempotent.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson

EVENT_TYPES = ("click", "conversion", "sale", "refund")
STREAM_FIELD = b"e"


def _uuid7_int(ms: int | None) -> int:
    if ms is None:
        ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand & ((1 << 80) - 1)
    value = value & ~(0xF << 76) | 0x7 << 76  # version
    return value & ~(0x3 << 62) | 0x2 << 62  # variant


def uuid7(ms: int | None = None) -> uuid.UUID:
    """RFC 9562 version 7: 48-bit unix milliseconds, then 74 random bits."""
    return uuid.UUID(int=_uuid7_int(ms))


def uuid7_str(ms: int | None = None) -> str:
    """``str(uuid7(ms))`` without building a UUID object: the tracker makes one per click."""
    h = "%032x" % _uuid7_int(ms)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_ms(value: uuid.UUID | str) -> int:
    """The millisecond timestamp embedded in a UUIDv7."""
    if isinstance(value, str):
        value = uuid.UUID(value)
    return value.int >> 80


def is_uuid(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class Event:
    """One tracked action, exactly as appended to the stream and stored raw in ClickHouse."""

    event_id: str
    event_type: str
    ts_ms: int
    campaign_id: str
    link_id: str | None = None
    creator_id: str | None = None
    supporter_id: str | None = None
    business_id: str | None = None  # the API key's owner, for conversions and sales
    click_id: str | None = None
    order_id: str | None = None
    value: str | None = None  # decimal string, two places
    currency: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    referrer: str | None = None
    is_bot: bool = False
    bot_reason: str | None = None
    source: str = "redirect"  # redirect | head | pixel | api | stripe
    metadata: dict = field(default_factory=dict)

    def encode(self) -> bytes:
        # orjson serialises the dataclass natively: same bytes as asdict(), 20x faster.
        return orjson.dumps(self)

    @classmethod
    def decode(cls, raw: bytes) -> "Event":
        return cls(**orjson.loads(raw))

    @property
    def occurred_at(self) -> datetime:
        return datetime.fromtimestamp(self.ts_ms / 1000, tz=timezone.utc)
