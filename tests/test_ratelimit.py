"""The one rate limiter (oros/ratelimit.py), against real Redis: a sliding window, all keys or none, release."""

from __future__ import annotations

import random
import secrets
from dataclasses import replace

import pytest

from oros import ratelimit
from oros.connections import redis_client
from oros.ratelimit import Limited, reserve

T0 = 1_800_000_000_000  # ms, on a second
pytestmark = pytest.mark.stores  # Redis only: a key prefix of its own, no database clone


@pytest.fixture
def settings(base_settings):
    return replace(base_settings, redis_prefix=f"t:ratelimit:{secrets.token_hex(4)}:")


@pytest.fixture
async def redis(settings):
    client = redis_client(settings)
    yield client
    names = [name async for name in client.scan_iter(match=f"{settings.redis_prefix}*")]
    if names:
        await client.delete(*names)
    await client.aclose()


async def test_a_slot_frees_when_its_second_leaves_the_window(redis, settings):
    key = {settings.keys.limit("test", "a"): 3}
    for second in (0, 1, 2):
        await reserve(redis, key, 10, T0 + second * 1000)
    with pytest.raises(Limited) as refused:
        await reserve(redis, key, 10, T0 + 5000)
    assert refused.value.retry_after_s == 5  # the attempt at 0 s leaves at 10 s
    await reserve(redis, key, 10, T0 + 10_000)  # a fixed window would say the same; now the sliding part:
    with pytest.raises(Limited) as refused:
        await reserve(redis, key, 10, T0 + 10_500)  # 1 s, 2 s and 10 s are still in (0.5 s, 10.5 s]
    assert refused.value.retry_after_s == 1


async def test_no_window_ever_holds_more_than_the_limit(redis, settings):
    """Random arrivals, bursts across every boundary: any 10 s (by the second) admits at most 5."""
    key, limit, window_s = {settings.keys.limit("test", "b"): 5}, 5, 10
    rng, at, admitted = random.Random(7), T0, []
    for _ in range(300):
        at += rng.choice((0, 0, 50, 400, 1000, 3000))
        try:
            await reserve(redis, key, window_s, at)
            admitted.append(at // 1000)
        except Limited as refused:
            assert 1 <= refused.retry_after_s <= window_s
    assert len(admitted) > 30
    for second in admitted:
        assert sum(second - window_s < s <= second for s in admitted) <= limit, second


async def test_several_keys_are_counted_together_or_not_at_all(redis, settings):
    narrow, wide = settings.keys.limit("test", "narrow"), settings.keys.limit("test", "wide")
    await reserve(redis, {narrow: 1, wide: 3}, 60, T0)
    with pytest.raises(Limited):
        await reserve(redis, {narrow: 1, wide: 3}, 60, T0)
    # The refused attempt took nothing from the wide key: two of its three slots are still free.
    await reserve(redis, {wide: 3}, 60, T0)
    await reserve(redis, {wide: 3}, 60, T0)
    with pytest.raises(Limited):
        await reserve(redis, {wide: 3}, 60, T0)


async def test_a_released_slot_is_free_again(redis, settings):
    key = {settings.keys.limit("test", "c"): 2, settings.keys.limit("test", "d"): 2}
    first = await reserve(redis, key, 60, T0)
    await reserve(redis, key, 60, T0 + 1000)
    with pytest.raises(Limited):
        await reserve(redis, key, 60, T0 + 2000)
    await first.release(redis)
    await reserve(redis, key, 60, T0 + 2000)


async def test_a_flood_costs_one_field_per_second_and_expires(redis, settings):
    name = settings.keys.limit("test", "flood")
    for n in range(2000):  # 200 a second for 10 s: 5 s fill the window, the rest are refused and add nothing
        try:
            await reserve(redis, {name: 1000}, 60, T0 + n * 5)
        except Limited:
            pass
    assert await redis.hlen(name) == 5
    assert 0 < await redis.pttl(name) <= 61_000


async def test_the_clock_is_the_limiters_own(redis, settings, monkeypatch):
    monkeypatch.setattr(ratelimit, "now_ms", lambda: T0)
    slot = await reserve(redis, {settings.keys.limit("test", "e"): 1}, 60)
    assert slot.second == T0 // 1000
