"""The formats shared between apps, each owned by one module of oros/: the click index, the stream append,
the Idempotency-Key grammar."""

from __future__ import annotations

import uuid

import hiredis
import pytest

from admin_api.idempotency import derived_id
from oros import clickindex, idempotency, stream
from oros.events import Event, uuid7_ms, uuid7_str
from oros.keys import CLICK_BUCKET_MS, Keys
from oros.reasons import UNKNOWN_CAMPAIGN

CLICK = {"link_id": "l", "campaign_id": "c", "creator_id": "cr", "supporter_id": None, "business_id": "b"}


def test_a_click_index_entry_round_trips_and_keeps_only_its_fields():
    value = clickindex.encode({**CLICK, "event_id": "e", "ip": "203.0.113.9"})
    assert clickindex.decode(value) == CLICK
    assert clickindex.decode(clickindex.encode({"campaign_id": "c"})) == dict.fromkeys(clickindex.FIELDS) | {
        "campaign_id": "c"}


def test_a_missing_or_corrupt_click_index_entry_is_no_click():
    assert [clickindex.decode(raw) for raw in (None, b"", b"{not json", b"[1, 2]", b'"x"')] == [None] * 5


def test_an_event_takes_its_clicks_attribution_from_the_click_index_module():
    """One owner for click -> event attribution (the tracker's conversions and the Stripe webhooks wrote it
    field by field, each its own way)."""
    assert clickindex.attribution(CLICK) == CLICK
    no_campaign = {**CLICK, "campaign_id": None}
    assert clickindex.attribution({**no_campaign, "ip": "x"}) == {**CLICK, "campaign_id": UNKNOWN_CAMPAIGN}
    assert clickindex.attribution(None) == dict.fromkeys(clickindex.FIELDS) | {"campaign_id": UNKNOWN_CAMPAIGN}


def test_a_money_requests_id_is_derived_from_its_caller_and_key_in_one_place():
    """Boosts, tips, fundings and memberships each derived it with their own copy of one line."""
    kind = uuid.UUID("0b5e3c1a-8f0d-4c7e-9d2b-61a4f3e7c2d8")
    assert derived_id(kind, "u", "k") == str(uuid.uuid5(kind, "u:k")) == derived_id(kind, "u", "k")
    assert derived_id(kind, "u", "k") not in (derived_id(kind, "v", "k"), derived_id(uuid.uuid4(), "u", "k"))
    assert derived_id(kind, "u", None) != derived_id(kind, "u", None)  # no key: a new id each time


async def test_a_click_index_entry_is_found_in_its_bucket(redis, settings):
    click_id = uuid7_str()
    bucket, entry_id, value = clickindex.entry(click_id, clickindex.encode(CLICK))
    await redis.hset(settings.keys.clicks(bucket), entry_id, value)
    assert await clickindex.lookup(redis, settings.keys, click_id) == CLICK
    assert await clickindex.lookup(redis, settings.keys, uuid7_str()) is None


async def test_append_writes_events_and_their_index_entries_together(redis, settings):
    """The one append (webhooks use it as is; the tracker sends its ``packed`` form): events in order, entries set."""
    clicks = [uuid7_str(ms) for ms in (1_700_000_000_000, 1_700_000_000_000 + CLICK_BUCKET_MS)]
    events = [Event(event_id=cid, event_type="click", ts_ms=uuid7_ms(cid), campaign_id="c").encode() for cid in clicks]
    index = [clickindex.entry(cid, clickindex.encode(CLICK)) for cid in clicks]
    await stream.append(redis, settings.keys, events, index, index_ttl_s=60)
    assert [entry[b"e"] for _, entry in await redis.xrange(settings.keys.stream)] == events
    for cid in clicks:
        assert await clickindex.lookup(redis, settings.keys, cid) == CLICK
        assert 0 < await redis.ttl(settings.keys.clicks_of(cid)) <= 60
    await stream.append(redis, settings.keys, events[:1])  # no index entries: the stream only
    assert await redis.xlen(settings.keys.stream) == 3


def test_the_packed_append_is_the_scripts_call():
    keys = Keys("t:")
    cid = uuid7_str()
    command = stream.packed(keys.shard(0), 60, [b"{}"], [clickindex.entry(cid, b"v")])
    assert command == hiredis.pack_command(
        ("EVALSHA", stream.APPEND_SHA, 2, "t:events", keys.clicks_of(cid), 60, 1, b"{}", 1, cid, b"v"))


@pytest.mark.parametrize("key, ok", [
    ("a", True), ("retry-1", True), ("order_42:try.2", True), ("0190c8e4-7b2a-7c3d-9e4f-0a1b2c3d4e5f", True),
    ("x" * 100, True),
    ("", False), ("x" * 101, False), ("bad key!", False), ("a/b", False), ("abc\n", False), ("caf\u00e9", False),
])
def test_one_idempotency_key_grammar(key, ok):
    assert idempotency.valid(key) is ok
