"""The settler's owner jobs, as the admin API receives them from an entrypoint.

The admin API may run a settlement, a reconcile, a hold release or a payout run on demand
(embedded ``oros dev``, where one process owns chDB), but it does not import
the settler: the entrypoint that builds the app hands it these callables, so
the dependency runs one way (entrypoints -> apps -> ``oros``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .settings import Settings


@dataclass(frozen=True)
class OwnerJobs:
    settle: Callable[[Settings], dict[str, Any]]  # one settlement run's report
    reconcile: Callable[[Settings], Sequence[Any]]  # the checks, each with ``ok``
    release_holds: Callable[[Settings], int]  # how many credits were released
    pay_withdrawals: Callable[[Settings], dict[str, Any]]  # one payout run's counts (``settler.payouts``)
