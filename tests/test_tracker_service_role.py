"""The tracker connected as a login that holds only ``oros_tracker``: link lookup, API key check, last_used_at."""

from __future__ import annotations

import uuid

import pytest

from tracker.app import create_app
from tracker.typedefs import KEY_USAGE, KNOWN_CODES

from factories import make_api_key, make_link
from tracker_calls import BROWSER, known_codes_loaded


@pytest.fixture
async def tracker(tracker_settings, tracker_client):
    return await tracker_client(create_app(tracker_settings))


async def test_tracker_resolves_links_and_keys_from_postgres_as_its_own_role(tracker, pg):
    data = make_link(pg)
    key = make_api_key(pg, data["business"])
    # Redis is empty for this test: both lookups fall through to Postgres.
    resp = await tracker.get(f"/{data['code']}", headers={"User-Agent": BROWSER}, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith(data["destination"])
    assert (await tracker.get("/nosuchcode", allow_redirects=False)).status == 404

    resp = await tracker.post("/v1/conversions", json={"click_id": str(uuid.uuid4()), "type": "conversion",
                                                       "order_id": "R-1"}, headers={"Authorization": f"Bearer {key}"})
    assert resp.status == 202, await resp.text()
    await tracker.app[KEY_USAGE].close()  # waits for the background last_used_at write
    row = pg.execute("SELECT last_used_at FROM api_keys WHERE user_id = %s", (data["business"],)).fetchone()
    assert row["last_used_at"] is not None
    resp = await tracker.post("/v1/conversions", json={"click_id": str(uuid.uuid4()), "type": "conversion"},
                              headers={"Authorization": "Bearer oros_live_not-a-key"})
    assert resp.status == 401


async def test_tracker_reads_the_known_codes_and_the_new_ones_as_its_own_role(tracker, pg):
    await known_codes_loaded(tracker.app)  # the load at start
    known = tracker.app[KNOWN_CODES]
    data = make_link(pg)
    assert await known.add_new() >= 1 and known.might_exist(data["code"])
