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
from datetime import datetime
from typing import Literal

import psycopg
from aiohttp import web
from pydantic import BaseModel, Field

from oros.connections import as_user
from oros.httperrors import conflict, invalid, not_found
from oros.money import fmt
from oros.stripe_gateway import MAX_STRIPE_AMOUNT, MIN_STRIPE_AMOUNT
from oros.wire import Amount, Money, OneOf, Text, Uuid

from . import billing, idempotency
from .auth import caller
from .pages import Page, PageQuery, fetch_page
from .payload import parse, parse_query, path_id, respond
from .routing import Routes
from .typedefs import PG_POOL, SETTINGS

routes = Routes()

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


class TipIn(BaseModel):
    to_creator_id: Uuid
    amount: Amount(MAX_STRIPE_AMOUNT) = Field(description=f"at least {MIN_STRIPE_AMOUNT} (the card network's "
                                                          "minimum) and the creator's min_tip_amount")
    frequency: OneOf(*FREQUENCIES)
    post_id: Uuid | None = Field(None, description="a post of the creator; a tip of at least its "
                                                   "min_tip_to_unlock unlocks it")
    message: Text(MAX_MESSAGE) | None = None


class TipQuery(PageQuery):
    direction: OneOf(*DIRECTIONS) = "sent"


class MonthlyQuery(PageQuery):
    status: OneOf(*INTENT_STATUSES) = None


class Tip(BaseModel):
    """The tip, as Stripe paid it"""

    id: Uuid
    from_user_id: Uuid
    to_creator_id: Uuid
    amount: Money
    platform_fee: Money
    net_amount: Money
    currency: str
    frequency: Literal[FREQUENCIES]
    post_id: Uuid | None
    message: str | None
    reversed_amount: Money = Field(description="what refunds and disputes took back of it")
    intent_id: Uuid | None
    created_at: datetime


class TipIntent(BaseModel):
    """The tip as asked for: one_time until its PaymentIntent is paid, monthly until canceled"""

    id: Uuid
    from_user_id: Uuid
    to_creator_id: Uuid
    amount: Money
    currency: str
    frequency: Literal[FREQUENCIES]
    post_id: Uuid | None
    message: str | None
    status: Literal[INTENT_STATUSES]
    stripe_payment_intent_id: str | None
    stripe_subscription_id: str | None
    refusal_reason: str | None
    created_at: datetime
    ended_at: datetime | None
    client_secret: str | None = Field(None, description="on creation: what Stripe.js pays it with")


async def _check_terms(conn: psycopg.AsyncConnection, tip: TipIn) -> None:
    terms = await (await conn.execute(_TERMS_SQL, {"to": tip.to_creator_id, "post": tip.post_id})).fetchone()
    if not terms["is_creator"]:
        raise invalid("to_creator_id", "to_creator_id is not a creator")
    if tip.amount < terms["min_tip_amount"]:
        raise invalid("amount", f"this creator's minimum tip is {fmt(terms['min_tip_amount'])}")
    if tip.post_id is not None and terms["post_creator_id"] is None:
        raise invalid("post_id", "post_id names no post")
    if tip.post_id is not None and str(terms["post_creator_id"]) != tip.to_creator_id:
        raise invalid("post_id", "post_id is a post of another creator")


@routes.post("/v1/tips", "Tip a creator (supporter): returns the Stripe client secret to pay with; the tip is booked "
             "when Stripe confirms the payment (one_time), or each month's invoice (monthly)", body=TipIn,
             headers=(idempotency.IDEMPOTENCY_KEY,), responses={201: TipIntent})
