"""Tips: a supporter pays a creator through Stripe; ``GET /v1/tips`` lists what the caller sent or received.

Nothing is credited here. ``POST /v1/tips`` checks the tip (a creator, not the
caller, at least the creator's ``min_tip_amount``, a post of that creator),
then asks Stripe for a PaymentIntent (``one_time``) or a monthly subscription
(``monthly``: each paid invoice is one tip) and records a pending
``tip_intents`` row as the caller: the only thing the Stripe webhook credits,
for its amount (admin_api.billing_events, sql/postgres/0079). A monthly tip
stops with ``POST /v1/tips/monthly/{id}/cancel`` (at once: nothing is billed
again).

With an ``Idempotency-Key`` the intent id is derived from (caller, key), so a
retry asks Stripe for the same object and gets the first answer back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

import psycopg
from aiohttp import web

from oros.connections import as_user
from oros.money import fmt
from oros.stripe_gateway import MAX_STRIPE_AMOUNT, MIN_STRIPE_AMOUNT

from . import billing, idempotency
from . import openapi as oa
from .auth import Caller, caller
from .errors import conflict, invalid, not_found
from .payload import amount, choice, cursor, fetch_page, limit, path_id, read_json, respond, text, uuid_field
from .typedefs import PG_POOL, SETTINGS

routes = web.RouteTableDef()

FREQUENCIES = ("one_time", "monthly")
DIRECTIONS = ("sent", "received")
INTENT_STATUSES = ("pending", "succeeded", "active", "failed", "refused", "canceled")
MAX_MESSAGE = 500
MONTHLY_TIP_PRODUCT = ("oros_monthly_tip", "Monthly tip")
# Derives a retried request's intent id from its Idempotency-Key.
_IDEMPOTENT_TIP = uuid.UUID("3b0e4a7e-51c9-4d6b-9a36-7c2f0b1d9e44")

TIP_COLUMNS = """id, from_user_id, to_creator_id, amount, platform_fee, net_amount, currency, frequency, post_id,
    message, reversed_amount, intent_id, created_at"""
INTENT_COLUMNS = """id, from_user_id, to_creator_id, amount, currency, frequency, post_id, message, status,
    stripe_payment_intent_id, stripe_subscription_id, refusal_reason, created_at, ended_at"""
_TERMS_SQL = "SELECT * FROM oros_tip_terms(%(to)s, %(post)s)"
_OPEN_SQL = f"""SELECT {INTENT_COLUMNS}
  FROM oros_open_tip(%(id)s, %(to)s, %(amount)s, %(frequency)s, %(post)s, %(message)s, %(pi)s, %(sub)s)"""
_MY_INTENT_SQL = f"SELECT {INTENT_COLUMNS} FROM tip_intents WHERE id = %(id)s AND from_user_id = %(me)s"
_CANCEL_SQL = f"SELECT {INTENT_COLUMNS} FROM oros_cancel_monthly_tip(%(id)s)"


@dataclass(frozen=True)
class TipRequest:
    to_creator_id: str
    amount: Decimal
    frequency: str
    post_id: str | None
    message: str | None


def _tip_request(body: dict, who: Caller) -> TipRequest:
    tip = TipRequest(
        to_creator_id=uuid_field(body, "to_creator_id"), amount=amount(body, "amount"),
        frequency=choice(body, "frequency", FREQUENCIES), post_id=uuid_field(body, "post_id", required=False),
        message=text(body, "message", max_len=MAX_MESSAGE),
    )
    if tip.to_creator_id == who.id:
        raise invalid("to_creator_id", "you cannot tip yourself")
    if tip.amount > MAX_STRIPE_AMOUNT:
        raise invalid("amount", f"amount must be at most {MAX_STRIPE_AMOUNT} per payment")
    if tip.amount < MIN_STRIPE_AMOUNT:
        raise invalid("amount", f"amount must be at least {MIN_STRIPE_AMOUNT} (the card network's minimum)")
    return tip


async def _check_terms(conn: psycopg.AsyncConnection, tip: TipRequest) -> None:
    terms = await (await conn.execute(_TERMS_SQL, {"to": tip.to_creator_id, "post": tip.post_id})).fetchone()
    if not terms["is_creator"]:
        raise invalid("to_creator_id", "to_creator_id is not a creator")
    if tip.amount < terms["min_tip_amount"]:
        raise invalid("amount", f"this creator's minimum tip is {fmt(terms['min_tip_amount'])}")
    if tip.post_id is not None and terms["post_creator_id"] is None:
        raise invalid("post_id", "post_id names no post")
    if tip.post_id is not None and str(terms["post_creator_id"]) != tip.to_creator_id:
        raise invalid("post_id", "post_id is a post of another creator")


@routes.post("/v1/tips")
async def create_tip(request: web.Request) -> web.Response:
    who = (await caller(request)).require("supporter")
    billing.require_stripe(request.app[SETTINGS])
    tip = _tip_request(await read_json(request), who)
    pool = request.app[PG_POOL]
    async with as_user(pool, who.id) as conn:
        await _check_terms(conn, tip)
    idem = await idempotency.request_key(request)
    async with as_user(pool, who.id) as conn:
        if (prior := await idempotency.replay(conn, who.id, idem)) is not None:
            return prior
    intent_id = str(uuid.uuid5(_IDEMPOTENT_TIP, f"{who.id}:{idem[0]}") if idem else uuid.uuid4())
    metadata = {"oros_tip_intent_id": intent_id, "oros_creator_id": tip.to_creator_id}
    async with billing.client(request) as stripe_client:
        if tip.frequency == "one_time":
            intent = await billing.payment_intent(stripe_client, tip.amount, metadata, f"tip:{intent_id}")
            pi, sub, secret = intent.id, None, intent.client_secret
        else:
            customer = await billing.customer(stripe_client, pool, who.id)
            product = await billing.product(stripe_client, *MONTHLY_TIP_PRODUCT)
            subscribed = await billing.subscribe(stripe_client, customer_id=customer, product_id=product,
                                                 amount=tip.amount, metadata=metadata, key=f"tip:{intent_id}")
            pi, sub, secret = None, subscribed.subscription_id, subscribed.client_secret
    async with as_user(pool, who.id) as conn:
        try:
            row = await (await conn.execute(_OPEN_SQL, {
                "id": intent_id, "to": tip.to_creator_id, "amount": tip.amount, "frequency": tip.frequency,
                "post": tip.post_id, "message": tip.message, "pi": pi, "sub": sub,
            })).fetchone()
        except psycopg.errors.UniqueViolation:
            raise conflict("request_in_progress", "this tip was processed concurrently; retry it",
                           idempotency.HEADER) from None
        body = {**_intent(row), "client_secret": secret}
        await idempotency.remember(conn, who.id, idem, 201, body)
    return respond(body, 201)


def _intent(row: dict) -> dict:
    return {**row, "amount": fmt(row["amount"]), "currency": row["currency"].upper()}


@routes.get("/v1/tips")
async def list_tips(request: web.Request) -> web.Response:
    """The caller's tips, newest first: ``direction=sent`` (default) or ``received``."""
    who = await caller(request)
    direction = request.query.get("direction", "sent")
    if direction not in DIRECTIONS:
        raise invalid("direction", f"direction must be one of {', '.join(DIRECTIONS)}")
    size, after = limit(request), cursor(request)
    party = "from_user_id" if direction == "sent" else "to_creator_id"
    async with as_user(request.app[PG_POOL], who.id) as conn:
        page = await fetch_page(conn, f"SELECT {TIP_COLUMNS} FROM tips", [f"{party} = %(me)s"], {"me": who.id},
                                size, after)
    page["items"] = [{**row, "currency": row["currency"].upper()} for row in page["items"]]
    return respond(page)


