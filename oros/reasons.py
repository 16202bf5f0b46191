"""Why an event is not billable: the one list of reason codes, and the campaign of unknown clicks.

A code is stored in Postgres ``events.rejection_reason`` (the settler writes it)
and shown in reports (admin API), so each is spelled once, here.
"""

from __future__ import annotations

# Where the edge puts an event whose click it does not know (tracker, Stripe webhooks):
# kept in the raw log, never billable; the settler reads it as "no campaign".
UNKNOWN_CAMPAIGN = "00000000-0000-0000-0000-000000000000"

# settler/verify.py
BOT = "bot"
DUPLICATE_CLICK = "duplicate_click"
OUTSIDE_DATES = "outside_dates"
NOT_ACCEPTED = "not_accepted"
NO_SUCH_CLICK = "no_such_click"
OUTSIDE_ATTRIBUTION_WINDOW = "outside_attribution_window"
WRONG_BUSINESS = "wrong_business"
DUPLICATE_ORDER = "duplicate_order"
CAMPAIGN_NOT_ACTIVE = "campaign_not_active"
WRONG_TYPE = "wrong_type"
DUPLICATE_CONVERSION = "duplicate_conversion"  # the click already has its paid conversion (or that sale)
UNSIGNED_PIXEL = "unsigned_pixel"  # a pixel without sig, on a campaign that does not bill those
BAD_PIXEL_SIGNATURE = "bad_pixel_signature"  # no secret of the campaign's business signed it
LINK_DISABLED = "link_disabled"  # its link was disabled (outside its campaign's hosts, 0032) when it happened

# settler/budget.py: verified, but the campaign's budget ran out first
BUDGET_EXHAUSTED = "budget_exhausted"

# settler/refunds.py
NO_SUCH_ORDER = "no_such_order"
ALREADY_REFUNDED = "already_refunded"
REFUND_AFTER_HOLD = "refund_after_hold"

# settler/supersede.py: an unsigned pixel paid for an order the business's own post of it replaced (its row
# keeps its status: reversed while its sale was held, paid past the hold)
SUPERSEDED_BY_BUSINESS = "superseded_by_business"

# settler/live.py: a live sale (docs/live.md)
OUTSIDE_LIVE_WINDOW = "outside_live_window"  # not between the event's start and its end (plus the checkout grace)
NO_COMMISSION = "no_commission"  # the event sets no percent and the campaign pays no sale, or it rounds to 0.00
