"""An order's claim in Redis: what makes an order recorded once, whichever surface posts it.

Every producer of an event that names an order (the tracker's ``POST /v1/conversions`` and pixel,
the admin API's live-sale refund) claims its key here before appending the event:

* ``claim`` sets the key to ``pending:<event id>:<ms>`` if it is free (``SET NX GET``, atomic), or
  returns the event id that recorded the order first: the caller answers a duplicate with it;
* once the event is durable, ``recorded`` makes the key the event id; if the append failed,
  ``released`` frees it for the retry.

A claim still pending is waited for. The tracker's append ends within its flush timeout (2 s), so a
claim pending 10 s was left by a request that died or lost Redis; it is taken over, since answering
it as a duplicate would name an event that was never recorded. (Should a producer's append stall
longer, a second event of the order may be appended; the settler refuses it as a duplicate: paid
once.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal

from .httperrors import unavailable
from .keys import Keys
from .money import fmt
from .stream import REDIS_ERRORS

PENDING = "pending:"
CLAIM_STALE_MS = 10_000
CLAIM_WAIT_S = 3.0
CLAIM_POLL_S = 0.02
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


def ttl_s(attribution_days: int, hold_days: int) -> int:
    """How long a claim is kept: as long as an order can still be attributed, paid or refunded."""
    return (attribution_days + hold_days) * 86400


def refund_key(keys: Keys, business_id: str, order_id: str, value: Decimal | None,
               campaign_id: str | None = None) -> str:
    """A refund's claim. Its value is the order's refunded total so far (None: in full), so each new
    total is a new refund and a repeat is not. A refund that names its campaign (a live sale's) is
    claimed in that campaign only: a business's campaigns may each have sold an order of that id."""
    scope = business_id if campaign_id is None else f"{business_id}:{campaign_id}"
    return keys.order(f"refund:{scope}:{fmt(value) or 'full'}", order_id)


async def claim(redis, key: str, event_id: str, ts_ms: int, ttl: int) -> str | None:
    """Claim the order for ``event_id`` (None), or the event id that recorded it first."""
    mine = f"{PENDING}{event_id}:{ts_ms}"
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        first = await redis.set(key, mine, nx=True, get=True, ex=ttl)
        if first is None:
            return None
        first = first.decode()
        if not first.startswith(PENDING):
            return first
        if time.time_ns() // 1_000_000 - int(first.rsplit(":", 1)[1]) > CLAIM_STALE_MS:
            if await redis.eval(_TAKE_OVER, 1, key, first, mine, ttl):
                return None
        elif time.monotonic() > deadline:
            raise unavailable("this order is being recorded, retry shortly")
        await asyncio.sleep(CLAIM_POLL_S)


async def recorded(redis, key: str, event_id: str, ttl: int) -> None:
    """The event is durable: the order is its now. Should this write fail, the claim goes stale and a
    retry records the order again, which the settler refuses as a duplicate: paid once."""
    with contextlib.suppress(*REDIS_ERRORS):
        await redis.set(key, event_id, xx=True, ex=ttl)


async def released(redis, key: str) -> None:
    """The event was not recorded: let the retry claim the order."""
    with contextlib.suppress(*REDIS_ERRORS):
        await redis.delete(key)
