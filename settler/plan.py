"""Decide: verify the loaded events and allocate each campaign's budget, into a settlement plan. Pure.

``decide`` runs the verification rules (``settler.verify``) over a read's
events and groups the verdicts per campaign. ``settle_campaign`` allocates
one campaign's budget to its accepted events (the earliest first) and
groups the paid ones into transfers: the plan of what one campaign's
transaction writes, with its counts. A dry run plans every campaign against
the budget it loaded and posts nothing; a live run plans each campaign
again under its row lock (``settler.post``), against the budget it locked.
Each event is charged the creator's fee of the moment it happened
(``oros.fees``: a creator tier lowers it for its span), and an event through
a supporter's share link pays the supporter its reward out of the creator's
net, unless the click came from where the supporter made the link
(``Share``), so paid events are grouped into transfers per creator, fee and
share link. Either way the numbers of the run report come from here:
``Counts`` is the one place events are counted.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from oros.clientip import visitor_key
from oros.fees import FeeSchedule
from oros.money import share_reward, split_fee
from oros.reasons import BUDGET_EXHAUSTED

from .budget import allocate
from .verify import Campaign, Candidate, Rules, verify

ZERO = Decimal("0.00")


@dataclass(frozen=True)
class Share:
    """A supporter's share link (sql/postgres/0110): whose, its percent, where the supporter made it."""

    link_id: str
    supporter_id: str
    pct: Decimal
    # The keyed hash of the visitor (oros.clientip.visitor_key: IPv4 address, IPv6 /64), as ingest hashes
    # clicks'; None when made under another key than the run's (sql/postgres/0180).
    ip_hash: str | None
    ip: str | None  # the address itself; None while addresses are anonymized

    def earns_on(self, event: Candidate) -> bool:
        """Whether the click through the link is known not to be the supporter's own: a visitor key of the
        click (its hash, or the stored address's) is known and differs from where the supporter made the link.
        A click whose address is no longer known (its hash expired while the stored address is truncated, or
        the link's hash was made under another key) earns nothing: the supporter never earns on its own
        clicks."""
        known = False
        if event.visit_ip_hash and self.ip_hash:
            if event.visit_ip_hash == self.ip_hash:
                return False
            known = True
        if event.visit_ip and self.ip:
            if _visitor(event.visit_ip) == _visitor(self.ip):
                return False
            known = True
        return known


def _visitor(text: str) -> str:
    """The visitor key of an address however it is spelled (Postgres and ClickHouse may spell one differently)."""
    try:
        return visitor_key(str(ipaddress.ip_address(text)))
    except ValueError:
        return text


@dataclass(frozen=True)
class Facts:
    """What Postgres knows about a read's events (``settler.load.load_facts``)."""

    campaigns: dict[str, Campaign]
    users: set[str]  # creators that exist
    links: set[str]  # links of these campaigns that exist
    fees: FeeSchedule  # the creators' fees over time, read after the events
    shares: dict[str, Share] = field(default_factory=dict)  # the share links among the links, by link id
    paid_orders: set[tuple[str, str]] = frozenset()  # (campaign, order id) paid before
    pixel_orders: set[tuple[str, str]] = frozenset()  # (campaign, order id) paid before to an unsigned pixel
    # (campaign, order id) -> (event id, click id) of the unsigned pixels paid for it before, not as live sales:
    # the business's own post of the order supersedes them (settler.supersede).
    pixel_sales: dict[tuple[str, str], list[tuple[str, str | None]]] = field(default_factory=dict)
    paid_clicks: set[tuple[str, str]] = frozenset()  # (click id, order id or '') paid before
    early_refunds: list[Candidate] = ()  # refunds recorded before any sale of their order was paid