@routes.post("/v1/tips/monthly/{id}/cancel")
async def cancel_monthly_tip(request: web.Request) -> web.Response:
    """The supporter stops a monthly tip at once; what was paid stays paid."""
    who = await caller(request)
    intent_id = path_id(request)
    pool = request.app[PG_POOL]
    async with as_user(pool, who.id) as conn:
        row = await (await conn.execute(_MY_INTENT_SQL, {"id": intent_id, "me": who.id})).fetchone()
    if row is None or row["frequency"] != "monthly":
        raise not_found("monthly tip")
    if row["status"] in ("pending", "active"):
        billing.require_stripe(request.app[SETTINGS])
        async with billing.client(request) as stripe_client:
            await billing.cancel(stripe_client, row["stripe_subscription_id"], at_period_end=False,
                                 key=f"cancel:{intent_id}")
        async with as_user(pool, who.id) as conn:
            row = await (await conn.execute(_CANCEL_SQL, {"id": intent_id})).fetchone()
    return respond(_intent(row))


TIP = oa.obj({
    "id": oa.UUID, "from_user_id": oa.UUID, "to_creator_id": oa.UUID, "amount": oa.MONEY, "platform_fee": oa.MONEY,
    "net_amount": oa.MONEY, "currency": {"type": "string"}, "frequency": {"enum": list(FREQUENCIES)},
    "post_id": oa.nullable(oa.UUID), "message": oa.nullable({"type": "string"}), "reversed_amount": oa.MONEY,
    "intent_id": oa.nullable(oa.UUID), "created_at": oa.TIMESTAMP,
}, ["id", "from_user_id", "to_creator_id", "amount", "platform_fee", "net_amount", "frequency", "created_at"])
INTENT = oa.obj({
    "id": oa.UUID, "from_user_id": oa.UUID, "to_creator_id": oa.UUID, "amount": oa.MONEY,
    "currency": {"type": "string"}, "frequency": {"enum": list(FREQUENCIES)}, "post_id": oa.nullable(oa.UUID),
    "message": oa.nullable({"type": "string"}), "status": {"enum": list(INTENT_STATUSES)},
    "stripe_payment_intent_id": oa.nullable({"type": "string"}),
    "stripe_subscription_id": oa.nullable({"type": "string"}), "refusal_reason": oa.nullable({"type": "string"}),
    "client_secret": oa.nullable({"type": "string"}), "created_at": oa.TIMESTAMP,
    "ended_at": oa.nullable(oa.TIMESTAMP),
}, ["id", "to_creator_id", "amount", "currency", "frequency", "status", "created_at"])

