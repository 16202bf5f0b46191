"""Memberships: the platform's tiers (oros/tiers.py) as monthly Stripe subscriptions.

``POST /v1/memberships {membership_type}`` checks the caller's role for the
tier, asks Stripe for the subscription and records the membership
``pending`` (nothing applies until its first invoice is paid: the webhook,
admin_api.billing_events, makes it ``active``). ``POST
/v1/memberships/{id}/cancel`` cancels at the end of the paid period (a
pending one at once); Stripe's ``customer.subscription.deleted`` then ends
it ``canceled`` (or ``expired``, when Stripe ended it for non-payment).

The tiers' effects: the creator fee cap is read through the fee history
(oros/fees.py); ``ensure_may_activate`` is the business tier's campaign limit
(with the dispute freeze of sql/postgres/0080), called when a campaign is
activated; supporter_plus is read by the communities code.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import psycopg
from aiohttp import web
from pydantic import BaseModel, Field

from oros import tiers
from oros.connections import as_user
from oros.httperrors import conflict, not_found
from oros.locks import ACTIVATION_CLASS
from oros.money import fmt
from oros.wire import Money, OneOf, Uuid

from . import billing, idempotency
from .auth import caller
from .pages import Page, PageQuery, fetch_page
from .payload import parse, parse_query, path_id, respond
from .routing import Routes
from .typedefs import PG_POOL, SETTINGS

routes = Routes()

STATUSES = ("pending", "active", "canceled", "expired")
MEMBERSHIP_COLUMNS = """id, user_id, membership_type, status, billing_provider_id, started_at, ends_at,
    cancel_at_period_end, current_period_end, created_at"""
_IDEMPOTENT_MEMBERSHIP = uuid.UUID("9d2b7f0c-6a14-4f3e-8c55-1e7a2b9c4d60")
_LIVE_SQL = """SELECT id, status FROM memberships
                WHERE user_id = %(me)s AND membership_type = %(type)s AND status IN ('pending', 'active')
                  AND (ends_at IS NULL OR ends_at > now())"""
_OPEN_SQL = f"SELECT {MEMBERSHIP_COLUMNS} FROM oros_open_membership(%(id)s, %(type)s, %(sub)s)"
_MINE_SQL = f"SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE id = %(id)s AND user_id = %(me)s"
_CANCEL_SQL = f"SELECT {MEMBERSHIP_COLUMNS} FROM oros_request_membership_cancel(%(id)s, %(period_end)s)"
_BLOCKER_SQL = "SELECT oros_activation_blocker(%(id)s) AS blocker"
_ACTIVE_SQL = """
SELECT (SELECT count(*) FROM campaigns WHERE business_id = %(b)s AND status = 'active' AND id <> %(id)s) AS active,
       array(SELECT membership_type FROM memberships WHERE user_id = %(b)s AND status = 'active'
                AND (ends_at IS NULL OR ends_at > now())) AS tiers
