"""The membership tiers: who may subscribe, what each costs a month, and what each one does.

The one place a tier's effect is configured (docs/supporters.md, "Tiers"):

* ``creator_plus`` / ``creator_pro``: the creator's platform fee, on campaign
  earnings and on tips, is at most ``fee_pct_cap`` while the membership is
  active (a cap: a tier never raises a fee). The cap is written to the fee
  history when the membership starts (sql/postgres/0076), so every earning
  and tip is charged the fee of its own time (oros/fees.py).
* ``business_growth``: up to ``max_active_campaigns`` campaigns active at
  once instead of ``BASE_ACTIVE_CAMPAIGNS`` (checked on activation).
* ``supporter_plus``: unlocks the supporter-only posts of the communities the
  supporter belongs to (read by the communities code from ``memberships``).

A membership confers its effect while its ``status`` is ``active``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

BASE_ACTIVE_CAMPAIGNS = 5


@dataclass(frozen=True)
class Tier:
    name: str
    role: str  # the role a subscriber must hold
    monthly_price: Decimal  # usd, billed by Stripe every month
    fee_pct_cap: Decimal | None = None
    max_active_campaigns: int | None = None
    unlocks_supporter_posts: bool = False


TIERS: dict[str, Tier] = {tier.name: tier for tier in (
    Tier("creator_plus", "creator", Decimal("9.99"), fee_pct_cap=Decimal("8")),
    Tier("creator_pro", "creator", Decimal("29.99"), fee_pct_cap=Decimal("5")),
    Tier("supporter_plus", "supporter", Decimal("4.99"), unlocks_supporter_posts=True),
    Tier("business_growth", "business", Decimal("99.00"), max_active_campaigns=25),
)}


def lowest_creator_fee_pct(base_fee_pct: Decimal) -> Decimal:
    """The lowest platform fee a creator can be charged on campaign earnings: the base fee, or a tier's cap below it."""
    return min([base_fee_pct, *(t.fee_pct_cap for t in TIERS.values() if t.fee_pct_cap is not None)])


def max_active_campaigns(active_tiers: Iterable[str]) -> int:
    """How many campaigns a business holding these active memberships may run at once."""
    return max([BASE_ACTIVE_CAMPAIGNS, *(TIERS[t].max_active_campaigns or 0 for t in active_tiers if t in TIERS)])
