"""``POST /v1/campaigns/{id}/fund``: a business pays a campaign's budget through a Stripe PaymentIntent.

Nothing is credited here. The intent is created and a ``pending`` funding
row records it; the ``payment_intent.succeeded`` webhook (admin_api.webhooks)
credits escrow and the budget once Stripe says the money arrived, and only for
an intent this row records, for its amount and currency.

Without ``STRIPE_API_KEY`` the server has no Stripe: ``503`` naming it (admins
still record money received off-Stripe).

With an ``Idempotency-Key`` the funding id is derived from (caller, key), so a
retry asks Stripe for the same intent (Stripe's own idempotency key is
``fund:<funding id>``) and gets back the first answer, never a second intent.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Literal

import psycopg
import stripe
from aiohttp import web
from pydantic import BaseModel

from oros.connections import as_user
from oros.httperrors import ApiError, conflict, not_found
from oros.money import fmt
from oros.settings import STRIPE_API_KEY
from oros.stripe_gateway import CURRENCY, MAX_STRIPE_AMOUNT, async_stripe_client, to_cents
from oros.wire import Amount, Money, Uuid

from . import idempotency
from .auth import caller
from .payload import parse, path_id
from .routing import Routes
from .typedefs import PG_POOL, SETTINGS

log = logging.getLogger(__name__)

routes = Routes()

# Read as the caller, so RLS hides campaigns the caller may not see.
_CAMPAIGN_SQL = "SELECT id, business_id::text AS business_id, status FROM campaigns WHERE id = %(id)s"

# Derives a retried request's funding id from its Idempotency-Key.
_IDEMPOTENT_FUNDING = uuid.UUID("6f1c0a52-3b57-4c55-9a8e-3f4c3d1f5e01")

# As the caller: oros_open_stripe_funding checks the campaign is the caller's
# own (the app role may only read campaign_fundings; money rows are written by
# SQL functions).
_PENDING_SQL = """
SELECT id::text AS id, campaign_id::text AS campaign_id, amount, status, created_at
  FROM oros_open_stripe_funding(%(id)s, %(campaign)s, %(amount)s, %(pi)s)
"""


class CardFundingIn(BaseModel):
    amount: Amount(MAX_STRIPE_AMOUNT)


class CardFunding(BaseModel):
    """The pending funding and its PaymentIntent"""

    id: Uuid
    campaign_id: Uuid
    amount: Money
    currency: str
    status: Literal["pending", "succeeded", "failed", "refused"]
    payment_intent_id: str
    client_secret: str
    created_at: datetime


@routes.post("/v1/campaigns/{id}/fund", "Fund a campaign through Stripe: returns the PaymentIntent's client secret; "
             "the budget is credited when Stripe confirms the payment (webhook)", body=CardFundingIn,
             headers=(idempotency.IDEMPOTENCY_KEY,), responses={201: CardFunding})
async def fund_campaign(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business")
    if request.app[SETTINGS].stripe_api_key is None:
        raise ApiError(503, "stripe_not_configured", f"card funding is unavailable: {STRIPE_API_KEY} is not set "
                       "on this server (an admin can record funds received off-Stripe)")
    campaign_id = path_id(request)
    value = (await parse(CardFundingIn, request)).amount
    async with as_user(request.app[PG_POOL], who.id) as conn:
        campaign = await (await conn.execute(_CAMPAIGN_SQL, {"id": campaign_id})).fetchone()
    # Another business's campaign is not found, whether or not it is publicly listed.
    if campaign is None or campaign["business_id"] != who.id:
        raise not_found("campaign")
    if campaign["status"] == "completed":
        raise conflict("campaign_completed", "a completed campaign cannot be funded")

    async def create_intent(key: str | None) -> tuple[str, stripe.PaymentIntent]:
        # With a key, a retry derives the same funding id, so Stripe returns the same intent.
        funding_id = idempotency.derived_id(_IDEMPOTENT_FUNDING, who.id, key)
        return funding_id, await _create_intent(request, funding_id, campaign_id, value)

    async def record(conn, created: tuple[str, stripe.PaymentIntent]) -> dict:
        funding_id, intent = created
        try:
            row = await (await conn.execute(
                _PENDING_SQL,
                {"id": funding_id, "campaign": campaign_id, "amount": value, "pi": intent.id},
            )).fetchone()
        except psycopg.errors.UniqueViolation:
            raise conflict("request_in_progress", "this funding request was processed concurrently; retry it",
                           idempotency.HEADER) from None
        return {
            "id": row["id"],
            "campaign_id": row["campaign_id"],
            "amount": fmt(row["amount"]),
            "currency": CURRENCY.upper(),
            "status": row["status"],
            "payment_intent_id": intent.id,
            "client_secret": intent.client_secret,
            "created_at": row["created_at"].isoformat(),
        }

    return await idempotency.once(request, who.id, record, before=create_intent)


async def _create_intent(request: web.Request, funding_id: str, campaign_id: str, value: Decimal):
    """The PaymentIntent, tagged with our ids (the webhook credits only the pending row, never by metadata)."""
    # A client per request: funding is rare and human-paced, and this keeps the
    # aiohttp session inside the request's own lifetime.
    client, http = async_stripe_client(request.app[SETTINGS])
    try:
        return await client.v1.payment_intents.create_async(
            {
                "amount": to_cents(value),
                "currency": CURRENCY,
                "payment_method_types": ["card"],
                "metadata": {"oros_campaign_id": campaign_id, "oros_funding_id": funding_id},
            },
            {"idempotency_key": f"fund:{funding_id}"},
        )
    except stripe.StripeError as exc:
        log.warning("stripe refused a payment intent", extra={"campaign_id": campaign_id, "error": str(exc)})
        raise ApiError(502, "stripe_error", "the payment provider did not accept the request; try again") from None
    finally:
        await http.close_async()
