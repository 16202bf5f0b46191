"""Paying a pending card payment with a card, confirmed server-side: a campaign funding
(``POST /v1/campaigns/{id}/fundings/{funding_id}/confirm``), a tip (``POST /v1/tips/{id}/confirm``), a
boost (``POST /v1/boosts/{id}/confirm``) and a membership's first invoice
(``POST /v1/memberships/{id}/confirm``).

Stripe's "finalize payments on the server" flow: the page turns the card into
a PaymentMethod with Stripe.js (the card number never reaches us), sends its
id here, and the server confirms the funding's PaymentIntent with it. When
the bank asks for 3-D Secure the answer is ``requires_action`` and the page
lets Stripe.js run the challenge (``handleNextAction``). Either way nothing is
credited here: the ``payment_intent.succeeded`` webhook does that, as for
every funding.

Why server-side: it works the same against Stripe and against localstripe
(``oros dev``), whose Stripe.js stand-in cannot confirm an intent from the
page. The PaymentIntent is only ever the one the funding row recorded, for
the caller's own campaign, and the card is never one saved for another
customer. Confirming again is harmless: an intent that is
already paid (or processing, or waiting for 3-D Secure) is left as it is and
its status returned.

A monthly tip or a membership is a Stripe subscription whose first invoice
waits for the customer's card (``default_incomplete``, admin_api.billing): its
payment is that invoice's PaymentIntent, found through the subscription at
Stripe and confirmed the same way; the ``invoice.paid`` (or
``invoice.payment_succeeded``) webhook books it.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

import stripe
from aiohttp import web
from pydantic import BaseModel, Field

from oros.connections import as_user
from oros.httperrors import ApiError, conflict, invalid, not_found
from oros.settings import STRIPE_API_KEY
from oros.stripe_gateway import async_stripe_client
from oros.wire import Uuid, refuse, rule

from .auth import caller
from .payload import parse, path_id, respond
from .routing import Routes
from .stripe_payload import object_id
from .typedefs import PG_POOL, SETTINGS

log = logging.getLogger(__name__)

routes = Routes()

# What Stripe.js hands a page for a card: a PaymentMethod (pm_), or a card or source from the
# older APIs, which Stripe accepts wherever a PaymentMethod goes.
PAYMENT_METHOD = re.compile(r"^(pm|card|src)_[A-Za-z0-9_]{1,200}$")
# A PaymentIntent's statuses (Stripe's API reference).
INTENT_STATUSES = ("requires_payment_method", "requires_confirmation", "requires_action", "processing",
                   "requires_capture", "canceled", "succeeded")
# The intent is waiting for a payment method or for confirmation: this request may confirm it.
CONFIRMABLE = ("requires_payment_method", "requires_confirmation")
# A declined card fails one attempt (the funding is "failed"), not the intent: another card may follow.
OPEN_FUNDINGS = ("pending", "failed")


def _payment_method(raw: object) -> str:
    # fullmatch: "$" alone would let a trailing newline through.
    if isinstance(raw, str) and PAYMENT_METHOD.fullmatch(raw):
        return raw
    refuse("must be the id Stripe.js returned for the card (pm_…)")


class CardIn(BaseModel):
    payment_method: rule(str, _payment_method, {"type": "string", "pattern": PAYMENT_METHOD.pattern})


class Confirmation(BaseModel):
    """The PaymentIntent's status"""

    funding_id: Uuid
    payment_intent_id: str
    status: Literal[INTENT_STATUSES]


class IntentConfirmation(BaseModel):
    """The PaymentIntent's status (the tip, boost or membership is booked by the webhook, not by this answer)"""

    id: Uuid
    payment_intent_id: str
    status: Literal[INTENT_STATUSES]
    client_secret: str | None = Field(None, description="with requires_action only: what Stripe.js's 3-D Secure "
                                                        "step takes (a payment paid later has no other)")


# As the caller: RLS shows a business only its own campaigns' fundings.
_FUNDING_SQL = """
SELECT f.id::text AS id, f.status, f.method, f.stripe_payment_intent_id AS payment_intent_id,
       c.business_id::text AS business_id
  FROM campaign_fundings f JOIN campaigns c ON c.id = f.campaign_id
 WHERE f.id = %(funding)s AND f.campaign_id = %(campaign)s
"""


