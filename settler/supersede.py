"""The business's own post of an order supersedes an unsigned pixel paid for it in an earlier run (issue 11).

An unsigned pixel's order id is whatever its sender made up, so it never
claims the order against the business's authenticated post (``verify``).
When that post is paid, each unsigned pixel paid earlier for the same
(campaign, order) is superseded:

* ``mark``, in the campaign's settlement transaction before its events are
  recorded: the pixel's row gets ``rejection_reason`` ``superseded_by_business``,
  and, where it was paid on the very click the post names, ``duplicate_of`` the
  post, which takes it out of the one-payment-per-click indexes (0030, 0167) so
  the post is recorded paid on that click.
* ``reverse``, once the read's sales are paid and before its refunds: a
  superseded pixel's sale still held is taken back whole, as a refund of its
  whole value would (``refunds.reverse_superseded``: the budget returns, the
  creator's pending credit goes); past its hold it stands (docs/security.md,
  "Pixel"). A refund that was applied to the pixel's sale is then decided
  again against the business's sale, so the refund is not lost.

A superseded conversion is marked only: conversions have no reversal path.
Live sales are not superseded: among live sales an unsigned pixel claims its
order (``settler.live``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import psycopg

from oros.reasons import SUPERSEDED_BY_BUSINESS

from .refunds import apply_refund, reverse_superseded
from .verify import Candidate, unsigned_pixel

PixelSales = dict[tuple[str, str], list[tuple[str, str | None]]]

MARK_SQL = f"""
UPDATE events SET rejection_reason = '{SUPERSEDED_BY_BUSINESS}',
                  duplicate_of = CASE WHEN click_id = %(click)s::uuid THEN %(post)s::uuid END
 WHERE id = %(pixel)s AND unsigned_pixel AND rejection_reason IS NULL
"""

# The superseded pixel sales still paid, of the pixels a read's orders named.
SUPERSEDED_SQL = f"""
SELECT id::text AS id, campaign_id::text AS campaign_id, order_id FROM events
 WHERE id = ANY(%s::uuid[]) AND event_type = 'sale' AND status = 'paid'
   AND rejection_reason = '{SUPERSEDED_BY_BUSINESS}'
"""

# The refunds applied to a sale (their metadata names it), oldest first: each a refunded total of the order.
REFUNDS_OF_SQL = """
SELECT id::text AS id, floor(extract(epoch FROM occurred_at) * 1000)::bigint AS ts_ms, order_id, value,
       campaign_id::text AS campaign_id
  FROM events
 WHERE event_type = 'refund' AND order_id = %(order)s AND metadata->>'refunds' = %(sale)s
 ORDER BY occurred_at, id
"""


def mark(conn: psycopg.Connection, campaign_id: str, paid: Iterable[Candidate], pixel_sales: PixelSales) -> None:
    """Mark the unsigned pixels the paid authenticated events supersede (inside the campaign's transaction)."""
    for event in paid:
        if event.order_id is None or unsigned_pixel(event) or event.event_type == "click":
            continue
        for pixel, _ in pixel_sales.get((campaign_id, event.order_id), ()):
            conn.execute(MARK_SQL, {"pixel": pixel, "click": event.click_id, "post": event.event_id})


def reverse(conn: psycopg.Connection, pixel_sales: PixelSales, *, run_id: str, now: datetime) -> int:
    """Take back each superseded pixel sale still held, each in its own transaction, and decide the refunds
    applied to it again; returns how many were taken back."""
    pixels = [pixel for rows in pixel_sales.values() for pixel, _ in rows]
    if not pixels:
        return 0
    taken = 0
    for sale in conn.execute(SUPERSEDED_SQL, (pixels,)).fetchall():
        with conn.transaction():
            if reverse_superseded(conn, sale, run_id=run_id, cause_id=sale["id"]) is not None:
                taken += 1
            for refund in conn.execute(REFUNDS_OF_SQL, {"order": sale["order_id"], "sale": sale["id"]}).fetchall():
                apply_refund(conn, Candidate(event_id=refund["id"], event_type="refund", ts_ms=refund["ts_ms"],
                                             campaign_id=refund["campaign_id"], order_id=refund["order_id"],
                                             value=refund["value"]),
                             run_id=run_id, now=now, recorded=True)
    return taken
