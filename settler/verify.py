"""Which events are billable: the verification rules of DESIGN.md as pure functions.

Everything a rule needs is loaded beforehand (``settler.run``): the campaign
with its status history and accepted creators, and per event the facts only
ClickHouse knows (the previous click from the same IP on the same link, the
click a conversion names). ``now`` is passed in, so tests replace the clock.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from decimal import Decimal

# Reason codes, stored in Postgres events.rejection_reason and shown in reports.
BOT = "bot"
DUPLICATE_CLICK = "duplicate_click"
OUTSIDE_DATES = "outside_dates"
NOT_ACCEPTED = "not_accepted"
NO_SUCH_CLICK = "no_such_click"
OUTSIDE_ATTRIBUTION_WINDOW = "outside_attribution_window"
WRONG_BUSINESS = "wrong_business"
DUPLICATE_ORDER = "duplicate_order"
ORDER_REFUNDED = "order_refunded"  # a sale whose refund was recorded before it
BUDGET_EXHAUSTED = "budget_exhausted"
CAMPAIGN_NOT_ACTIVE = "campaign_not_active"
WRONG_TYPE = "wrong_type"

# Clocks of edge hosts drift a little; an event stamped further ahead than this is not believed.
FUTURE_SKEW_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Candidate:
    """One event as loaded for verification (ClickHouse row plus looked-up facts)."""

    event_id: str
    event_type: str
    ts_ms: int
    campaign_id: str | None  # None: the edge did not know the campaign (zero UUID)
    link_id: str | None = None
    creator_id: str | None = None
    supporter_id: str | None = None
    business_id: str | None = None
    click_id: str | None = None
    order_id: str | None = None
    value: Decimal | None = None
    currency: str | None = None
    ip: str = ""
    user_agent: str = ""
    is_bot: bool = False
    source: str = "redirect"
    prev_click_ms: int | None = None  # clicks: the previous human click, same visitor, same link
    click_ts_ms: int | None = None  # conversions: when the named click happened
    click_campaign_id: str | None = None  # conversions: the named click's campaign
    # Reports only (copied to Postgres with the decision; sql/postgres/0036), no rule reads them.
    first_visit: bool = False
    country: str = ""
    device_type: str = ""
    browser: str = ""
    os: str = ""
    referrer_host: str = ""


@dataclass(frozen=True)
class Campaign:
    id: str
    business_id: str
    objective: str
    payout: Decimal
    remaining: Decimal
    status: str
    start_ms: int | None
    end_ms: int | None
    history: tuple[tuple[int, str], ...]  # (changed_at ms, status), ascending
    accepted: frozenset[str]
    _changes: list[int] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._changes.extend(ms for ms, _ in self.history)

    def status_at(self, ms: int) -> str | None:
        """The status the campaign held at ``ms`` (None before it existed)."""
        i = bisect.bisect_right(self._changes, ms)
        return self.history[i - 1][1] if i else None


@dataclass(frozen=True)
class Rules:
    click_dedupe_s: int
    attribution_days: int

    @classmethod
    def from_settings(cls, settings) -> Rules:
        return cls(click_dedupe_s=settings.click_dedupe_s, attribution_days=settings.attribution_days)


@dataclass
class Verdict:
    accepted: list[Candidate] = field(default_factory=list)
    rejected: list[tuple[Candidate, str]] = field(default_factory=list)


def reject_reason(
    event: Candidate, campaign: Campaign | None, rules: Rules, now_ms: int
) -> str | None:
    """The first rule ``event`` breaks, or None; order-independent rules only."""
    if event.is_bot or event.source == "head":
        return BOT
    if campaign is None:
        return NO_SUCH_CLICK
    if event.event_type != campaign.objective:
        return WRONG_TYPE
    # A conversion's creator is the click's; without that click nothing else about it is known.
    if event.event_type != "click" and (event.click_ts_ms is None or event.click_campaign_id != campaign.id):
        return NO_SUCH_CLICK
    if campaign.status_at(event.ts_ms) != "active":
        return CAMPAIGN_NOT_ACTIVE
    if (
        (campaign.start_ms is not None and event.ts_ms < campaign.start_ms)
        or (campaign.end_ms is not None and event.ts_ms > campaign.end_ms)
        or event.ts_ms > now_ms + FUTURE_SKEW_MS
    ):
        return OUTSIDE_DATES
    if event.creator_id not in campaign.accepted:
        return NOT_ACCEPTED
    if event.event_type == "click":
        return _click_reason(event, rules)
    return _conversion_reason(event, campaign, rules)


def _click_reason(event: Candidate, rules: Rules) -> str | None:
    if event.prev_click_ms is not None and event.ts_ms - event.prev_click_ms < rules.click_dedupe_s * 1000:
        return DUPLICATE_CLICK
    return None


def _conversion_reason(event: Candidate, campaign: Campaign, rules: Rules) -> str | None:
    if event.business_id != campaign.business_id:
        return WRONG_BUSINESS
    age_ms = event.ts_ms - event.click_ts_ms
    if age_ms < 0 or age_ms > rules.attribution_days * 86_400_000:
        return OUTSIDE_ATTRIBUTION_WINDOW
    return None


def verify(
    events: list[Candidate],
    campaigns: dict[str, Campaign],
    rules: Rules,
    now_ms: int,
    paid_orders: set[tuple[str, str]] = frozenset(),
    refunded_orders: set[tuple[str, str]] = frozenset(),
) -> Verdict:
    """Split ``events`` into billable and rejected-with-reason.

    Events are judged in time order so the first of two with the same order
    id is the one that counts; ``paid_orders`` holds (campaign, order id)
    pairs already paid in earlier runs. ``refunded_orders`` holds (campaign
    or business id, order id) of refunds an earlier run found no sale for:
    the sale arrived after its own refund and is not paid.
    """
    verdict = Verdict()
    seen_orders: set[tuple[str, str]] = set(paid_orders)
    for event in sorted(events, key=lambda e: (e.ts_ms, e.event_id)):
        campaign = campaigns.get(event.campaign_id) if event.campaign_id else None
        reason = reject_reason(event, campaign, rules, now_ms)
        if reason is None and event.order_id is not None and event.event_type != "click":
            key = (campaign.id, event.order_id)
            if key in seen_orders:
                reason = DUPLICATE_ORDER
            elif event.event_type == "sale" and (
                key in refunded_orders or (campaign.business_id, event.order_id) in refunded_orders
            ):
                reason = ORDER_REFUNDED
            else:
                seen_orders.add(key)
        if reason is None:
            verdict.accepted.append(event)
        else:
            verdict.rejected.append((event, reason))
    return verdict