@dataclass
class Counts:
    """Events paid and rejected (by reason), money paid, refunds applied: what a run report adds up."""

    paid: int = 0
    rejected: int = 0
    amount: Decimal = ZERO
    fees: Decimal = ZERO
    by_reason: Counter = field(default_factory=Counter)
    refunds_reversed: int = 0
    refunds_rejected: int = 0
    refunds_amount: Decimal = ZERO
    # What the applied refunds took back from supporters: share rewards (out of the payouts above) and boost
    # rewards (a completed campaign's, lowered with what its pool got back: sql/postgres/0155).
    refunds_share_rewards: int = 0
    refunds_share_reward_amount: Decimal = ZERO
    refunds_boost_rewards: int = 0
    refunds_boost_reward_amount: Decimal = ZERO
    # Parts of the paid ones above: events that earned a share reward (and the rewards rows, one per
    # rewarded transfer), and live sales (docs/live.md).
    share_rewarded: int = 0
    share_rewards: int = 0
    share_reward_amount: Decimal = ZERO
    live_paid: int = 0
    live_amount: Decimal = ZERO

    def add(self, other: Counts) -> None:
        self.paid += other.paid
        self.rejected += other.rejected
        self.amount += other.amount
        self.fees += other.fees
        self.by_reason.update(other.by_reason)
        self.share_rewarded += other.share_rewarded
        self.share_rewards += other.share_rewards
        self.share_reward_amount += other.share_reward_amount
        self.live_paid += other.live_paid
        self.live_amount += other.live_amount
        self.refunds_reversed += other.refunds_reversed
        self.refunds_rejected += other.refunds_rejected
        self.refunds_amount += other.refunds_amount
        self.refunds_share_rewards += other.refunds_share_rewards
        self.refunds_share_reward_amount += other.refunds_share_reward_amount
        self.refunds_boost_rewards += other.refunds_boost_rewards
        self.refunds_boost_reward_amount += other.refunds_boost_reward_amount

    def refund(self, reason: str | None, amount: Decimal, *, share_reward: Decimal = ZERO, boost_rewards: int = 0,
               boost_reward_amount: Decimal = ZERO) -> None:
        """One refund decided: applied (``reason`` None, ``amount`` of payout taken back, ``share_reward`` of it
        from a share link's supporter, ``boost_reward_amount`` from ``boost_rewards`` boosters) or rejected."""
        if reason is None:
            self.refunds_reversed += 1
            self.refunds_amount += amount
            self.refunds_share_rewards += share_reward > 0
            self.refunds_share_reward_amount += share_reward
            self.refunds_boost_rewards += boost_rewards
            self.refunds_boost_reward_amount += boost_reward_amount
        else:
            self.refunds_rejected += 1
            self.by_reason[reason] += 1


