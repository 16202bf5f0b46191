"""Boosts: a supporter adds money to an active campaign through Stripe (``POST /v1/campaigns/{id}/boosts``).

Nothing is credited here. The handler checks who may boost which campaign
(a supporter, an active campaign, not its business nor one of its creators:
``oros_boost_blocker``), asks Stripe for a PaymentIntent and records a
pending ``boost_intents`` row as the caller: the only thing the Stripe
webhook credits, for its amount (admin_api.billing_events,
sql/postgres/0104). The reward percent shown is the one in force now; the
boost is rewarded at the percent in force when Stripe confirms it.

With an ``Idempotency-Key`` the intent id is derived from (caller, key), so a
retry asks Stripe for the same PaymentIntent (Stripe's key ``boost:<id>``)
and gets the first answer back.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import psycopg
from aiohttp import web
from pydantic import BaseModel, Field

from oros.connections import as_user
from oros.httperrors import conflict, invalid, not_found
from oros.money import fmt
from oros.stripe_gateway import MAX_STRIPE_AMOUNT, MIN_STRIPE_AMOUNT
from oros.wire import Amount, Money, Uuid

from . import billing, idempotency
from .auth import caller
from .payload import parse, path_id, respond
from .routing import Routes
from .typedefs import PG_POOL, SETTINGS

routes = Routes()

INTENT_STATUSES = ("pending", "succeeded", "failed", "refused", "refunded")
# Derives a retried request's intent id from its Idempotency-Key.
_IDEMPOTENT_BOOST = uuid.UUID("0b5e3c1a-8f0d-4c7e-9d2b-61a4f3e7c2d8")

INTENT_COLUMNS = """id, supporter_id, campaign_id, amount, currency, status, stripe_payment_intent_id, refusal_reason,
    created_at, credited_at"""
# As the caller: RLS shows active campaigns to everyone, others to their business and admins.
_VISIBLE_SQL = "SELECT id FROM campaigns WHERE id = %(id)s"
_BLOCKER_SQL = "SELECT oros_boost_blocker(%(id)s) AS blocker"
_MINE_SQL = f"SELECT {INTENT_COLUMNS} FROM boost_intents WHERE id = %(id)s AND supporter_id = %(me)s"
_OPEN_SQL = f"SELECT {INTENT_COLUMNS} FROM oros_open_boost(%(id)s, %(campaign)s, %(amount)s, %(pi)s)"

# Why a caller may not boost, as the API answers it (oros_boost_blocker's codes).
BLOCKERS = {
    "campaign_not_active": "only an active campaign can be boosted",
    "own_campaign": "a business cannot boost its own campaign",
    "campaign_member": "a creator of the campaign cannot boost it (its reward would be paid on its own earnings)",
}


class BoostIn(BaseModel):
    amount: Amount(MAX_STRIPE_AMOUNT) = Field(description=f"at least {MIN_STRIPE_AMOUNT} (the card network's "
                                                          "minimum)")


class BoostState(BaseModel):
    """The boost as asked for: credited to the campaign when Stripe confirms its payment"""

    id: Uuid
    supporter_id: Uuid
    campaign_id: Uuid
    amount: Money
    currency: str
    status: Literal[INTENT_STATUSES]
    stripe_payment_intent_id: str
    refusal_reason: str | None
    created_at: datetime
    credited_at: datetime | None


class BoostIntent(BoostState):
    """The boost as asked for, with what Stripe.js pays it with"""

    client_secret: str = Field(description="what Stripe.js pays it with")
    reward_pct: Money = Field(description="the reward percent in force now (OROS_BOOST_REWARD_PCT): the boost "
                                          "earns this percent of what it pays for, at the percent in force when "
                                          "its payment is confirmed")


@routes.post("/v1/campaigns/{id}/boosts", "Boost an active campaign (supporter): returns the Stripe client secret "
             "to pay with; the campaign's budget rises when Stripe confirms the payment", body=BoostIn,
             headers=(idempotency.IDEMPOTENCY_KEY,), responses={201: BoostIntent})
async def create_boost(request: web.Request) -> web.Response:
    who = (await caller(request)).require("supporter")
    settings = request.app[SETTINGS]
    billing.require_stripe(settings)
    campaign_id = path_id(request)
    amount = (await parse(BoostIn, request)).amount
    if amount < MIN_STRIPE_AMOUNT:
        raise invalid("amount", f"amount must be at least {MIN_STRIPE_AMOUNT} (the card network's minimum)")
    pool = request.app[PG_POOL]
    async with as_user(pool, who.id) as conn:
        await _check_may_boost(conn, campaign_id)

    async def ask_stripe(key: str | None) -> tuple[str, str, str]:
        intent_id = idempotency.derived_id(_IDEMPOTENT_BOOST, who.id, key)
        async with billing.client(request) as stripe_client:
            intent = await billing.payment_intent(
                stripe_client, amount, {"oros_boost_intent_id": intent_id, "oros_campaign_id": campaign_id},
                f"boost:{intent_id}")
        return intent_id, intent.id, intent.client_secret

    async def record(conn: psycopg.AsyncConnection, asked: tuple[str, str, str]) -> dict:
        intent_id, pi, secret = asked
        try:
            async with conn.transaction():
                row = await (await conn.execute(_OPEN_SQL, {"id": intent_id, "campaign": campaign_id,
                                                            "amount": amount, "pi": pi})).fetchone()
        except psycopg.errors.UniqueViolation:
            raise conflict("request_in_progress", "this boost was processed concurrently; retry it",
                           idempotency.HEADER) from None
        except psycopg.errors.ObjectNotInPrerequisiteState as exc:
            # The campaign changed while Stripe was asked (it was paused, say): the intent is never paid.
            raise _blocked(exc.diag.message_hint) from None
        return {**_intent(row), "client_secret": secret, "reward_pct": fmt(settings.boost_reward_pct)}

    return await idempotency.once(request, who.id, record, before=ask_stripe)


@routes.get("/v1/boosts/{id}", "One of the caller's boosts as asked for: pending until Stripe confirms its "
            "payment, then succeeded (credited), or failed", responses={200: BoostState})
async def get_boost(request: web.Request) -> web.Response:
    who = await caller(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute(_MINE_SQL, {"id": path_id(request), "me": who.id})).fetchone()
    if row is None:
        raise not_found("boost")
    return respond(_intent(row))


def _intent(row: dict) -> dict:
    return {**row, "amount": fmt(row["amount"]), "currency": row["currency"].upper()}


async def _check_may_boost(conn: psycopg.AsyncConnection, campaign_id: str) -> None:
    if await (await conn.execute(_VISIBLE_SQL, {"id": campaign_id})).fetchone() is None:
        raise not_found("campaign")
    blocker = (await (await conn.execute(_BLOCKER_SQL, {"id": campaign_id})).fetchone())["blocker"]
    if blocker is not None:
        raise _blocked(blocker)


def _blocked(code: str | None):
    if code not in BLOCKERS:
        return not_found("campaign")
    return conflict(code, BLOCKERS[code], "status" if code == "campaign_not_active" else None)
