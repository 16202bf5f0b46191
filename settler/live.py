"""Live sales: sales through a live event's link, verified and paid by the live rules (docs/live.md).

A sale is a live sale when its link, the one the settler derives for every
sale (its click's link, or the link the edge stamped when it named no
click), is a live link (``tracking_links.live_event_id``). The wire format
is unchanged: the business's ``POST /v1/live-events/{id}/sales`` stamps the
live link, a Stripe checkout carries a click through it. Live sales leave
the read before ``plan.decide``; the rest of a sale's rules are the same
(campaign active and in its dates, creator accepted, the business's own
report, the attribution window of a named click, an order paid once per
campaign and thus per event), plus the live window. Each is paid the
event's ``commission_pct`` of its amount, or else (a campaign paying per
sale) the campaign's payout, at the creator's fee of its time; one
``live_sales`` row and one transfer per sale (``oros_post_live_sales``,
sql/postgres/0115), so a refund reverses exactly that sale. Pure, but for
``load_live_events``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg

from oros.fees import FeeSchedule
from oros.money import round_money, split_fee
from oros.reasons import (
    BAD_PIXEL_SIGNATURE,
    BOT,
    BUDGET_EXHAUSTED,
    CAMPAIGN_NOT_ACTIVE,
    DUPLICATE_ORDER,
    LINK_DISABLED,
    NO_COMMISSION,
    NO_SUCH_CLICK,
    NOT_ACCEPTED,
    OUTSIDE_ATTRIBUTION_WINDOW,
    OUTSIDE_DATES,
    OUTSIDE_LIVE_WINDOW,
    UNSIGNED_PIXEL,
    WRONG_BUSINESS,
)

from .plan import Counts, Facts
from .verify import FUTURE_SKEW_MS, PIXEL, Campaign, Candidate, PaidPerClick, Rules, trust

ZERO = Decimal("0.00")
# A sale may complete this long after its event ended: a buyer who was at the checkout when the
# creator said goodbye still counts. The live window of a sale's time t: started_at <= t <= ended_at + grace,
# started_at taken to the whole second (Stripe stamps its events in whole seconds).
CHECKOUT_GRACE_MS = 10 * 60 * 1000

LIVE_LINKS_SQL = """
SELECT l.id::text AS link_id, e.id::text AS id, e.campaign_id::text AS campaign_id, e.creator_id::text AS creator_id,
       floor(extract(epoch FROM date_trunc('second', e.started_at)) * 1000)::bigint AS started_ms,
       floor(extract(epoch FROM e.ended_at) * 1000)::bigint AS ended_ms, e.commission_pct
  FROM tracking_links l JOIN live_events e ON e.id = l.live_event_id
 WHERE l.id = ANY(%s::uuid[])
"""


@dataclass(frozen=True)
class LiveEvent:
    id: str
    link_id: str
    campaign_id: str | None
    creator_id: str
    started_ms: int | None
    ended_ms: int | None
    commission_pct: Decimal | None

    def was_live(self, ms: int) -> bool:
        """Whether a sale at ``ms`` falls in the event's live window (open while it is live)."""
        return (self.started_ms is not None and ms >= self.started_ms
                and (self.ended_ms is None or ms <= self.ended_ms + CHECKOUT_GRACE_MS))


@dataclass(frozen=True)
class LiveSale:
    """One paid live sale: its live_sales row and transfer ids, drawn when it is planned."""

    event: Candidate
    live: LiveEvent
    payout: Decimal
    fee: Decimal
    sale_id: str
    transfer_id: str


@dataclass
class LiveDecided:
    """One campaign's verified live sales (campaign None: recorded rejected, without foreign keys)."""

    campaign: Campaign | None
    accepted: list[tuple[Candidate, LiveEvent]] = field(default_factory=list)
    rejected: list[tuple[Candidate, str]] = field(default_factory=list)


@dataclass(frozen=True)
class LivePlan:
    """What one campaign's live-sale transaction writes; reported like a ``plan.CampaignPlan``."""

    campaign_id: str | None
    paid: list[LiveSale]
    rejected: list[tuple[Candidate, str]]
    counts: Counts
    completes: bool = False  # a live sale never completes a campaign: the next settlement of its events does


def load_live_events(conn: psycopg.Connection, events: list[Candidate]) -> dict[str, LiveEvent]:
    """The live events of the sales' links, by link id."""
    links = sorted({e.link_id for e in events if e.event_type == "sale" and e.link_id})
    if not links:
        return {}
    return {r["link_id"]: LiveEvent(**r) for r in conn.execute(LIVE_LINKS_SQL, (links,))}


def split(events: list[Candidate], live: dict[str, LiveEvent]) -> tuple[list[Candidate], list[Candidate]]:
    """(the rest, the live sales) of a read."""
    rest, sales = [], []
    for event in events:
        (sales if event.event_type == "sale" and event.link_id in live else rest).append(event)
    return rest, sales


