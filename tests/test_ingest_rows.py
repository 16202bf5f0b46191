"""ingest/rows.py against the real engine: Python's verdict on an entry is ClickHouse's, at every boundary.

Each case is one event in the wire format (``Event.encode()``), inserted
alone through the ingest writer into the migrated events table, and
checked in Python; both must accept it or both refuse it. Entries outside
the wire format must be left to ClickHouse (``NotWireFormat``).
"""

from __future__ import annotations

import dataclasses
import time
from decimal import ROUND_DOWN, Decimal

import orjson
import pytest

from ingest.rows import InvalidEvent, NotWireFormat, check
from ingest.writer import BatchRefused, BatchWriter
from oros.events import DEVICE_TYPES, ENRICHED_LIMITS, EVENT_TYPES, TEXT_LIMITS, TS_MAX_MS, TS_MIN_MS, Event

EID = "0190a000-0000-7000-8000-000000000001"
BASE = Event(event_id=EID, event_type="click", ts_ms=1_700_000_000_000,
             campaign_id="0190a000-0000-7000-8000-0000000000aa")
ZERO = "00000000-0000-0000-0000-000000000000"
BAD_UUIDS = ["", "x", "{" + EID + "}", "urn:uuid:" + EID, EID[:-1], EID + "1", EID[:8] + EID[9:] + "0",
             "0190a00-00000-7000-8000-000000000001", EID[:-1] + "g", " " + EID[1:], "０" + EID[1:],
             EID.replace("-", "", 1)]
GOOD_UUIDS = [EID, EID.upper(), EID.replace("-", ""), EID.replace("-", "").upper()]


def text_cases(name: str) -> list:
    limit = TEXT_LIMITS[name]
    return [({name: "x" * limit}, None), ({name: "é" * limit}, None), ({name: "\U0001F600" * limit}, None),
            ({name: "x" * (limit + 1)}, name), ({name: "é" * (limit + 1)}, name), ({name: "a\0b"}, name),
            ({name: "\u0001\n\t\\\""}, None)]


# (fields replaced in BASE, the field Python refuses or None)
CASES = [
    ({}, None),
    ({"ts_ms": 1_000}, "ts_ms"),  # the bad clock of the issue
    ({"ts_ms": TS_MIN_MS}, "ts_ms"), ({"ts_ms": TS_MIN_MS + 1}, None),
    ({"ts_ms": TS_MAX_MS - 1}, None), ({"ts_ms": TS_MAX_MS}, "ts_ms"),
    ({"ts_ms": 0}, "ts_ms"), ({"ts_ms": -1}, "ts_ms"), ({"ts_ms": -2**63}, "ts_ms"), ({"ts_ms": 2**62}, "ts_ms"),
    ({"ts_ms": 2**63 - 1}, "ts_ms"), ({"ts_ms": 2**63 + BASE.ts_ms}, "ts_ms"), ({"ts_ms": 2**64 - 1}, "ts_ms"),
    *[({"event_type": t}, None) for t in EVENT_TYPES],
    *[({"event_type": t}, "event_type") for t in ("teleport", "", "CLICK", "click ", "click\0")],
    *[({"event_id": u}, None) for u in GOOD_UUIDS],
    *[({"event_id": u}, "event_id") for u in [ZERO, ZERO.replace("-", ""), *BAD_UUIDS]],
    *[({"campaign_id": u}, None) for u in [ZERO, *GOOD_UUIDS]],  # zero: the unknown campaign
    *[({"campaign_id": u}, "campaign_id") for u in BAD_UUIDS],
    *[({f: u}, None) for f in ("link_id", "creator_id", "supporter_id", "business_id", "click_id")
      for u in (None, EID.upper())],
    *[({f: u}, f) for f in ("link_id", "click_id") for u in ("", "x", EID + "1")],
    *[({"value": v}, None) for v in (None, "0", "0.00", "-0", "-0.00", "1.5", "12.50", "1.009", "-0.009",
                                     "9999999999.99", "9999999999.999", "00000000000001.50", "0." + "0" * 99 + "1",
                                     "1." + "9" * 100)],
    *[({"value": v}, "value") for v in ("10000000000", "10000000000.00", "-0.01", "-1", "-9999999999.99",
                                        "-10000000000", "9" * 40)],
    *[({"currency": c}, None) for c in (None, "USD", "EUR")],
    *[({"currency": c}, "currency") for c in ("usd", "US", "USDD", "", "ÉUR", "USD\n", "U\0D")],
    ({"order_id": None}, None), ({"order_id": ""}, None),
    *[case for name in TEXT_LIMITS if name != "metadata" for case in text_cases(name)],
    ({"user_agent": "x" * 5_000_000}, "user_agent"),
    ({"metadata": {}}, None), ({"metadata": {"k": "\0\n\u2028"}}, None), ({"metadata": {"a": {"b": [1, None]}}}, None),
    ({"metadata": {"k": "v" * (TEXT_LIMITS["metadata"] - 8)}}, None),  # {"k":"…"} is exactly the limit
    ({"metadata": {"k": "é" * (TEXT_LIMITS["metadata"] - 8)}}, None),
    ({"metadata": {"k": "v" * (TEXT_LIMITS["metadata"] - 7)}}, "metadata"),
    ({"is_bot": True}, None), ({"source": ""}, None), ({"bot_reason": None, "ip": None, "referrer": None}, None),
]


