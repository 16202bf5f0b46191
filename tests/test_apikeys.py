"""Revoking a business API key stops the tracker at once, even against a lookup in flight.

The admin API revokes (Postgres, then the tracker's Redis entry); the tracker
is a second in-process app on the same databases.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
import uuid
from dataclasses import replace

import pytest

from admin_api.app import create_app as create_admin_app
from admin_api.auth import issue_token
from oros import apikeys
from tracker.app import create_app as create_tracker_app


@pytest.fixture
def business(pg, settings) -> dict:
    user_id = pg.execute("INSERT INTO users (email) VALUES (%s) RETURNING id::text AS id",
                         (f"{secrets.token_hex(6)}@example.com",)).fetchone()["id"]
    pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'business')", (user_id,))
    return {"id": user_id, "headers": {"Authorization": f"Bearer {issue_token(settings, user_id)}"}}


@pytest.fixture
async def admin_api(aiohttp_client, settings):
    return await aiohttp_client(create_admin_app(settings))


@pytest.fixture
async def tracker(aiohttp_client, settings):
    return await aiohttp_client(create_tracker_app(settings))


async def new_key(admin_api, business) -> dict:
    resp = await admin_api.post("/v1/api-keys", json={"name": "shop"}, headers=business["headers"])
    assert resp.status == 201
    return await resp.json()


async def convert(tracker, key: dict) -> int:
    resp = await tracker.post("/v1/conversions", json={"click_id": str(uuid.uuid4()), "type": "conversion"},
                              headers={"Authorization": f"Bearer {key['key']}"})
    return resp.status


async def test_revoked_key_is_refused_by_the_tracker_at_once(admin_api, tracker, business):
    key = await new_key(admin_api, business)
    assert await convert(tracker, key) == 202  # the tracker now caches the key's owner in Redis

    resp = await admin_api.delete(f"/v1/api-keys/{key['id']}", headers=business["headers"])

    assert resp.status == 200 and (await resp.json())["revoked_at"] is not None
    assert await convert(tracker, key) == 401


async def test_a_lookup_in_flight_cannot_put_a_revoked_key_back(admin_api, tracker, business, redis, settings):
    key = await new_key(admin_api, business)
    assert (await admin_api.delete(f"/v1/api-keys/{key['id']}", headers=business["headers"])).status == 200

    # A tracker read Postgres just before the revocation committed and now caches what it read.
    # Before, that write replaced the revocation and the key worked for the entry's lifetime (24 h).
    await apikeys.remember(redis, settings.keys, apikeys.hash_key(key["key"]), business["id"].encode(),
                           apikeys.CACHE_TTL_S)

    assert await convert(tracker, key) == 401


async def test_revocation_commits_and_answers_when_redis_is_down_and_reaches_the_tracker_once_it_is_back(
        aiohttp_client, admin_api, tracker, business, settings, port, pg):
    key = await new_key(admin_api, business)
    assert await convert(tracker, key) == 202
    down_settings = replace(settings, redis_url=f"redis://127.0.0.1:{port()}/0")
    down = await aiohttp_client(create_admin_app(down_settings))

    resp = await down.delete(f"/v1/api-keys/{key['id']}", headers=business["headers"])

    assert resp.status == 200 and (await resp.json())["revoked_at"] is not None  # before: 500, yet revoked
    assert pg.execute("SELECT revoked_at FROM api_keys WHERE id = %s", (key["id"],)).fetchone()["revoked_at"]
    # The admin API checks Postgres: the key is refused there at once.
    assert (await admin_api.get("/v1/me", headers={"Authorization": f"Bearer {key['key']}"})).status == 401
    # The tracker's entry was never told: the settler's job tells it, and retries while Redis is down.
    assert await asyncio.to_thread(apikeys.replay_revocations, down_settings) == {"deferred": 1}
    assert await convert(tracker, key) == 202
    assert await asyncio.to_thread(apikeys.replay_revocations, settings) == {"told": 1}
    assert await convert(tracker, key) == 401


async def test_the_revocation_job_gives_up_on_a_redis_that_never_answers(admin_api, business, settings, caplog):
    # A Redis that accepts the connection and then says nothing: before, the job waited forever, and its
    # scheduler (one instance at a time) skipped every later run.
    key = await new_key(admin_api, business)
    assert (await admin_api.delete(f"/v1/api-keys/{key['id']}", headers=business["headers"])).status == 200
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)  # the kernel completes each handshake; nothing ever reads or replies
        silent = replace(settings, redis_url=f"redis://127.0.0.1:{mute.getsockname()[1]}/0")
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="oros.apikeys"):
            told = await asyncio.wait_for(asyncio.to_thread(apikeys.replay_revocations, silent), timeout=30)
    assert told == {"deferred": 1}
    # Our bound (one retry), not the client library's default (none before redis-py 6, five seconds since).
    assert time.monotonic() - started < 3 * apikeys.REDIS_TIMEOUT_S + 1
    assert "api key revocations not told" in caplog.text
