"""The formats shared between apps, each owned by one module of oros/: the click index, the stream append."""

from __future__ import annotations

from oros import clickindex
from oros.events import uuid7_str

CLICK = {"link_id": "l", "campaign_id": "c", "creator_id": "cr", "supporter_id": None, "business_id": "b"}


def test_a_click_index_entry_round_trips_and_keeps_only_its_fields():
    value = clickindex.encode({**CLICK, "event_id": "e", "ip": "203.0.113.9"})
    assert clickindex.decode(value) == CLICK
    assert clickindex.decode(clickindex.encode({"campaign_id": "c"})) == dict.fromkeys(clickindex.FIELDS) | {
        "campaign_id": "c"}


def test_a_missing_or_corrupt_click_index_entry_is_no_click():
    assert [clickindex.decode(raw) for raw in (None, b"", b"{not json", b"[1, 2]", b'"x"')] == [None] * 5


async def test_a_click_index_entry_is_found_in_its_bucket(redis, settings):
    click_id = uuid7_str()
    bucket, entry_id, value = clickindex.entry(click_id, clickindex.encode(CLICK))
    await redis.hset(settings.keys.clicks(bucket), entry_id, value)
    assert await clickindex.lookup(redis, settings.keys, click_id) == CLICK
    assert await clickindex.lookup(redis, settings.keys, uuid7_str()) is None
