"""When a failed delivery is tried again: exponential backoff with jitter, capped, until a day has passed.

Attempt n failed: the next comes after ``min(MAX_DELAY_S, FIRST_DELAY_S * 2**(n-1))`` seconds,
shortened by up to ``JITTER`` of itself at random, so the retries of many deliveries that failed
together (a receiver's outage) do not return together. No retry goes past the delivery's
``give_up_at`` (a day after the event): the last attempt is made then, and if it fails too the
delivery is failed. Pure: the caller passes the clock's time and the random draw.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

FIRST_DELAY_S = 30
MAX_DELAY_S = 3600
JITTER = 0.25
_MAX_DOUBLINGS = 20  # far past the cap; keeps the power small


def retry_delay_s(attempt: int, draw: float) -> float:
    """The wait after failed attempt ``attempt`` (1-based); ``draw`` is uniform in [0, 1)."""
    base = min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** min(attempt - 1, _MAX_DOUBLINGS))
    return base * (1 - JITTER * draw)


def next_attempt_at(attempt: int, now: datetime, give_up_at: datetime, rng: Callable[[], float]) -> datetime | None:
    """When to try again after failed attempt ``attempt``; None: give up (the day is over)."""
    if now >= give_up_at:
        return None
    return min(now + timedelta(seconds=retry_delay_s(attempt, rng())), give_up_at)