def python_verdict(raw: bytes) -> str | None:
    try:
        check(raw)
    except InvalidEvent as exc:
        return exc.field
    return None


def clickhouse_verdict(settings, raw: bytes) -> str | None:
    writer = BatchWriter(settings)
    writer.submit(b"1-1", raw)
    try:
        writer.close()
    except BatchRefused as exc:
        assert exc.row_level
        return exc.reason
    return None


def test_python_and_clickhouse_agree_at_every_boundary(settings, ch):
    disagreements = []
    for fields, refused_field in CASES:
        raw = dataclasses.replace(BASE, **fields).encode()
        ch.command("TRUNCATE TABLE events")
        python, clickhouse = python_verdict(raw), clickhouse_verdict(settings, raw)
        if python != refused_field or (python is None) != (clickhouse is None):
            disagreements.append((fields if len(raw) < 500 else list(fields), python, clickhouse))
    assert disagreements == []


def test_accepted_events_are_stored_as_python_reads_them(settings, ch):
    """ClickHouse keeps two places (more are dropped toward zero), canonical ids and ts_ms to the millisecond."""
    for value in ("1.009", "9999999999.999", "-0.009", "00000000000001.50"):
        event = dataclasses.replace(BASE, event_id=EID.upper().replace("-", ""), value=value, ts_ms=TS_MIN_MS + 1)
        ch.command("TRUNCATE TABLE events")
        assert python_verdict(event.encode()) is None and clickhouse_verdict(settings, event.encode()) is None
        stored = ch.query("SELECT toString(event_id), value, toUnixTimestamp64Milli(ts) FROM events").result_rows
        assert stored == [(EID, Decimal(value).quantize(Decimal("0.01"), ROUND_DOWN), TS_MIN_MS + 1)]


WIRE = BASE.encode()
NOT_WIRE_FORMAT = [
    b"{not json", b"[1,2]", b'"abc"', b"null", b"5", b"", b"[" + WIRE + b"]", WIRE + WIRE, WIRE + b" junk",
    WIRE.replace(b'"ts_ms":1700000000000', b'"ts_ms":"1700000000000"'),
    WIRE.replace(b'"ts_ms":1700000000000', b'"ts_ms":1.7e12'),
    WIRE.replace(b'"ts_ms":1700000000000', b'"ts_ms":18446745773709551616'),  # ClickHouse wraps it to a good ts
    WIRE.replace(b'"value":null', b'"value":"1e3"'), WIRE.replace(b'"value":null', b'"value":"1e400"'),
    WIRE.replace(b'"value":null', b'"value":1.5'), WIRE.replace(b'"value":null', b'"value":""'),
    WIRE.replace(b'"value":null', b'"value":"+1.5"'), WIRE.replace(b'"is_bot":false', b'"is_bot":0'),
    WIRE.replace(b'"source":"redirect"', b'"source":null'), WIRE.replace(b'"ip":null', b'"ip":{"a":1}'),
    WIRE.replace(b'"event_type"', b'"Event_Type"'), WIRE.replace(b'"ip":null', b'"ip":null,"zz":1'),
    WIRE.replace(b'"ip":null,', b""), WIRE.replace(b'"ip":null', b'"ip":null,"ip":"1.1.1.1"'),
    WIRE.replace(b',"', b', "'), WIRE.replace(b'"ip":null', b'"ip":"\xe9"'),
    WIRE.replace(b'"ip":null', b'"ip":"\\ud800"'), WIRE.replace(b'"ip":null', b'"ip":"a\x00b"'),
    WIRE.replace(b'"metadata":{}', b'"metadata":{"a":NaN}'), WIRE.replace(b'"metadata":{}', b'"metadata":[1]'),
    WIRE.replace(b'"ip":null', b'"ingested_at":"1999-01-01 00:00:00"'),
]


@pytest.mark.parametrize("raw", NOT_WIRE_FORMAT, ids=range(len(NOT_WIRE_FORMAT)))
def test_what_the_edge_never_writes_is_left_to_clickhouse(raw):
    with pytest.raises(NotWireFormat):
        check(raw)


def test_an_entry_without_an_event_is_invalid():
    with pytest.raises(InvalidEvent):
        check(None)


def test_the_wire_format_is_what_the_edge_writes():
    """Every Event encodes to an entry Python can judge (the tracker's byte template is held equal to it)."""
    event = Event(event_id=EID, event_type="sale", ts_ms=BASE.ts_ms, campaign_id=EID, link_id=EID, order_id="o-1",
                  value="12.50", currency="USD", ip="2001:db8::1", user_agent="Mozilla/5.0", referrer="https://a.example/",
                  is_bot=True, bot_reason="ua", source="api", metadata={"utm_source": "x"})
    assert orjson.loads(event.encode()).keys() == {f.name for f in dataclasses.fields(Event)}
    check(event.encode())


