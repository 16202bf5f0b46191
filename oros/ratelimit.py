"""The one Redis rate limiter: at most N admitted requests in any sliding window, per key.

Each key is a hash of per-second counts (``RESOLUTION_MS``): an attempt counts
from the start of its second until the window has passed over it, so the
window slides by the second and never resets at a boundary (a fixed window
lets through twice its limit around one). A key holds at most
``min(limit, window / resolution)`` fields, so a flood from one address costs
a bounded hash, not an entry per request.

One script checks every key of a reservation and counts it in all of them
only when none is full: several limits (an address and an email) are taken
together or not at all, with no check-then-add race between processes. A
refusal says how long until the oldest counted seconds leave the window and
the request would be admitted. ``Slot.release`` gives a reserved attempt
back (a login whose password was right).

Users: the tracker's conversions and pixels (per client address) and the
admin API's login and signup limits (admin_api/attempts.py). The in-process
gates (``MissBudget``, ``StatsGate``, ``HashGate``) bound work in flight, not
requests over time; they are not rate limits.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from redis.exceptions import NoScriptError

RESOLUTION_MS = 1000

# KEYS: the limited hashes. ARGV: now (ms), window (ms), resolution (ms), then each key's limit.
# For each key: drop the seconds that left the window and sum the rest; when one is full, find
# the moment enough of its oldest seconds leave. Only when none is full, count this one everywhere.
_RESERVE_LUA = """
local now, window, width = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local first_live = math.floor((now - window) / width) + 1
local current = math.floor(now / width)
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 + i])
  local flat = redis.call('HGETALL', key)
  local live, total = {}, 0
  for j = 1, #flat, 2 do
    local second, n = tonumber(flat[j]), tonumber(flat[j + 1])
    if second < first_live then
      redis.call('HDEL', key, flat[j])
    else
      live[#live + 1] = {second, n}
      total = total + n
    end
  end
  if total >= limit then
    table.sort(live, function(a, b) return a[1] < b[1] end)
    local excess = total - limit + 1
    for _, counted in ipairs(live) do
      excess = excess - counted[2]
      if excess <= 0 then
        wait = math.max(wait, counted[1] * width + window - now)
        break
      end
    end
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, current, 1)
  redis.call('PEXPIRE', key, window + width)
end
return 0
"""

# Give one attempt back, where its second is still counted.
_RELEASE_LUA = """
for _, key in ipairs(KEYS) do
  if redis.call('HINCRBY', key, ARGV[1], -1) <= 0 then redis.call('HDEL', key, ARGV[1]) end
end
"""
_SHA = {script: hashlib.sha1(script.encode()).hexdigest() for script in (_RESERVE_LUA, _RELEASE_LUA)}


class Limited(Exception):
    """Every slot of some key's window is taken; a slot frees in ``retry_after_s``."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"rate limited; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Slot:
    """A reserved attempt, counted in every key of its reservation."""

    keys: tuple[str, ...]
    second: int

    async def release(self, redis) -> None:
        await _run(redis, _RELEASE_LUA, len(self.keys), *self.keys, self.second)


def now_ms() -> int:
    """The limiter's clock (tests move it)."""
    return time.time_ns() // 1_000_000


async def reserve(redis, limits: dict[str, int], window_s: int, at_ms: int | None = None) -> Slot:
    """Count one attempt in every key of ``limits`` (key -> most attempts per window); else raise ``Limited``."""
    at_ms = now_ms() if at_ms is None else at_ms
    wait_ms = await _run(redis, _RESERVE_LUA, len(limits), *limits, at_ms, window_s * 1000, RESOLUTION_MS,
                         *limits.values())
    if wait_ms:
        raise Limited(max(1, math.ceil(int(wait_ms) / 1000)))
    return Slot(tuple(limits), at_ms // RESOLUTION_MS)


async def _run(redis, script: str, *args):
    """EVALSHA, sending the script itself only when the server does not have it (first use, after a restart)."""
    try:
        return await redis.evalsha(_SHA[script], *args)
    except NoScriptError:
        return await redis.eval(script, *args)
