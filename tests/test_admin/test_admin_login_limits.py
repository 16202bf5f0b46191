"""Login and signup limits: strangers cannot lock an owner out, successes never count, hashing is bounded.

The app trusts 127.0.0.0/8 as its proxy, so ``X-Forwarded-For`` names the client each request comes from.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import replace

import pytest

from admin_api.app import create_app
from admin_api.attempts import LOGIN_FAILURES_PER_ADDRESS, LOGIN_FAILURES_PER_EMAIL, SIGNUPS_PER_ADDRESS, WINDOW_S
from admin_api.typedefs import HASH_GATE
from oros import ratelimit

from admin_flows import assert_error

PASSWORD = "correct horse"
OWNER = "198.51.100.10"


def at(ip: str) -> dict:
    return {"X-Forwarded-For": ip}


def stranger(n: int) -> dict:
    return at(f"203.0.113.{n}")


@pytest.fixture
async def api(aiohttp_client, settings):
    trusting = replace(settings, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    return await aiohttp_client(create_app(trusting))


async def signup(api, email: str, headers: dict):
    return await api.post("/v1/auth/signup", json={"email": email, "password": PASSWORD, "roles": ["creator"]},
                          headers=headers)


async def login(api, email: str, password: str, headers: dict):
    return await api.post("/v1/auth/login", json={"email": email, "password": password}, headers=headers)


async def assert_limited(resp) -> None:
    assert resp.status == 429
    assert_error(await resp.json(), "too_many_attempts")
    assert int(resp.headers["Retry-After"]) >= 1


async def test_strangers_cannot_lock_out_an_email_its_owner_logged_in_from(api):
    assert (await signup(api, "ana@example.com", at(OWNER))).status == 201
    assert (await login(api, "ana@example.com", PASSWORD, at(OWNER))).status == 200

    for n in range(LOGIN_FAILURES_PER_EMAIL):  # a different address each time: no address limit is reached
        assert (await login(api, "ana@example.com", f"guess-{n}", stranger(n + 1))).status == 401
    # The email is closed to every other stranger, even one who now holds the right password...
    await assert_limited(await login(api, "ana@example.com", PASSWORD, stranger(200)))
    # ...but not to the address its owner logged in from.
    assert (await login(api, "ana@example.com", PASSWORD, at(OWNER))).status == 200


async def test_successful_logins_are_never_counted(api):
    assert (await signup(api, "ana@example.com", at(OWNER))).status == 201
    # Before, every login counted, right or wrong: the owner locked themself out at the 11th.
    for _ in range(max(LOGIN_FAILURES_PER_EMAIL, LOGIN_FAILURES_PER_ADDRESS) + 1):
        assert (await login(api, "ana@example.com", PASSWORD, at(OWNER))).status == 200


async def test_failures_are_capped_per_address_across_emails(api):
    for n in range(LOGIN_FAILURES_PER_ADDRESS):  # one email each: no email limit is reached
        assert (await login(api, f"user{n}@example.com", "whatever1", stranger(1))).status == 401
    await assert_limited(await login(api, "another@example.com", "whatever1", stranger(1)))
    assert (await login(api, "another@example.com", "whatever1", stranger(2))).status == 401


async def test_failures_leave_the_window_one_by_one(api, monkeypatch):
    clock = {"ms": 1_800_000_000_000}
    monkeypatch.setattr(ratelimit, "now_ms", lambda: clock["ms"])
    for n in range(LOGIN_FAILURES_PER_EMAIL):
        assert (await login(api, "ana@example.com", "guess", stranger(n + 1))).status == 401
        clock["ms"] += 1000
    resp = await login(api, "ana@example.com", "guess", stranger(100))
    await assert_limited(resp)
    # The oldest failure leaves the window WINDOW_S after it happened; the limit says when.
    assert int(resp.headers["Retry-After"]) == WINDOW_S - LOGIN_FAILURES_PER_EMAIL
    clock["ms"] = 1_800_000_000_000 + WINDOW_S * 1000 + 1
    assert (await login(api, "ana@example.com", "guess", stranger(100))).status == 401
    await assert_limited(await login(api, "ana@example.com", "guess", stranger(101)))


async def test_signups_are_capped_per_address(api):
    for n in range(SIGNUPS_PER_ADDRESS):
        assert (await signup(api, f"new{n}@example.com", stranger(1))).status == 201
    await assert_limited(await signup(api, "one-more@example.com", stranger(1)))
    # A taken email is answered before any hash is spent, limit or not.
    resp = await signup(api, "new0@example.com", stranger(1))
    assert resp.status == 409
    assert (await signup(api, "one-more@example.com", stranger(2))).status == 201


async def test_password_hashing_is_bounded_per_process(api):
    assert (await signup(api, "ana@example.com", at(OWNER))).status == 201
    gate = api.app[HASH_GATE]
    with contextlib.ExitStack() as held:
        for _ in range(gate.slots):
            held.enter_context(gate.admit())
        for resp in (await login(api, "ana@example.com", PASSWORD, stranger(1)),
                     await signup(api, "bob@example.com", stranger(1))):
            assert resp.status == 503
            assert_error(await resp.json(), "busy")
            assert resp.headers["Retry-After"] == "1"
    # Refused before the password was judged: not a failure, the slots are free again.
    for n in range(LOGIN_FAILURES_PER_EMAIL):
        assert (await login(api, "ana@example.com", "guess", stranger(n + 2))).status == 401
    await assert_limited(await login(api, "ana@example.com", "guess", stranger(100)))


async def test_a_signup_turned_away_by_the_hashing_gate_uses_up_no_signup(api):
    """A 503 ``busy`` hashed nothing, so it must not count: else a busy minute would use up an address's hour."""
    gate = api.app[HASH_GATE]
    with contextlib.ExitStack() as held:
        for _ in range(gate.slots):
            held.enter_context(gate.admit())
        for n in range(SIGNUPS_PER_ADDRESS + 5):
            resp = await signup(api, f"busy{n}@example.com", stranger(1))
            assert resp.status == 503, n
            assert_error(await resp.json(), "busy")
    for n in range(SIGNUPS_PER_ADDRESS):
        assert (await signup(api, f"late{n}@example.com", stranger(1))).status == 201, n
    await assert_limited(await signup(api, "one-more@example.com", stranger(1)))


async def test_redis_down_answers_503_not_500(aiohttp_client, settings, port):
    down = await aiohttp_client(create_app(replace(settings, redis_url=f"redis://127.0.0.1:{port()}/0")))
    for resp in (await login(down, "ana@example.com", PASSWORD, {}),
                 await signup(down, "ana@example.com", {})):
        assert resp.status == 503
        assert_error(await resp.json(), "unavailable")
        assert resp.headers["Retry-After"] == "1"