def decide(sales: list[Candidate], live: dict[str, LiveEvent], facts: Facts, rules: Rules,
           now_ms: int) -> list[LiveDecided]:
    """Verify live sales in time order (the first of an order counts), grouped per campaign, the unowned last.

    What the business posted is judged before a signed pixel (``verify.trust``); an unsigned pixel is never a
    live sale (``sale_reason``), so none can take an order from the business's post (docs/live.md)."""
    seen_orders = set(facts.paid_orders)
    seen_clicks = PaidPerClick(facts.paid_clicks)
    groups: dict[str | None, LiveDecided] = {}
    for event in sorted(sales, key=lambda e: (trust(e), e.ts_ms, e.event_id)):
        event_live = live[event.link_id]
        campaign = facts.campaigns.get(event.campaign_id) if event.campaign_id else None
        reason = sale_reason(event, event_live, campaign, rules, now_ms)
        if reason is None:
            if event.order_id is not None and (campaign.id, event.order_id) in seen_orders:
                reason = DUPLICATE_ORDER
            elif event.click_id is not None:
                reason = seen_clicks.reason(event)
        known = campaign is not None and event.creator_id in facts.users
        group = groups.setdefault(campaign.id if known else None, LiveDecided(campaign if known else None))
        if reason is None:
            if event.order_id is not None:
                seen_orders.add((campaign.id, event.order_id))
            if event.click_id is not None:
                seen_clicks.add(event)
            group.accepted.append((event, event_live))
        else:
            group.rejected.append((event, reason))
    for group in groups.values():  # paid earliest first while the budget lasts (plan_campaign)
        group.accepted.sort(key=lambda pair: (pair[0].ts_ms, pair[0].event_id))
    return sorted(groups.values(), key=lambda d: (d.campaign is None, d.campaign.id if d.campaign else ""))


def sale_reason(event: Candidate, live: LiveEvent, campaign: Campaign | None, rules: Rules,
                now_ms: int) -> str | None:
    """The first rule a live sale breaks, or None (its order id is checked by ``decide``)."""
    if event.is_bot or event.source == "head":
        return BOT
    if campaign is None or live.campaign_id != campaign.id:
        return NO_SUCH_CLICK
    # A named click must be a recorded click of this campaign; no click: the live link vouches for the creator.
    if event.click_id is not None and (event.click_ts_ms is None or event.click_campaign_id != campaign.id):
        return NO_SUCH_CLICK
    if campaign.status_at(event.ts_ms) != "active":
        return CAMPAIGN_NOT_ACTIVE
    if ((campaign.start_ms is not None and event.ts_ms < campaign.start_ms)
            or (campaign.end_ms is not None and event.ts_ms > campaign.end_ms)
            or event.ts_ms > now_ms + FUTURE_SKEW_MS):
        return OUTSIDE_DATES
    if event.creator_id != live.creator_id or event.creator_id not in campaign.accepted:
        return NOT_ACCEPTED
    disabled_ms = campaign.disabled_links.get(event.link_id)
    if disabled_ms is not None and event.ts_ms >= disabled_ms:
        return LINK_DISABLED
    if event.source == PIXEL:
        # Never an unsigned one, pixel_billable or not: a live commission may be a percent of the pixel's own
        # value, and a live event pays an order once, so a made-up order would shadow the business's post.
        if event.pixel_sig is None:
            return UNSIGNED_PIXEL
        if not campaign.signed(event):
            return BAD_PIXEL_SIGNATURE
    elif event.business_id != campaign.business_id:
        return WRONG_BUSINESS
    if event.click_id is not None:
        age_ms = event.ts_ms - event.click_ts_ms
        if age_ms < 0 or age_ms > rules.attribution_days * 86_400_000:
            return OUTSIDE_ATTRIBUTION_WINDOW
    if not live.was_live(event.ts_ms):
        return OUTSIDE_LIVE_WINDOW
    if commission(event, live, campaign.objective, campaign.payout) <= 0:
        return NO_COMMISSION
    return None


def commission(event: Candidate, live: LiveEvent, objective: str, payout: Decimal) -> Decimal:
    """What the campaign pays for a live sale: the event's percent of the amount, else the payout per sale."""
    if live.commission_pct is not None:
        return round_money(event.value * live.commission_pct / 100) if event.value is not None else ZERO
    return payout if objective == "sale" else ZERO


def with_orders(facts: Facts, decided: list[LiveDecided]) -> Facts:
    """``facts`` with the live sales' orders taken, so no other sale of the read is paid for them too."""
    taken = {(d.campaign.id, e.order_id) for d in decided if d.campaign for e, _ in d.accepted if e.order_id}
    if not taken:
        return facts
    return dataclasses.replace(facts, paid_orders=set(facts.paid_orders) | taken)


def plan_campaign(decided: LiveDecided, *, remaining: Decimal, payout: Decimal, fees: FeeSchedule) -> LivePlan:
    """Pay the accepted sales earliest first while the budget covers each; the rest are budget_exhausted."""
    paid: list[LiveSale] = []
    rejected = list(decided.rejected)
    exhausted = False
    for event, live in decided.accepted:  # already in time order
        amount = commission(event, live, decided.campaign.objective, payout)
        exhausted = exhausted or amount > remaining
        if exhausted or amount <= 0:
            rejected.append((event, BUDGET_EXHAUSTED if exhausted else NO_COMMISSION))
            continue
        remaining -= amount
        fee = split_fee(amount, fees.pct(event.creator_id, event.ts_ms))[1]
        paid.append(LiveSale(event, live, amount, fee, str(uuid.uuid4()), str(uuid.uuid4())))
    amount = sum((s.payout for s in paid), ZERO)
    counts = Counts(paid=len(paid), rejected=len(rejected), amount=amount, fees=sum((s.fee for s in paid), ZERO),
                    by_reason=Counter(reason for _, reason in rejected), live_paid=len(paid), live_amount=amount)
    return LivePlan(decided.campaign.id if decided.campaign else None, paid, rejected, counts)


def plan_all(decided: list[LiveDecided], fees: FeeSchedule) -> list[LivePlan]:
    """Every campaign's live sales planned against the budget it was loaded with: a dry run's plan."""
    return [plan_campaign(d, remaining=d.campaign.remaining if d.campaign else ZERO,
                          payout=d.campaign.payout if d.campaign else ZERO, fees=fees) for d in decided]

