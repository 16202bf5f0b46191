"""Facts the money side of issue 14 produces, written straight in as the owner.

Tips (with their unlocks) and memberships are created by the tips and
memberships flows (Stripe-confirmed payments, subscription webhooks). The
community tests only read them, so they insert the rows those flows would
leave behind: a ``tips`` row (amount = fee + net), its ``tip_unlocks`` row,
a ``memberships`` row with its status and ``ends_at``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal


def tip(pg, sender: str, creator: str, amount: str = "5.00", *, unlocks: str | None = None) -> str:
    """A confirmed one-time tip from ``sender`` to ``creator``; with ``unlocks``, the post it unlocked."""
    value = Decimal(amount)
    fee = (value * Decimal("0.05")).quantize(Decimal("0.01"))
    tip_id = pg.execute(
        "INSERT INTO tips (from_user_id, to_creator_id, amount, platform_fee, net_amount)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id::text AS id",
        (sender, creator, value, fee, value - fee)).fetchone()["id"]
    if unlocks is not None:
        pg.execute("INSERT INTO tip_unlocks (tip_id, community_post_id) VALUES (%s, %s)", (tip_id, unlocks))
    return tip_id


def membership(pg, user: str, membership_type: str = "supporter_plus", *, status: str = "active",
               ends_at: datetime | None = None) -> str:
    return pg.execute(
        "INSERT INTO memberships (user_id, membership_type, status, ends_at) VALUES (%s, %s, %s, %s)"
        " RETURNING id::text AS id", (user, membership_type, status, ends_at)).fetchone()["id"]
