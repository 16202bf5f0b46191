"""Which events are billable: the verification rules of DESIGN.md as pure functions.

Everything a rule needs is loaded beforehand (``settler.load``): the campaign
with its status history and accepted creators, and per event the facts only
ClickHouse knows (the previous click from the same IP on the same link, the
click a conversion names). ``now`` is passed in, so tests replace the clock.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from oros import pixel
from oros.money import fmt
from oros.reasons import (
    BAD_PIXEL_SIGNATURE,
    BOT,
    CAMPAIGN_NOT_ACTIVE,
    DUPLICATE_CLICK,
    DUPLICATE_CONVERSION,
    DUPLICATE_ORDER,
    LINK_DISABLED,
    NO_SUCH_CLICK,
    NOT_ACCEPTED,
    OUTSIDE_ATTRIBUTION_WINDOW,
    OUTSIDE_DATES,
    UNSIGNED_PIXEL,
    WRONG_BUSINESS,
    WRONG_TYPE,
)

PIXEL = "pixel"  # the source of browser pixel events (tracker/conversions.py)

# Clocks of edge hosts drift a little; an event stamped further ahead than this is not believed.
FUTURE_SKEW_MS = 5 * 60 * 1000


class Candidate(NamedTuple):
    """One event as loaded for verification (ClickHouse row plus looked-up facts).

    A tuple, not a dataclass: a run builds a million of them, straight from
    the rows of one query (``settler.load``), and a tuple is built in C.
    """

    event_id: str
    event_type: str
    ts_ms: int
    campaign_id: str | None  # None: the edge did not know the campaign (zero UUID)
    link_id: str | None = None  # a conversion's: its click's
    creator_id: str | None = None  # a conversion's: its click's
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
    pixel_sig: str | None = None  # pixels: the sig the browser sent
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
    # Share links (settler.plan): the address of the click that came through the link (the event itself, or
    # the click a conversion names), as ClickHouse stores it and as its keyed hash ('' when unknown).
    visit_ip: str = ""
    visit_ip_hash: str = ""
    # Human clicks: the next click from the same visitor on the same link that UTC day (reports only).
    later_visit_id: str | None = None


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
    pixel_billable: bool = False  # unsigned pixels may be paid (the business opted in)
    # Links disabled when the campaign's hosts narrowed (0032): link id -> disabled at (ms).
    disabled_links: dict[str, int] = field(default_factory=dict, compare=False)
    # The business's pixel secrets: (secret, valid until ms, None while current).
    pixel_secrets: tuple[tuple[str, int | None], ...] = field(default=(), repr=False)
    _changes: list[int] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._changes.extend(ms for ms, _ in self.history)

    def status_at(self, ms: int) -> str | None:
        """The status the campaign held at ``ms`` (None before it existed)."""
        i = bisect.bisect_right(self._changes, ms)
        return self.history[i - 1][1] if i else None

    def signed(self, event: Candidate) -> bool:
        """Whether a secret the business held when the pixel arrived signed it."""
        valid = [secret for secret, until_ms in self.pixel_secrets if until_ms is None or event.ts_ms < until_ms]
        msg = pixel.message(event.click_id, event.event_type, event.order_id, fmt(event.value))
        return pixel.signed_by(valid, event.pixel_sig, msg)


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
    # A conversion's link is its click's: once that link is disabled, nothing more through it pays.
    disabled_ms = campaign.disabled_links.get(event.link_id)
    if disabled_ms is not None and event.ts_ms >= disabled_ms:
        return LINK_DISABLED
    if event.event_type == "click":
        return _click_reason(event, rules)
    return _conversion_reason(event, campaign, rules)


def _click_reason(event: Candidate, rules: Rules) -> str | None:
    if event.prev_click_ms is not None and event.ts_ms - event.prev_click_ms < rules.click_dedupe_s * 1000:
        return DUPLICATE_CLICK
    return None


def _conversion_reason(event: Candidate, campaign: Campaign, rules: Rules) -> str | None:
    if event.source == PIXEL:
        # Nobody posted a pixel: the business's signature, or its opt-in, vouches for it.
        if event.pixel_sig is not None:
            if not campaign.signed(event):
                return BAD_PIXEL_SIGNATURE
        elif not campaign.pixel_billable:
            return UNSIGNED_PIXEL
    elif event.business_id != campaign.business_id:
        return WRONG_BUSINESS
    age_ms = event.ts_ms - event.click_ts_ms
    if age_ms < 0 or age_ms > rules.attribution_days * 86_400_000:
        return OUTSIDE_ATTRIBUTION_WINDOW
    return None


def unsigned_pixel(event: Candidate) -> bool:
    """A pixel nobody vouches for: its click id and order id are whatever the sender made up. Its order id
    claims the order among unsigned pixels only (one paid per order: sql/postgres/0169), never against the
    business's authenticated post of that order, which is still paid, in this run or a later one
    (sql/postgres/0167); it is paid at most once per click."""
    return event.source == PIXEL and event.pixel_sig is None


class PaidOrders:
    """The (campaign, order id) pairs claimed: by an authenticated post or signed pixel (``claimed``), and
    by an unsigned pixel (``pixel``), which blocks only other unsigned pixels."""

    def __init__(self, claimed: set[tuple[str, str]], pixel: set[tuple[str, str]]) -> None:
        self.claimed = set(claimed)
        self.pixel = set(pixel)

    def reason(self, event: Candidate, campaign: Campaign) -> str | None:
        if event.order_id is None:
            return None
        order = (campaign.id, event.order_id)
        if order in self.claimed or (unsigned_pixel(event) and order in self.pixel):
            return DUPLICATE_ORDER
        return None

    def add(self, event: Candidate, campaign: Campaign) -> None:
        if event.order_id is not None:
            (self.pixel if unsigned_pixel(event) else self.claimed).add((campaign.id, event.order_id))


def trust(event: Candidate) -> int:
    """Who vouches for an event, best first: a poster that authenticated, a signed pixel, an unsigned one."""
    if event.source != PIXEL:
        return 0
    return 2 if unsigned_pixel(event) else 1


class PaidPerClick:
    """What each click was paid for: a conversion campaign pays a click once, a sale campaign once per
    order id ('' for none). An unsigned pixel's order id is anyone's guess: it is paid only for a click
    with nothing paid yet."""

    def __init__(self, paid: set[tuple[str, str]], superseded: set[tuple[str, str]] = frozenset()) -> None:
        self.orders = set(paid)
        self.clicks = {click for click, _ in paid}
        # click -> the order ids an unsigned pixel was paid for on it in an earlier run: the business's post of
        # that order on that click is paid instead (settler.supersede), once, and only while this run paid
        # nothing else that the click rule counts.
        self.superseded: dict[str, set[str]] = defaultdict(set)
        for click, order in superseded:
            self.superseded[click].add(order)

    def reason(self, event: Candidate) -> str | None:
        if not unsigned_pixel(event) and event.order_id in self.superseded.get(event.click_id, ()):
            return None
        if event.event_type == "conversion" or unsigned_pixel(event):
            seen = event.click_id in self.clicks
        else:
            seen = (event.click_id, event.order_id or "") in self.orders
        return DUPLICATE_CONVERSION if seen else None

    def add(self, event: Candidate) -> None:
        self.orders.add((event.click_id, event.order_id or ""))
        self.clicks.add(event.click_id)
        if event.event_type == "conversion":
            self.superseded.pop(event.click_id, None)  # a click pays one conversion
        elif event.click_id in self.superseded:
            self.superseded[event.click_id].discard(event.order_id)


def verify(
    events: list[Candidate],
    campaigns: dict[str, Campaign],
    rules: Rules,
    now_ms: int,
    paid_orders: set[tuple[str, str]] = frozenset(),
    paid_clicks: set[tuple[str, str]] = frozenset(),
    pixel_orders: set[tuple[str, str]] = frozenset(),
    superseded: set[tuple[str, str]] = frozenset(),
) -> Verdict:
    """Split ``events`` into billable and rejected-with-reason.

    Events are judged in time order so the first of two with the same order
    id (or click) is the one that counts -- except that what an authenticated
    poster sent is judged before any pixel, and a signed pixel before an
    unsigned one, so a pixel never takes the place of the business's own
    report. An unsigned pixel is paid only for an order nobody claimed, and
    claims it against other unsigned pixels only (``unsigned_pixel``).
    ``paid_orders`` holds the (campaign, order id) pairs claimed in earlier
    runs, ``pixel_orders`` those paid to unsigned pixels, ``paid_clicks``
    (click id, order id or '') the conversions and sales already paid per
    click, ``superseded`` the (click id, order id) an unsigned pixel was paid
    for, where the business's post of that order is paid all the same (it
    supersedes the pixel: ``settler.supersede``). A sale whose refund came first is paid like any other; the refund
    is applied to it once it is (``settler.refunds``).
    """
    verdict = Verdict()
    seen_orders = PaidOrders(paid_orders, pixel_orders)
    seen_clicks = PaidPerClick(paid_clicks, superseded)
    # Only conversions and sales depend on what came before them; clicks need no order.
    clicks = [e for e in events if e.event_type == "click"]
    rest = sorted((e for e in events if e.event_type != "click"), key=lambda e: (trust(e), e.ts_ms, e.event_id))
    for event in itertools.chain(clicks, rest):
        campaign = campaigns.get(event.campaign_id) if event.campaign_id else None
        reason = reject_reason(event, campaign, rules, now_ms)
        if reason is None and event.event_type != "click":
            reason = seen_orders.reason(event, campaign) or seen_clicks.reason(event)
            if reason is None:
                seen_clicks.add(event)
                seen_orders.add(event, campaign)
        if reason is None:
            verdict.accepted.append(event)
        else:
            verdict.rejected.append((event, reason))
    return verdict