@dataclass(frozen=True)
class Decided:
    """One campaign's verdicts before its budget is allocated (campaign None: events no known campaign,
    or a creator Postgres does not know, owns; they are recorded rejected, without foreign keys)."""

    campaign: Campaign | None
    accepted: list[Candidate] = field(default_factory=list)
    rejected: list[tuple[Candidate, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Decisions:
    """A read's verdicts: per campaign (sorted by id, the unowned last), and its refunds in time order."""

    campaigns: list[Decided]
    refunds: list[Candidate]  # the read's refunds and the early ones, applied after the sales are paid
    early_refunds: frozenset[str]  # ids among ``refunds`` recorded before (decided again, not inserted)
    fees: FeeSchedule
    shares: dict[str, Share] = field(default_factory=dict)
    pixel_sales: dict[tuple[str, str], list[tuple[str, str | None]]] = field(default_factory=dict)  # Facts'


@dataclass(frozen=True)
class Transfer:
    """One ledger transfer of a settlement: one per (campaign, creator, fee, share link, run), or one per sale."""

    id: str
    creator_id: str
    fee: Decimal  # the platform's part of each event's payout
    events: list[Candidate]
    share: str | None = None  # the share link whose supporter earns ``reward`` on each event (None: no reward)
    reward: Decimal = ZERO  # out of each event's net


@dataclass(frozen=True)
class CampaignPlan:
    """What one campaign's transaction writes: every decided event, the transfers paying the paid ones."""

    campaign_id: str | None
    payout: Decimal
    paid: list[Candidate]
    rejected: list[tuple[Candidate, str]]  # budget_exhausted included
    transfers: list[Transfer]
    completes: bool  # an active campaign that can no longer pay one action
    counts: Counts


def decide(events: list[Candidate], facts: Facts, rules: Rules, now_ms: int) -> Decisions:
    """Verify a read's events (its refunds are set aside) and group the verdicts per campaign."""
    refunds = [e for e in events if e.event_type == "refund"]
    # A link id Postgres does not know (deleted since) stays in ClickHouse, never a foreign key here; the
    # supporter recorded is the link's, as Postgres knows it.
    billable = [_known_link(e, facts) for e in events if e.event_type != "refund"]
    verdict = verify(billable, facts.campaigns, rules, now_ms, facts.paid_orders, facts.paid_clicks,
                     facts.pixel_orders, superseded_clicks(facts.pixel_sales))
    accepted: dict[str, list[Candidate]] = defaultdict(list)
    rejected: dict[str | None, list[tuple[Candidate, str]]] = defaultdict(list)
    for event in verdict.accepted:
        accepted[event.campaign_id].append(event)
    for event, reason in verdict.rejected:
        known = event.campaign_id in facts.campaigns and (event.creator_id is None or event.creator_id in facts.users)
        rejected[event.campaign_id if known else None].append((event, reason))
    ids = sorted(set(accepted) | {c for c in rejected if c is not None})
    campaigns = [Decided(facts.campaigns[c], accepted.get(c, []), rejected.get(c, [])) for c in ids]
    if rejected.get(None):
        campaigns.append(Decided(None, [], rejected[None]))
    return Decisions(campaigns=campaigns,
                     refunds=sorted([*facts.early_refunds, *refunds], key=lambda e: (e.ts_ms, e.event_id)),
                     early_refunds=frozenset(e.event_id for e in facts.early_refunds), fees=facts.fees,
                     shares=facts.shares, pixel_sales=facts.pixel_sales)


def superseded_clicks(pixel_sales: dict[tuple[str, str], list[tuple[str, str | None]]]) -> set[tuple[str, str]]:
    """(click id, order id) an unsigned pixel was paid for, which the business's post of that order on that
    click supersedes rather than duplicates."""
    return {(click, order) for (_, order), rows in pixel_sales.items() for _, click in rows if click}


def _known_link(event: Candidate, facts: Facts) -> Candidate:
    link = event.link_id if event.link_id is None or event.link_id in facts.links else None
    share = facts.shares.get(link) if link else None
    supporter = share.supporter_id if share else None
    if link == event.link_id and supporter == event.supporter_id:
        return event
    return event._replace(link_id=link, supporter_id=supporter)


def settle_campaign(decided: Decided, *, remaining: Decimal, payout: Decimal, status: str,
                    fees: FeeSchedule, shares: dict[str, Share] | None = None) -> CampaignPlan:
    """Allocate ``remaining`` to the campaign's accepted events, earliest first, and plan its transfers."""
    allocation = allocate(decided.accepted, remaining, payout)
    rejected = decided.rejected + [(e, BUDGET_EXHAUSTED) for e in allocation.exhausted]
    campaign = decided.campaign
    per_sale = campaign is not None and campaign.objective == "sale"
    planned = transfers(allocation.paid, per_sale=per_sale, payout=payout, fees=fees, shares=shares or {},
                        members=campaign.accepted if campaign else frozenset())
    rewarded = [t for t in planned if t.share]
    counts = Counts(paid=len(allocation.paid), rejected=len(rejected), amount=allocation.spent,
                    fees=sum((t.fee * len(t.events) for t in planned), ZERO),
                    by_reason=Counter(reason for _, reason in rejected),
                    share_rewarded=sum(len(t.events) for t in rewarded), share_rewards=len(rewarded),
                    share_reward_amount=sum((t.reward * len(t.events) for t in rewarded), ZERO))
    return CampaignPlan(
        campaign_id=campaign.id if campaign else None, payout=payout, paid=allocation.paid, rejected=rejected,
        transfers=planned, completes=campaign is not None and status == "active" and allocation.exhausts(payout),
        counts=counts,
    )


def plan_all(decisions: Decisions) -> list[CampaignPlan]:
    """Every campaign planned against the budget and status it was loaded with: a dry run's plan."""
    return [settle_campaign(d, remaining=d.campaign.remaining if d.campaign else ZERO,
                            payout=d.campaign.payout if d.campaign else ZERO,
                            status=d.campaign.status if d.campaign else "", fees=decisions.fees,
                            shares=decisions.shares)
            for d in decisions.campaigns]


def transfers(paid: list[Candidate], *, per_sale: bool, payout: Decimal, fees: FeeSchedule,
              shares: dict[str, Share], members: frozenset[str] = frozenset()) -> list[Transfer]:
    """Paid events grouped into transfers: one per sale (a refund reverses exactly that sale), else one
    per creator, fee and rewarded share link (a million clicks cost a few thousand ledger rows), each event
    at its creator's fee of its time, and its share link's reward unless the supporter clicked it itself
    or has since become one of the campaign's creators (``members``: who may not share its links)."""
    fee_at: dict[Decimal, Decimal] = {}  # the fee per percent: one payout, few percents

    def fee(pct: Decimal) -> Decimal:
        if pct not in fee_at:
            fee_at[pct] = split_fee(payout, pct)[1]
        return fee_at[pct]

    def terms(event: Candidate) -> tuple[str, Decimal, str | None, Decimal]:
        event_fee = fee(fees.pct(event.creator_id, event.ts_ms))
        share = shares.get(event.link_id) if event.supporter_id else None
        earns = share is not None and share.supporter_id not in members and share.earns_on(event)
        reward = share_reward(payout, event_fee, share.pct) if earns else ZERO
        return event.creator_id, event_fee, share.link_id if reward > 0 else None, reward

    if per_sale:
        return [Transfer(str(uuid.uuid4()), creator, event_fee, [e], share, reward)
                for e in paid for creator, event_fee, share, reward in (terms(e),)]
    groups: dict[tuple[str, Decimal, str | None, Decimal], list[Candidate]] = defaultdict(list)
    for event in paid:
        groups[terms(event)].append(event)
    return [Transfer(str(uuid.uuid4()), key[0], key[1], groups[key], key[2], key[3])
            for key in sorted(groups, key=lambda k: (k[0], k[1], k[2] or "", k[3]))]