@routes.post("/v1/campaigns/{id}/fundings/{funding_id}/confirm",
             "Confirm a pending card funding's PaymentIntent with a card Stripe.js turned into a PaymentMethod; "
             "requires_action means the page must run Stripe.js's 3-D Secure step. The budget is credited by the "
             "webhook, never here", body=CardIn, responses={200: Confirmation})
async def confirm_card_funding(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business")
    settings = request.app[SETTINGS]
    if settings.stripe_api_key is None:
        raise ApiError(503, "stripe_not_configured", f"card funding is unavailable: {STRIPE_API_KEY} is not set")
    campaign_id, funding_id = path_id(request), path_id(request, "funding_id")
    method = (await parse(CardIn, request)).payment_method
    async with as_user(request.app[PG_POOL], who.id) as conn:
        funding = await (await conn.execute(_FUNDING_SQL, {"funding": funding_id, "campaign": campaign_id})).fetchone()
    if funding is None or funding["business_id"] != who.id or funding["method"] != "stripe":
        raise not_found("funding")
    if funding["status"] not in OPEN_FUNDINGS:
        raise conflict("funding_closed", f"this funding is {funding['status']}: there is nothing left to pay")
    status = (await _confirm(settings, funding["payment_intent_id"], method)).status
    return respond({"funding_id": funding_id, "payment_intent_id": funding["payment_intent_id"], "status": status})


# As the caller: RLS shows a supporter only their own intents; the WHERE says so again.
_TIP_INTENT_SQL = """SELECT status, stripe_payment_intent_id AS payment_intent_id,
       stripe_subscription_id AS subscription_id
  FROM tip_intents WHERE id = %(id)s AND from_user_id = %(me)s"""
_BOOST_INTENT_SQL = """SELECT status, stripe_payment_intent_id AS payment_intent_id, NULL AS subscription_id
  FROM boost_intents WHERE id = %(id)s AND supporter_id = %(me)s"""
_MEMBERSHIP_SQL = """SELECT status, NULL AS payment_intent_id, billing_provider_id AS subscription_id
  FROM memberships WHERE id = %(id)s AND user_id = %(me)s"""


async def _confirm_intent(request: web.Request, sql: str, what: str, role: str | None = "supporter") -> web.Response:
    """Confirm the caller's own pending payment (a tip's, a boost's, a membership's) with the card sent: its
    PaymentIntent, or its subscription's first invoice's."""
    who = await caller(request)
    if role is not None:
        who.require(role)
    settings = request.app[SETTINGS]
    if settings.stripe_api_key is None:
        raise ApiError(503, "stripe_not_configured", f"card payments are unavailable: {STRIPE_API_KEY} is not set")
    intent_id = path_id(request)
    method = (await parse(CardIn, request)).payment_method
    async with as_user(request.app[PG_POOL], who.id) as conn:
        intent = await (await conn.execute(sql, {"id": intent_id, "me": who.id})).fetchone()
    if intent is None or (intent["payment_intent_id"] or intent["subscription_id"]) is None:
        raise not_found(what)
    if intent["status"] != "pending":
        raise conflict(f"{what}_closed", f"this {what} is {intent['status']}: there is nothing left to pay")
    payment_intent = intent["payment_intent_id"] or await _first_invoice_intent(settings, intent["subscription_id"])
    confirmed = await _confirm(settings, payment_intent, method)
    answer = {"id": intent_id, "payment_intent_id": payment_intent, "status": confirmed.status}
    if confirmed.status == "requires_action":
        answer["client_secret"] = confirmed.client_secret
    return respond(answer)


@routes.post("/v1/tips/{id}/confirm", "Confirm a pending tip's PaymentIntent (a monthly tip's: its first invoice's) "
             "with a card Stripe.js turned into a PaymentMethod (the tip's sender); requires_action means 3-D Secure. "
             "The tip is booked by the webhook, never here", body=CardIn, responses={200: IntentConfirmation})
async def confirm_card_tip(request: web.Request) -> web.Response:
    return await _confirm_intent(request, _TIP_INTENT_SQL, "tip")


@routes.post("/v1/memberships/{id}/confirm", "Pay a pending membership's first invoice with a card Stripe.js turned "
             "into a PaymentMethod (the member); requires_action means 3-D Secure. The membership becomes active by "
             "the webhook, never here", body=CardIn, responses={200: IntentConfirmation})
async def confirm_card_membership(request: web.Request) -> web.Response:
    return await _confirm_intent(request, _MEMBERSHIP_SQL, "membership", role=None)


@routes.post("/v1/boosts/{id}/confirm", "Confirm a pending boost's PaymentIntent with a card Stripe.js turned into a "
             "PaymentMethod (its supporter); requires_action means 3-D Secure. The campaign is credited by the "
             "webhook, never here", body=CardIn, responses={200: IntentConfirmation})
async def confirm_card_boost(request: web.Request) -> web.Response:
    return await _confirm_intent(request, _BOOST_INTENT_SQL, "boost")


async def _first_invoice_intent(settings, subscription_id: str) -> str:
    """The PaymentIntent of a subscription's latest invoice: the first one, while the subscription waits for it."""
    client, http = async_stripe_client(settings)
    try:
        sub = await client.v1.subscriptions.retrieve_async(
            subscription_id, {"expand": ["latest_invoice.confirmation_secret"]})
    except stripe.StripeError as exc:
        log.warning("stripe failed a subscription read", extra={"subscription": subscription_id, "error": str(exc)})
        raise ApiError(502, "stripe_error", "the payment provider did not answer; try again") from None
    finally:
        await http.close_async()
    invoice = sub.to_dict().get("latest_invoice")
    invoice = invoice if isinstance(invoice, dict) else {}
    # Older API versions (and localstripe) name it; since 2025 only the invoice's confirmation secret does,
    # which is the intent's client secret ("pi_…_secret_…", the form Stripe.js itself reads the id from).
    found = object_id(invoice.get("payment_intent"))
    secret = invoice.get("confirmation_secret") or {}
    if found is None and secret.get("type") == "payment_intent" and "_secret_" in str(secret.get("client_secret")):
        found = secret["client_secret"].split("_secret_")[0]
    if found is None:
        raise conflict("nothing_to_pay", "the subscription has no invoice waiting for a card", "status")
    return found


async def _saved_for(client: stripe.StripeClient, method: str) -> str | None:
    """The customer a card is saved for, or None. A card Stripe cannot find is saved for nobody: a saved one
    is always found (a token's card may not be, and confirming then answers for it)."""
    try:
        card = await client.v1.payment_methods.retrieve_async(method)
    except stripe.InvalidRequestError as exc:
        if exc.http_status != 404:
            raise
        return None
    return object_id(card.to_dict().get("customer"))


async def _confirm(settings, intent_id: str, method: str) -> stripe.PaymentIntent:
    """The intent after confirming it with ``method`` (or as it was, when it is past that)."""
    client, http = async_stripe_client(settings)
    try:
        intent = await client.v1.payment_intents.retrieve_async(intent_id)
        if intent.status not in CONFIRMABLE:
            return intent
        # A card saved for another customer (someone else's card, its id learnt somehow) is never charged for
        # this payment: Stripe refuses it, localstripe would not, and neither is trusted to.
        if await _saved_for(client, method) not in (None, object_id(intent.to_dict().get("customer"))):
            raise invalid("payment_method", "this card is saved for another customer")
        # Two calls, not confirm(payment_method=…): localstripe takes the method only by update.
        await client.v1.payment_intents.update_async(intent_id, {"payment_method": method})
        return await client.v1.payment_intents.confirm_async(intent_id)
    except stripe.CardError as exc:
        raise ApiError(402, "card_declined", exc.user_message or "the card was declined", "payment_method") from None
    except stripe.InvalidRequestError as exc:
        log.info("stripe refused a card confirmation", extra={"payment_intent": intent_id, "error": str(exc)})
        raise invalid("payment_method", exc.user_message or "the payment provider refused this card") from None
    except stripe.StripeError as exc:
        log.warning("stripe failed a card confirmation", extra={"payment_intent": intent_id, "error": str(exc)})
        raise ApiError(502, "stripe_error", "the payment provider did not answer; try again") from None
    finally:
        await http.close_async()