def _random_value(rng, name: str):
    """A value for ``name`` of its wire type, drawn near the limits."""
    def text() -> str:
        return "".join(rng.choice("0123456789abcdefABCDEF-.eE+ xé\0\n\\\"{}\U0001F600")
                       for _ in range(rng.choice([0, 1, 3, 32, 36, 37, 64, 65, 200, 201])))

    if name == "ts_ms":
        return rng.choice([TS_MIN_MS, TS_MIN_MS + 1, TS_MAX_MS - 1, TS_MAX_MS, 0, -1, 2**63 - 1, 2**64 - 1,
                           rng.randrange(-2**63, 2**63)])
    if name == "value":
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 13)))
        return rng.choice([None, digits, f"{digits}.{rng.randint(0, 999)}", f"-0.00{rng.randint(0, 9)}", f"-{digits}"])
    if name == "is_bot":
        return rng.choice([True, False])
    if name == "metadata":
        return rng.choice([{}, {"k": text()}, {"k": "v" * (TEXT_LIMITS["metadata"] - rng.randint(7, 9))}])
    if name in ("event_id", "campaign_id", "source", "event_type"):
        return rng.choice([text(), EID.upper(), EID.replace("-", ""), ZERO, "sale"])
    return rng.choice([None, text(), EID, "x" * rng.choice([64, 65, 200, 201, 4096, 4097])])


def test_random_events_agree(settings, ch):
    """A seeded differential run: wire-format events with one to three fields redrawn."""
    import random

    rng = random.Random(12)
    names = [f.name for f in dataclasses.fields(Event)]
    disagreements = []
    for _ in range(300):
        changed = {n: _random_value(rng, n) for n in rng.sample(names, rng.randint(1, 3))}
        raw = dataclasses.replace(BASE, **changed).encode()
        ch.command("TRUNCATE TABLE events")
        try:
            python = python_verdict(raw)
        except NotWireFormat:
            continue
        if (python is None) != (clickhouse_verdict(settings, raw) is None):
            disagreements.append(raw[:300])
    assert disagreements == []


ENRICHED_BASE = {"country": "US", "device_type": "mobile", "browser": "Mobile Safari", "browser_version": "17.4",
                 "os": "iOS", "os_version": "17.4", "referrer_host": "news.example.com", "ip_hash": "0" * 32}
ENRICHED_TEXT = [name for name in ENRICHED_LIMITS if name not in ("country", "device_type", "ip_hash")]
ENRICHED_CASES = [
    ({}, None),
    *[({"country": c}, None) for c in ("", "DE", "ZZ")],
    *[({"country": c}, "country") for c in ("us", "U", "USA", "U\0", "ÉU")],
    *[({"device_type": d}, None) for d in ("", *DEVICE_TYPES)],
    *[({"device_type": d}, "device_type") for d in ("phone", "Mobile", "mobile ", "bot\0")],
    *[({"ip_hash": h}, None) for h in ("", "0123456789abcdef" * 2)],
    *[({"ip_hash": h}, "ip_hash") for h in ("0" * 31, "0" * 33, "A" * 32, "g" * 32, "0" * 31 + "\0")],
    *[({name: v}, None) for name in ENRICHED_TEXT for v in
      ("", "x" * ENRICHED_LIMITS[name], "é" * ENRICHED_LIMITS[name], "\U0001F600" * ENRICHED_LIMITS[name])],
    *[({name: v}, name) for name in ENRICHED_TEXT for v in
      ("x" * (ENRICHED_LIMITS[name] + 1), "é" * (ENRICHED_LIMITS[name] + 1), "a\0b")],
]


def enriched_line(fields: dict) -> bytes:
    return orjson.dumps({**orjson.loads(BASE.encode()), **ENRICHED_BASE, **fields})


def test_python_and_clickhouse_agree_on_enriched_fields(settings, ch):
    """What ingest adds is checked like what the edge wrote: at every limit both refuse the same."""
    disagreements = []
    for fields, refused_field in ENRICHED_CASES:
        line = enriched_line(fields)
        ch.command("TRUNCATE TABLE events")
        python, clickhouse = python_verdict(line), clickhouse_verdict(settings, line)
        if python != refused_field or (python is None) != (clickhouse is None):
            disagreements.append((fields, python, clickhouse))
    assert disagreements == []


def test_enriched_fields_are_stored(settings, ch):
    """The insert names the enriched columns: none is dropped as an unknown field."""
    # Today's timestamp: BASE's 2023 one is past ip_hash's TTL, which a background merge may apply.
    assert clickhouse_verdict(settings, enriched_line({"ts_ms": int(time.time() * 1000)})) is None
    columns = ", ".join(ENRICHED_BASE)
    assert ch.query(f"SELECT {columns} FROM events").result_rows == [tuple(ENRICHED_BASE.values())]
