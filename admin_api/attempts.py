"""Login and signup limits, and the gate in front of password hashing.

* Login failures are counted per client address and per email, in sliding
  windows (a Redis sorted set of attempt times), so a limit never resets at a
  window boundary. An attempt holds a slot while its password is checked and
  gives it back if the password was right: successful logins never count.
* The per-email limit applies only to addresses that never logged in to that
  email: strangers guessing a password cannot lock its owner out. Every
  address, known or not, is bounded by its own failure limit.
* Signups are counted per address (every signup that reaches the hash), since
  each one costs an argon2 hash (64 MiB, tens of milliseconds).
* At most ``HASH_SLOTS`` hashes run at once per process; beyond that the
  request answers 503 with ``Retry-After`` instead of queueing memory.

IPv6 clients are counted per /64, the block one host usually holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import math
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web

from .errors import ApiError
from .typedefs import CLIENT_IP, HASH_GATE, REDIS, SETTINGS

WINDOW_S = 900
LOGIN_FAILURES_PER_EMAIL = 10  # from addresses that never logged in to it
LOGIN_FAILURES_PER_ADDRESS = 20
SIGNUP_WINDOW_S = 3600
SIGNUPS_PER_ADDRESS = 20
KNOWN_ADDRESS_TTL_S = 30 * 86400  # an address that logged in to an email stays trusted for it this long
HASH_SLOTS = 4  # 4 x 64 MiB of argon2 memory per API process
HASH_RETRY_AFTER_S = 1

# Drop what left the window, refuse when any log is full (returning ms until its oldest
# entry leaves), else add this attempt to every log. One script: no check-then-add race.
_RESERVE_LUA = """
local now, window, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local wait = 0
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= tonumber(ARGV[3 + i]) then
    local oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
    wait = math.max(wait, oldest + window - now)
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, window)
end
return 0
"""


def now_ms() -> int:
    """The limits' clock (tests move it)."""
    return time.time_ns() // 1_000_000


def address_of(request: web.Request) -> str:
    """The client address the limits count: the client IP, an IPv6 one as its /64."""
    raw = request.app[CLIENT_IP](request) or "unknown"
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _email_id(email: str) -> str:
    # Key names carry no address: a digest is as good for counting.
    return hashlib.sha256(email.encode()).hexdigest()[:32]


@dataclass
class Attempt:
    """A reserved slot in some sliding logs; ``release`` gives it back."""

    logs: list[str]
    member: str

    async def release(self, redis) -> None:
        async with redis.pipeline(transaction=True) as pipe:
            for log in self.logs:
                pipe.zrem(log, self.member)
            await pipe.execute()


async def _reserve(redis, limits: dict[str, int], window_s: int, what: str) -> Attempt:
    now = now_ms()
    member = f"{now}:{secrets.token_hex(6)}"
    wait_ms = await redis.eval(_RESERVE_LUA, len(limits), *limits, now, window_s * 1000, member, *limits.values())
    if wait_ms:
        retry_after = max(1, math.ceil(int(wait_ms) / 1000))
        raise ApiError(429, "too_many_attempts", f"too many {what}; retry in {retry_after} s",
                       retry_after_s=retry_after)
    return Attempt(list(limits), member)


async def begin_login(request: web.Request, email: str) -> Attempt:
    """Reserve this login's slot in its address's (and, for a stranger, its email's) failure log; else 429."""
    redis, keys = request.app[REDIS], request.app[SETTINGS].keys
    address, email_id = address_of(request), _email_id(email)
    limits = {keys.attempts("login-address", address): LOGIN_FAILURES_PER_ADDRESS}
    if not await redis.exists(keys.known_login(email_id, address)):
        limits[keys.attempts("login-email", email_id)] = LOGIN_FAILURES_PER_EMAIL
    return await _reserve(redis, limits, WINDOW_S, "failed logins")


async def remember_address(request: web.Request, email: str) -> None:
    """The password was right: this address is known for the email from now on."""
    redis, keys = request.app[REDIS], request.app[SETTINGS].keys
    await redis.set(keys.known_login(_email_id(email), address_of(request)), 1, ex=KNOWN_ADDRESS_TTL_S)


async def begin_signup(request: web.Request) -> Attempt:
    """Count a signup against its address; 429 past ``SIGNUPS_PER_ADDRESS`` an hour."""
    keys = request.app[SETTINGS].keys
    return await _reserve(request.app[REDIS], {keys.attempts("signup", address_of(request)): SIGNUPS_PER_ADDRESS},
                          SIGNUP_WINDOW_S, "signups from this address")


async def hashed(request: web.Request, fn, *args):
    """``fn(*args)`` (an argon2 hash or verification) in a thread, once the process's gate admits it."""
    with request.app[HASH_GATE].admit():
        return await asyncio.to_thread(fn, *args)


class HashGate:
    """Admits a password hash while fewer than ``slots`` run in this process; else 503."""

    def __init__(self, slots: int = HASH_SLOTS) -> None:
        self.slots, self.busy = slots, 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if self.busy >= self.slots:
            raise ApiError(503, "busy", "too many logins and signups at once; retry shortly",
                           retry_after_s=HASH_RETRY_AFTER_S)
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
