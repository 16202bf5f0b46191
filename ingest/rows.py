"""One stream entry checked against what the ClickHouse events table accepts.

The table's constraints (sql/clickhouse/0001, 0002, 0003) and these checks hold
the same limits (``oros.events``), so for an entry in the wire format the edge
writes (``Event.encode()``'s bytes), alone or as ingest enriched it
(``ingest.enrich``: the same plus ``ENRICHED_LIMITS``' fields), the verdict
here is ClickHouse's verdict:
``InvalidEvent`` means ClickHouse refuses it too. ClickHouse's JSON reader
also takes looser input (quoted numbers, exponents, duplicate or differently
cased keys, invalid UTF-8 in unknown fields), which Python cannot predict
exactly; such an entry raises ``NotWireFormat`` and ingest lets ClickHouse
decide. tests/test_ingest_rows.py proves both at every boundary.
"""

from __future__ import annotations

import re
import typing
from decimal import ROUND_DOWN, Decimal
from types import UnionType

import orjson

from oros.events import (
    CURRENCY_PATTERN,
    DEVICE_TYPES,
    ENRICHED_LIMITS,
    EVENT_TYPES,
    STREAM_FIELD,
    TEXT_LIMITS,
    TS_MAX_MS,
    TS_MIN_MS,
    Event,
)
from oros.money import CENT, MAX_AMOUNT


class InvalidEvent(ValueError):
    """An entry ClickHouse refuses as well: it goes to the dead letters."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotWireFormat(ValueError):
    """An entry the edge never writes; ClickHouse, not Python, decides whether it inserts."""


def _json_types(annotation) -> tuple[type, ...]:
    members = typing.get_args(annotation) if isinstance(annotation, UnionType) else (annotation,)
    return tuple(type(None) if m is type(None) else typing.get_origin(m) or m for m in members)


# The JSON type of every wire field, read from the Event model (one owner for the field list).
WIRE_TYPES = {name: _json_types(hint) for name, hint in typing.get_type_hints(Event).items()}
ENRICHED_TYPES = {**WIRE_TYPES, **{name: (str,) for name in ENRICHED_LIMITS}}
UUID_FIELDS = ("event_id", "campaign_id", "link_id", "creator_id", "supporter_id", "business_id", "click_id")
# The two spellings ClickHouse parses as a UUID (any case); it refuses every other string.
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}"
).fullmatch
# Plain decimal notation; ClickHouse reads more digits than the scale and drops them (toward zero).
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?").fullmatch
_CURRENCY = re.compile(CURRENCY_PATTERN).fullmatch
# The enriched fields with a shape of their own (the rest are text within ENRICHED_LIMITS).
_ENRICHED_SHAPES = {
    "country": (re.compile("(?:[A-Z]{2})?").fullmatch, "an ISO 3166-1 alpha-2 code or empty"),
    "device_type": (frozenset(("", *DEVICE_TYPES)).__contains__, f"one of {', '.join(DEVICE_TYPES)} or empty"),
    "ip_hash": (re.compile("(?:[0-9a-f]{32})?").fullmatch, "32 lower-case hex digits or empty"),
}
_TOO_BIG = MAX_AMOUNT + CENT


def check(raw: bytes | None) -> None:
    """Raise ``InvalidEvent`` or ``NotWireFormat`` unless ``raw`` inserts into the events table."""
    if raw is None:
        raise InvalidEvent("e", f"the stream entry has no {STREAM_FIELD.decode()!r} field")
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NotWireFormat(f"not UTF-8 JSON: {exc}") from None
    if not isinstance(event, dict):
        raise NotWireFormat(f"a JSON {type(event).__name__}, not an object")
    types = ENRICHED_TYPES if len(event) == len(ENRICHED_TYPES) else WIRE_TYPES
    if set(event) != types.keys():
        odd = sorted(set(event) ^ types.keys())
        raise NotWireFormat(f"fields differ from the event model: {', '.join(odd)[:200]}")
    for name, value in event.items():
        if not isinstance(value, types[name]) or (isinstance(value, bool) and bool not in types[name]):
            raise NotWireFormat(f"{name}: a JSON {type(value).__name__}")
    if orjson.dumps(event) != raw:
        # Only then is metadata's stored text (ClickHouse keeps the object as written) what we measure.
        raise NotWireFormat("not compact JSON as the edge writes it")
    _check_fields(event)
    if types is ENRICHED_TYPES:
        _check_enriched(event)


def _check_fields(event: dict) -> None:
    for name in UUID_FIELDS:
        value = event[name]
        if value is not None and not _UUID(value):
            raise InvalidEvent(name, f"not a UUID: {value[:60]!r}")
    if int(event["event_id"].replace("-", ""), 16) == 0:
        raise InvalidEvent("event_id", "the zero UUID is no event id")
    if event["event_type"] not in EVENT_TYPES:
        raise InvalidEvent("event_type", f"not one of {', '.join(EVENT_TYPES)}: {event['event_type'][:60]!r}")
    if not TS_MIN_MS < event["ts_ms"] < TS_MAX_MS:
        raise InvalidEvent("ts_ms", f"{event['ts_ms']} is outside {TS_MIN_MS}-{TS_MAX_MS} (2000-2100)")
    if event["value"] is not None:
        _check_value(event["value"])
    currency = event["currency"]
    if currency is not None and not _CURRENCY(currency):
        raise InvalidEvent("currency", f"not a three-letter upper-case code: {currency[:60]!r}")
    for name, limit in TEXT_LIMITS.items():
        value = event[name]
        text = orjson.dumps(value).decode() if isinstance(value, dict) else value or ""
        if "\0" in text:
            raise InvalidEvent(name, "holds a NUL character")
        if len(text) > limit:
            raise InvalidEvent(name, f"{len(text)} characters, more than {limit}")


def _check_enriched(event: dict) -> None:
    for name, limit in ENRICHED_LIMITS.items():
        value = event[name]
        if name in _ENRICHED_SHAPES:
            fits, shape = _ENRICHED_SHAPES[name]
            if not fits(value):
                raise InvalidEvent(name, f"not {shape}: {value[:60]!r}")
        elif "\0" in value:
            raise InvalidEvent(name, "holds a NUL character")
        elif len(value) > limit:
            raise InvalidEvent(name, f"{len(value)} characters, more than {limit}")


def _check_value(raw: str) -> None:
    if not _DECIMAL(raw):
        raise NotWireFormat(f"value: not plain decimal notation: {raw[:60]!r}")
    value = Decimal(raw)
    if abs(value) >= _TOO_BIG:
        raise InvalidEvent("value", f"{raw[:60]} does not fit Decimal(12, 2)")
    if value.quantize(CENT, ROUND_DOWN) < 0:
        raise InvalidEvent("value", f"{raw[:60]} is negative")