async def create_tip(request: web.Request) -> web.Response:
    who = (await caller(request)).require("supporter")
    billing.require_stripe(request.app[SETTINGS])
    tip = await parse(TipIn, request)
    if tip.to_creator_id == who.id:
        raise invalid("to_creator_id", "you cannot tip yourself")
    if tip.amount < MIN_STRIPE_AMOUNT:
        raise invalid("amount", f"amount must be at least {MIN_STRIPE_AMOUNT} (the card network's minimum)")
    pool = request.app[PG_POOL]
    async with as_user(pool, who.id) as conn:
        await _check_terms(conn, tip)

    async def ask_stripe(key: str | None) -> tuple[str, str | None, str | None, str | None]:
        intent_id = idempotency.derived_id(_IDEMPOTENT_TIP, who.id, key)
        metadata = {"oros_tip_intent_id": intent_id, "oros_creator_id": tip.to_creator_id}
        async with billing.client(request) as stripe_client:
            if tip.frequency == "one_time":
                intent = await billing.payment_intent(stripe_client, tip.amount, metadata, f"tip:{intent_id}")
                return intent_id, intent.id, None, intent.client_secret
            customer = await billing.customer(stripe_client, pool, who.id)
            product = await billing.product(stripe_client, *MONTHLY_TIP_PRODUCT)
            subscribed = await billing.subscribe(stripe_client, customer_id=customer, product_id=product,
                                                 amount=tip.amount, metadata=metadata, key=f"tip:{intent_id}")
            return intent_id, None, subscribed.subscription_id, subscribed.client_secret

    async def record(conn: psycopg.AsyncConnection, asked: tuple) -> dict:
        intent_id, pi, sub, secret = asked
        try:
            row = await (await conn.execute(_OPEN_SQL, {
                "id": intent_id, "to": tip.to_creator_id, "amount": tip.amount, "frequency": tip.frequency,
                "post": tip.post_id, "message": tip.message, "pi": pi, "sub": sub,
            })).fetchone()
        except psycopg.errors.UniqueViolation:
            raise conflict("request_in_progress", "this tip was processed concurrently; retry it",
                           idempotency.HEADER) from None
        return {**_intent(row), "client_secret": secret}

    return await idempotency.once(request, who.id, record, before=ask_stripe)


def _intent(row: dict) -> dict:
    return {**row, "amount": fmt(row["amount"]), "currency": row["currency"].upper()}


@routes.get("/v1/tips", "The caller's tips, newest first: sent (default) or received", query=TipQuery,
            responses={200: Page[Tip]})
async def list_tips(request: web.Request) -> web.Response:
    who = await caller(request)
    query = parse_query(TipQuery, request)
    party = "from_user_id" if query.direction == "sent" else "to_creator_id"
    async with as_user(request.app[PG_POOL], who.id) as conn:
        page = await fetch_page(conn, f"SELECT {TIP_COLUMNS} FROM tips", [f"{party} = %(me)s"], {"me": who.id},
                                query)
    page["items"] = [{**row, "currency": row["currency"].upper()} for row in page["items"]]
    return respond(page)


@routes.get("/v1/tips/monthly", "The caller's monthly tips as asked for, newest first: pending until the first "
            "invoice is paid, active, or ended (?status=)", query=MonthlyQuery, responses={200: Page[TipIntent]})
async def list_monthly_tips(request: web.Request) -> web.Response:
    # What the tips page cancels: a monthly tip not yet paid once has no row in GET /v1/tips.
    who = await caller(request)
    query = parse_query(MonthlyQuery, request)
    where = ["from_user_id = %(me)s", "frequency = 'monthly'"] + (["status = %(status)s"] if query.status else [])
    async with as_user(request.app[PG_POOL], who.id) as conn:
        page = await fetch_page(conn, f"SELECT {INTENT_COLUMNS} FROM tip_intents", where,
                                {"me": who.id, "status": query.status}, query)
    page["items"] = [_intent(row) for row in page["items"]]
    return respond(page)


@routes.post("/v1/tips/monthly/{id}/cancel", "Stop a monthly tip at once (its Stripe subscription is canceled); "
             "what was paid stays paid", responses={200: TipIntent})
async def cancel_monthly_tip(request: web.Request) -> web.Response:
    who = await caller(request)
    intent_id = path_id(request)
    pool = request.app[PG_POOL]
    async with as_user(pool, who.id) as conn:
        row = await (await conn.execute(_MY_INTENT_SQL, {"id": intent_id, "me": who.id})).fetchone()
    if row is None or row["frequency"] != "monthly":
        raise not_found("monthly tip")
    # A refused one too: its subscription is canceled after the refusal, unless that failed (then only here).
    if row["status"] in ("pending", "active") or (row["status"] == "refused" and row["ended_at"] is None):
        billing.require_stripe(request.app[SETTINGS])
        async with billing.client(request) as stripe_client:
            await billing.cancel(stripe_client, row["stripe_subscription_id"], at_period_end=False,
                                 key=f"cancel:{intent_id}")
        async with as_user(pool, who.id) as conn:
            row = await (await conn.execute(_CANCEL_SQL, {"id": intent_id})).fetchone()
    return respond(_intent(row))