OPENAPI: dict = {
    "/v1/tips": {
        "post": oa.operation(
            "Tip a creator (supporter): returns the Stripe client secret to pay with; the tip is booked when "
            "Stripe confirms the payment (one_time), or each month's invoice (monthly)",
            {"201": oa.json_response("The pending tip and what Stripe.js needs to pay it", INTENT)},
            body=oa.json_body(oa.obj({
                "to_creator_id": oa.UUID, "amount": oa.AMOUNT, "frequency": {"enum": list(FREQUENCIES)},
                "post_id": oa.UUID, "message": {"type": "string", "maxLength": MAX_MESSAGE},
            }, ["to_creator_id", "amount", "frequency"])),
            parameters=[idempotency.OPENAPI_PARAMETER]),
        "get": oa.operation(
            "The caller's tips, newest first: sent (default) or received",
            {"200": oa.json_response("tips", oa.page_of(TIP))},
            parameters=[{"name": "direction", "in": "query", "required": False,
                         "schema": {"enum": list(DIRECTIONS)}}, *oa.PAGE_PARAMS]),
    },
    "/v1/tips/monthly/{id}/cancel": {"post": oa.operation(
        "Stop a monthly tip at once (its Stripe subscription is canceled)",
        {"200": oa.json_response("the monthly tip", INTENT)}, parameters=[oa.path_param()])},
}