"""
_BLOCKERS = {
    "campaign_frozen": "a card payment that funded this campaign is disputed; it stays frozen until the dispute "
                       "closes",
    "business_owes": "the business owes the platform for a disputed payment; settle it with finance first",
}


class MembershipIn(BaseModel):
    membership_type: OneOf(*tiers.TIERS) = Field(description="creator_plus and creator_pro: creators; "
                                                             "supporter_plus: supporters; business_growth: businesses")


class Membership(BaseModel):
    """The membership"""

    id: Uuid
    user_id: Uuid
    membership_type: Literal[tuple(tiers.TIERS)]
    status: Literal[STATUSES]
    billing_provider_id: str | None = Field(description="the Stripe subscription")
    started_at: datetime | None
    ends_at: datetime | None
    cancel_at_period_end: bool
    current_period_end: datetime | None
    created_at: datetime
    price: Money = Field(description="what the tier costs a month, in usd")
    client_secret: str | None = Field(None, description="on creation: what Stripe.js pays the first invoice with")


class TierInfo(BaseModel):
    """A tier: who may subscribe, its monthly price, and what it does while active (oros/tiers.py)"""

    name: Literal[tuple(tiers.TIERS)]
    role: str = Field(description="the role a subscriber must hold")
    monthly_price: Money = Field(description="usd, billed by Stripe every month")
    fee_pct_cap: Money | None = Field(description="the creator's platform fee is at most this percent")
    max_active_campaigns: int | None = Field(description="a business may run this many campaigns at once")
    unlocks_supporter_posts: bool = Field(description="unlocks the supporter-only posts of the member's "
                                                      "communities")


class TierList(BaseModel):
    items: list[TierInfo]
    base_active_campaigns: int = Field(description="a business's limit without business_growth")


@routes.get("/v1/membership-tiers", "The membership tiers, their prices and effects (public)",
            responses={200: TierList}, access="public")
async def list_tiers(request: web.Request) -> web.Response:
    return respond({"items": [_tier(tier) for tier in tiers.TIERS.values()],
                    "base_active_campaigns": tiers.BASE_ACTIVE_CAMPAIGNS})


def _tier(tier: tiers.Tier) -> dict:
    return {"name": tier.name, "role": tier.role, "monthly_price": fmt(tier.monthly_price),
            "fee_pct_cap": None if tier.fee_pct_cap is None else fmt(tier.fee_pct_cap),
            "max_active_campaigns": tier.max_active_campaigns, "unlocks_supporter_posts": tier.unlocks_supporter_posts}


def _product(tier: tiers.Tier) -> tuple[str, str]:
    return f"oros_tier_{tier.name}", f"OROS {tier.name.replace('_', ' ')}"


def _membership(row: dict) -> dict:
    return {**row, "price": fmt(tiers.TIERS[row["membership_type"]].monthly_price)}


@routes.post("/v1/memberships", "Subscribe to a tier (creator_plus and creator_pro: creators; supporter_plus: "
             "supporters; business_growth: businesses); pending until Stripe confirms its first payment",
             body=MembershipIn, headers=(idempotency.IDEMPOTENCY_KEY,), responses={201: Membership})
async def create_membership(request: web.Request) -> web.Response:
    who = await caller(request)
    tier = tiers.TIERS[(await parse(MembershipIn, request)).membership_type]
    who.require(tier.role)
    billing.require_stripe(request.app[SETTINGS])
    pool = request.app[PG_POOL]

    async def subscribe(key: str | None) -> tuple[str, billing.Subscribed]:
        # After the replay lookup: a retry of the request that opened it gets its answer, not this refusal.
        async with as_user(pool, who.id) as conn:
            live = await (await conn.execute(_LIVE_SQL, {"me": who.id, "type": tier.name})).fetchone()
        if live is not None:
            raise conflict("membership_exists", f"you already have a {live['status']} {tier.name} membership "
                           f"({live['id']}); cancel it first", "membership_type")
        membership_id = idempotency.derived_id(_IDEMPOTENT_MEMBERSHIP, who.id, key)
        async with billing.client(request) as stripe_client:
            customer = await billing.customer(stripe_client, pool, who.id)
            product = await billing.product(stripe_client, *_product(tier))
            subscribed = await billing.subscribe(
                stripe_client, customer_id=customer, product_id=product, amount=tier.monthly_price,
                metadata={"oros_membership_id": membership_id, "oros_membership_type": tier.name},
                key=f"membership:{membership_id}")
        return membership_id, subscribed

    async def record(conn: psycopg.AsyncConnection, subscribed: tuple[str, billing.Subscribed]) -> dict:
        membership_id, made = subscribed
        try:
            row = await (await conn.execute(_OPEN_SQL, {
                "id": membership_id, "type": tier.name, "sub": made.subscription_id})).fetchone()
        except psycopg.errors.UniqueViolation:
            raise conflict("membership_exists", f"a {tier.name} membership was opened concurrently",
                           "membership_type") from None
        return {**_membership(row), "client_secret": made.client_secret}

    return await idempotency.once(request, who.id, record, before=subscribe)


@routes.get("/v1/me/memberships", "The caller's memberships, newest first", query=PageQuery,
            responses={200: Page[Membership]})
async def my_memberships(request: web.Request) -> web.Response:
    who = await caller(request)
    query = parse_query(PageQuery, request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        page = await fetch_page(conn, f"SELECT {MEMBERSHIP_COLUMNS} FROM memberships", ["user_id = %(me)s"],
                                {"me": who.id}, query)
    page["items"] = [_membership(row) for row in page["items"]]
    return respond(page)


@routes.post("/v1/memberships/{id}/cancel", "Cancel a membership at the end of its paid period (a pending one at "
             "once); canceling again changes nothing", responses={200: Membership})
async def cancel_membership(request: web.Request) -> web.Response:
    who = await caller(request)
    membership_id = path_id(request)
    pool = request.app[PG_POOL]
    async with as_user(pool, who.id) as conn:
        row = await (await conn.execute(_MINE_SQL, {"id": membership_id, "me": who.id})).fetchone()
    if row is None:
        raise not_found("membership")
    if row["status"] in ("canceled", "expired") or row["cancel_at_period_end"]:
        return respond(_membership(row))
    billing.require_stripe(request.app[SETTINGS])
    pending = row["status"] == "pending"
    async with billing.client(request) as stripe_client:
        period_end = await billing.cancel(stripe_client, row["billing_provider_id"], at_period_end=not pending,
                                          key=f"cancel:{membership_id}")
    async with as_user(pool, who.id) as conn:
        row = await (await conn.execute(_CANCEL_SQL, {"id": membership_id, "period_end": period_end})).fetchone()
    return respond(_membership(row))


async def ensure_may_activate(conn: psycopg.AsyncConnection, campaign: dict) -> None:
    """409 unless the campaign may become active: not frozen by a dispute, its business owing nothing, and
    fewer than its tier's limit of campaigns active (activations of one business are serialised here)."""
    blocker = (await (await conn.execute(_BLOCKER_SQL, {"id": campaign["id"]})).fetchone())["blocker"]
    if blocker is not None:
        raise conflict(blocker, _BLOCKERS[blocker], "status")
    business = str(campaign["business_id"])
    await conn.execute("SELECT pg_advisory_xact_lock(%(class)s, hashtext(%(b)s))",
                       {"class": ACTIVATION_CLASS, "b": business})
    row = await (await conn.execute(_ACTIVE_SQL, {"b": business, "id": campaign["id"]})).fetchone()
    allowed = tiers.max_active_campaigns(row["tiers"])
    if row["active"] >= allowed:
        raise conflict("active_campaign_limit", f"at most {allowed} campaigns may be active at once"
                       f"{'' if allowed > tiers.BASE_ACTIVE_CAMPAIGNS else ' (business_growth raises the limit)'};"
                       " pause one first", "status")
