"""The event model shared by the tracker (producer), ingest and the settler.

An event id is a UUIDv7 generated at the edge: time-ordered (so ClickHouse
and Postgres indexes append), unique without coordination, and the click id
the end user carries in ``oros_cid``. Replays of the same event keep its id,
which is what makes every later stage idempotent.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

EVENT_TYPES = ("click", "conversion", "sale", "refund")
STREAM_FIELD = b"e"

# What the ClickHouse events table holds. sql/clickhouse/0001 and 0002 enforce the same limits,
# ingest/rows.py checks them in Python, and tests/test_ingest_rows.py inserts every boundary
# into the real engine both ways. Times are exclusive bounds in unix milliseconds.
TS_MIN_MS = 946_684_800_000  # 2000-01-01: a tracker with a bad clock (1970) is refused
TS_MAX_MS = 4_102_444_800_000  # 2100-01-01
CURRENCY_PATTERN = "[A-Z]{3}"  # fits Postgres events.currency VARCHAR(3)
# The most characters each text field may hold (order_id: Postgres events.order_id VARCHAR(200));
# text is valid UTF-8 without NUL, which Postgres refuses when the settler copies an event.
TEXT_LIMITS = {
    "order_id": 200, "ip": 64, "user_agent": 4096, "referrer": 4096,
    "bot_reason": 64, "source": 64, "metadata": 16384,
}
# An order id as every producer accepts it (the tracker's conversions and pixel, the live sales API): printable
# ASCII, the first character not a space, within the column. Narrower than what ingest stores (any text
# without NUL): an order id is matched byte for byte (a repeat, a refund, the pixel's signature), so an
# invisible or look-alike character would make two ids of one order.
ORDER_ID_RE = re.compile(rf"^[\x21-\x7e][\x20-\x7e]{{0,{TEXT_LIMITS['order_id'] - 1}}}$")
ORDER_ID_RULE = f"1-{TEXT_LIMITS['order_id']} printable ASCII characters, the first not a space"
# A currency as a producer accepts it: three letters in any case, recorded upper-cased (CURRENCY_PATTERN).
CURRENCY_INPUT_RE = re.compile(r"^[A-Za-z]{3}$")
DEVICE_TYPES = ("desktop", "mobile", "tablet", "bot", "other")  # or empty: no user agent
# What ingest adds to each event before ClickHouse (ingest/enrich.py, sql/clickhouse/0003), by field:
# the most characters each may hold. Country is ISO 3166-1 alpha-2 or empty (unknown), the IP hash
# 32 hex digits (a keyed 128-bit BLAKE2b of the full address) or empty (no address).
ENRICHED_LIMITS = {
    "country": 2, "device_type": 16, "browser": 64, "browser_version": 32, "os": 64, "os_version": 32,
    "referrer_host": 255, "ip_hash": 32,
}


class _RandomTails:
    """The random last 21 characters of ids, made 256 at a time from one os.urandom call.

    A batch keeps both the syscall and the formatting off the per-id path.
    The pool is dropped in a forked child, which must not hand out its parent's ids.
    """

    BATCH = 256

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.pool: list[str] = []

    def refill(self) -> list[str]:
        # 20 hex digits per id, 19 used: 3, one whose two low bits go into the variant, 3, 12 (74 bits).
        h = os.urandom(10 * self.BATCH).hex()
        self.pool = [
            f"{h[i:i + 3]}-{_VARIANT[h[i + 3]]}{h[i + 4:i + 7]}-{h[i + 7:i + 19]}" for i in range(0, len(h), 20)
        ]
        return self.pool


class _TimePrefix:
    """The first 15 characters of ids (48-bit milliseconds, version digit), made once per millisecond."""

    ms = -1
    text = ""

    def at(self, ms: int) -> str:
        h = ms.to_bytes(6, "big").hex()
        self.ms, self.text = ms, f"{h[:8]}-{h[8:12]}-7"
        return self.text


# The variant digit: 10xx in binary, keeping the two random bits of the hex digit it replaces.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
_tails = _RandomTails()
_prefix = _TimePrefix()


def uuid7_str(ms: int | None = None) -> str:
    """RFC 9562 version 7 as a string: 48-bit unix milliseconds, then 74 random bits.

    Built from prepared strings, without a UUID object or big-int
    arithmetic: the tracker makes one per click.
    """
    if ms is None:
        ms = time.time_ns() // 1_000_000
    prefix = _prefix.text if ms == _prefix.ms else _prefix.at(ms)
    try:
        tail = _tails.pool.pop()  # atomic: two threads never get one tail
    except IndexError:
        tail = _tails.refill().pop()
    return prefix + tail


def uuid7(ms: int | None = None) -> uuid.UUID:
    return uuid.UUID(uuid7_str(ms))


def uuid7_ms(value: uuid.UUID | str) -> int:
    """The millisecond timestamp embedded in a UUIDv7."""
    if isinstance(value, str):
        value = uuid.UUID(value)
    return value.int >> 80


# The one spelling of an id we accept: 8-4-4-4-12 hex digits. uuid.UUID also parses
# "{...}", "urn:uuid:...", no hyphens and hyphens anywhere; those are refused, so
# one id has one spelling in Redis keys, the stream and Postgres.
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def canonical_uuid(value: object) -> str | None:
    """``value`` as a canonical lower-case UUID string, or None when it is not one (any type)."""
    if isinstance(value, str) and _UUID_RE.fullmatch(value):
        return value.lower()
    return None


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
    source: str = "redirect"  # redirect | qr (a scanned QR code) | head | pixel | api | stripe
    metadata: dict = field(default_factory=dict)  # pixels: {"sig": …} when signed

    def encode(self) -> bytes:
        # orjson serialises the dataclass natively: same bytes as asdict(), 20x faster.
        return orjson.dumps(self)

    @classmethod
    def decode(cls, raw: bytes) -> Event:
        return cls(**orjson.loads(raw))

    @property
    def occurred_at(self) -> datetime:
        return datetime.fromtimestamp(self.ts_ms / 1000, tz=UTC)


# -- a click's encoding without an Event: the tracker's redirect path ---------------------
# ``encode_click`` writes ``Event.encode()``'s bytes for a click from a template: the link's
# fields encoded once per link (``click_link_fields``), only the request's strings encoded per
# click; half the cost of encoding a dataclass, on the path every redirect takes.
# tests/test_shared.py holds the two encodings byte-for-byte equal.

# Event's field order; event_id is a UUID string and ts_ms an int, the rest arrive JSON-encoded.
_CLICK_EVENT = (
    b'{"event_id":"%s","event_type":"click","ts_ms":%d,%s,"ip":%s,"user_agent":%s,"referrer":%s,%s,"metadata":%s}'
)
_CLICK_FLAGS: dict[tuple[str | None, str], bytes] = {}
_dumps = orjson.dumps


def click_link_fields(
    campaign_id: str, link_id: str, creator_id: str | None, supporter_id: str | None, business_id: str | None
) -> bytes:
    """The fields of a click event that come from its link (and the ones a click leaves empty), encoded."""
    return _dumps({
        "campaign_id": campaign_id, "link_id": link_id, "creator_id": creator_id,
        "supporter_id": supporter_id, "business_id": business_id,
        "click_id": None, "order_id": None, "value": None, "currency": None,
    })[1:-1]


def encode_click(
    link_fields: bytes, click_id: str, ts_ms: int, ip: str | None, user_agent: str | None, referrer: str | None,
    reason: str | None, source: str, metadata: dict,
) -> bytes:
    """``Event(event_id=click_id, event_type="click", …).encode()``; ``reason`` is the bot reason, if any."""
    return _CLICK_EVENT % (
        click_id.encode(), ts_ms, link_fields, _dumps(ip), _dumps(user_agent), _dumps(referrer),
        _CLICK_FLAGS.get((reason, source)) or _click_flags(reason, source),
        _dumps(metadata) if metadata else b"{}",
    )


def _click_flags(reason: str | None, source: str) -> bytes:
    """The encoded is_bot, bot_reason and source fields; a handful of combinations, each encoded once."""
    flags = _dumps({"is_bot": reason is not None, "bot_reason": reason, "source": source})[1:-1]
    _CLICK_FLAGS[(reason, source)] = flags
    return flags
