"""Login and signup limits, and the gate in front of password hashing.

* Login failures are counted per client address and per email in sliding
  windows (oros/ratelimit.py), so a limit never resets at a window boundary.
  An attempt holds a slot while its password is checked and gives it back
  if the password was right: successful logins never count.
* The per-email limit applies only to addresses that never logged in to that
  email: strangers guessing a password cannot lock its owner out. Every
  address, known or not, is bounded by its own failure limit.
* Signups are counted per address (every signup whose password is hashed),
  since each one costs an argon2 hash (64 MiB, tens of milliseconds). The
  slot is taken once the hashing gate admits the signup: one it turns away
  (503) is not counted.
* At most ``HASH_SLOTS`` hashes run at once per process; beyond that the
  request answers 503 with ``Retry-After`` instead of queueing memory. This
  gate bounds work in flight; it is not a rate limit.

IPv6 clients are counted per /64, the block one host usually holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
from collections.abc import Iterator

from aiohttp import web

from oros import ratelimit
from oros.httperrors import ApiError
from oros.ratelimit import Slot

from .typedefs import CLIENT_IP, HASH_GATE, REDIS, SETTINGS

WINDOW_S = 900
LOGIN_FAILURES_PER_EMAIL = 10  # from addresses that never logged in to it
LOGIN_FAILURES_PER_ADDRESS = 20
SIGNUP_WINDOW_S = 3600
SIGNUPS_PER_ADDRESS = 20
KNOWN_ADDRESS_TTL_S = 30 * 86400  # an address that logged in to an email stays trusted for it this long
HASH_SLOTS = 4  # 4 x 64 MiB of argon2 memory per API process
HASH_RETRY_AFTER_S = 1


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


async def _reserve(request: web.Request, limits: dict[str, int], window_s: int, what: str) -> Slot:
    try:
        return await ratelimit.reserve(request.app[REDIS], limits, window_s)
    except ratelimit.Limited as limited:
        raise ApiError(429, "too_many_attempts", f"too many {what}; retry in {limited.retry_after_s} s",
                       retry_after_s=limited.retry_after_s) from None


async def begin_login(request: web.Request, email: str) -> Slot:
    """Reserve this login's slot in its address's (and, for a stranger, its email's) failure window; else 429."""
    redis, keys = request.app[REDIS], request.app[SETTINGS].keys
    address, email_id = address_of(request), _email_id(email)
    limits = {keys.limit("login-address", address): LOGIN_FAILURES_PER_ADDRESS}
    if not await redis.exists(keys.known_login(email_id, address)):
        limits[keys.limit("login-email", email_id)] = LOGIN_FAILURES_PER_EMAIL
    return await _reserve(request, limits, WINDOW_S, "failed logins")


async def remember_address(request: web.Request, email: str) -> None:
    """The password was right: this address is known for the email from now on."""
    redis, keys = request.app[REDIS], request.app[SETTINGS].keys
    await redis.set(keys.known_login(_email_id(email), address_of(request)), 1, ex=KNOWN_ADDRESS_TTL_S)


async def signup_hash(request: web.Request, fn, *args):
    """``fn(*args)`` (the new password's hash) once the hashing gate admits it, counted against the address:
    429 past ``SIGNUPS_PER_ADDRESS`` an hour. A signup the gate turns away (503) spent nothing and counts nothing."""
    limit = {request.app[SETTINGS].keys.limit("signup", address_of(request)): SIGNUPS_PER_ADDRESS}
    with request.app[HASH_GATE].admit():
        await _reserve(request, limit, SIGNUP_WINDOW_S, "signups from this address")
        return await asyncio.to_thread(fn, *args)


async def hashed(request: web.Request, fn, *args):
    """``fn(*args)`` (an argon2 hash or verification) in a thread, once the process's gate admits it."""
    with request.app[HASH_GATE].admit():
        return await asyncio.to_thread(fn, *args)


class HashGate:
    """Admits a password hash while fewer than ``slots`` run in this process; else 503.

    A concurrency gate (hashes in flight), not a rate limit over time (oros/ratelimit.py).
    """

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
