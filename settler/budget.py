"""Campaign budgets: which billable events the money left in escrow can pay.

Pure: given the campaign's remaining budget (read under its row lock) and
its billable events in time order, the earliest events are paid while a
whole ``payout_per_action`` is left; the rest are rejected as
``budget_exhausted``. The budget never goes below zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from operator import attrgetter

from .verify import Candidate


@dataclass
class Allocation:
    paid: list[Candidate] = field(default_factory=list)
    exhausted: list[Candidate] = field(default_factory=list)
    spent: Decimal = Decimal("0.00")
    remaining: Decimal = Decimal("0.00")

    def exhausts(self, payout: Decimal) -> bool:
        """The campaign cannot pay one more action: it becomes completed."""
        return self.remaining < payout


def allocate(events: list[Candidate], remaining: Decimal, payout: Decimal) -> Allocation:
    ordered = sorted(events, key=attrgetter("ts_ms", "event_id"))
    affordable = int(remaining // payout) if payout > 0 else 0
    paid, exhausted = ordered[:affordable], ordered[affordable:]
    spent = payout * len(paid)
    return Allocation(paid=paid, exhausted=exhausted, spent=spent, remaining=remaining - spent)
