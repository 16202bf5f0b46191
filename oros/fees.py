"""The platform fee that applied to a user at a moment: the base fee, lowered by the user's tier then.

One rule for campaign earnings (the settler; base ``OROS_PLATFORM_FEE_PCT``)
and tips (the Stripe webhook; base ``OROS_TIP_FEE_PCT``): a creator tier
(oros/tiers.py) caps the fee while its membership is active, recorded as
spans ``[effective_from, effective_until)`` in ``fee_history``
(sql/postgres/0076), so an earning settled late is still charged the fee of
the moment it happened::

    fee_pct(user, T) = min(base, every cap whose span holds T)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import psycopg

SPANS_SQL = """
SELECT user_id::text AS user_id, fee_pct, effective_from, effective_until
  FROM fee_history WHERE user_id = ANY(%(users)s::uuid[])
"""

Span = tuple[int, int | None, Decimal]  # from ms, until ms (None: open), cap


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


@dataclass(frozen=True)
class FeeSchedule:
    base: Decimal
    spans: dict[str, tuple[Span, ...]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, base: Decimal, rows: list[dict]) -> FeeSchedule:
        spans: dict[str, list[Span]] = defaultdict(list)
        for row in rows:
            spans[row["user_id"]].append((_ms(row["effective_from"]), _ms(row["effective_until"]), row["fee_pct"]))
        return cls(base, {user: tuple(found) for user, found in spans.items()})

    def pct(self, user_id: str, at_ms: int) -> Decimal:
        """The fee percent for ``user_id`` at ``at_ms`` (epoch milliseconds)."""
        spans = self.spans.get(user_id)
        if not spans:  # most creators hold no tier: the settler asks once per event
            return self.base
        return min([self.base, *(cap for start, until, cap in spans
                                 if start <= at_ms and (until is None or at_ms < until))])


def load(conn: psycopg.Connection, base: Decimal, users: list[str]) -> FeeSchedule:
    """The schedule of these users (a synchronous connection: the settler)."""
    if not users:
        return FeeSchedule(base)
    return FeeSchedule.from_rows(base, conn.execute(SPANS_SQL, {"users": users}).fetchall())
