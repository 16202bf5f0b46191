"""Webhook endpoints: subscribe, list, delete, rotate the secret, and see each delivery with its attempts.

Nothing here sends a webhook: Postgres writes the outbox with each fact
(sql/postgres/0066) and ``oros webhooks`` delivers it. An endpoint's URL
must be https and reach the public internet (oros/webhooks.py): checked here
when it is created, and again on every delivery. Changing endpoints takes a
login token (like API keys and the pixel secret: a leaked API key must not be
able to redirect a business's sales elsewhere); reading works with either.
docs/webhooks.md is the receiver's side.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, ValidationInfo, WithJsonSchema

from oros import webhooks
from oros.connections import as_user
from oros.httperrors import conflict, forbidden, invalid, not_found
from oros.wire import OneOf, Uuid, Whole, refuse, rule

from .auth import caller
from .pages import Page, PageQuery, fetch_page
from .payload import parse, parse_query, path_id, respond
from .routing import Routes
from .typedefs import PG_POOL, SETTINGS

routes = Routes()

ENDPOINT_COLUMNS = "id, url, events, created_at, disabled_at"
DELIVERY_COLUMNS = """id, event_id, event_type, status, attempt_count, next_attempt_at, give_up_at, created_at,
    finished_at, payload"""
DELIVERY_STATUSES = ("pending", "delivered", "failed", "canceled")
# How long the secret a rotation replaces still signs, unless the request says (0: at once).
ROTATION_GRACE_S = 86400
MAX_GRACE_S = 86400
_ATTEMPTS_SQL = """
SELECT delivery_id, attempt, started_at, duration_ms, status_code, response_excerpt, error
  FROM webhook_attempts WHERE delivery_id = ANY(%(ids)s::uuid[]) ORDER BY delivery_id, attempt
"""
# The validation context key holding the caller's roles, which each event type must reach.
ROLES = "roles"
EVENT_TYPE_NAMES = tuple(webhooks.EVENT_TYPES)
EventTypeName = Literal[EVENT_TYPE_NAMES]


def _event_type(raw: object, info: ValidationInfo) -> str:
    """A known event type whose events reach one of the caller's roles (an admin as such receives none)."""
    audience = webhooks.EVENT_TYPES.get(raw) if isinstance(raw, str) else None
    if audience is None:
        refuse(f"must be one of {', '.join(EVENT_TYPE_NAMES)}")
    if audience not in (info.context or {}).get(ROLES, ()):
        refuse(f"must reach one of the caller's roles: {raw} events reach a {audience}")
    return raw


def _event_list(raw: object) -> list:
    if not isinstance(raw, list) or not 1 <= len(raw) <= len(EVENT_TYPE_NAMES):
        refuse(f"must be a list of 1 to {len(EVENT_TYPE_NAMES)} event types")
    return raw


EVENT_TYPE_SCHEMA = {"type": "string", "enum": list(EVENT_TYPE_NAMES)}
_AUDIENCES = "; ".join(f"{role}: {', '.join(n for n, r in webhooks.EVENT_TYPES.items() if r == role)}"
                       for role in dict.fromkeys(webhooks.EVENT_TYPES.values()))
# Event types, each checked in turn (an error names ``events[i]``); duplicates collapse, sorted.
EventTypes = Annotated[
    list[rule(str, _event_type, EVENT_TYPE_SCHEMA)], BeforeValidator(_event_list),
    AfterValidator(lambda names: sorted(set(names))),
    WithJsonSchema({"type": "array", "minItems": 1, "maxItems": len(EVENT_TYPE_NAMES), "items": EVENT_TYPE_SCHEMA,
                    "description": f"each reaching one of the caller's roles ({_AUDIENCES})"}),
]
# A signing secret in a response: shown once, never readable again.
SigningSecret = Annotated[str, Field(pattern=f"^{webhooks.SECRET_PREFIX}")]


class EndpointIn(BaseModel):
    events: EventTypes  # checked before url, as they always were
    url: webhooks.WebhookUrl


class RotationIn(BaseModel):
    grace_s: Whole(0, MAX_GRACE_S) = Field(ROTATION_GRACE_S, description="how long the previous secret still "
                                                                          "signs, in seconds")


class DeliveryQuery(PageQuery):
    status: OneOf(*DELIVERY_STATUSES) = None


class Endpoint(BaseModel):
    """The endpoint"""

    id: Uuid
    url: str
    events: list[EventTypeName]
    created_at: datetime
    disabled_at: datetime | None


class CreatedEndpoint(Endpoint):
    """The endpoint and its signing secret, shown this once"""

    secret: SigningSecret


class DisabledEndpoint(Endpoint):
    """The endpoint, disabled"""

    disabled_at: datetime


class Secret(BaseModel):
    """The new signing secret, shown this once"""

    secret: SigningSecret
    created_at: datetime
    previous_valid_until: datetime | None = Field(description="until when the secret it replaced still signs")


class Attempt(BaseModel):
    attempt: Annotated[int, Field(ge=1)]
    started_at: datetime
    duration_ms: Annotated[int, Field(ge=0)]
    status_code: int | None
    response_excerpt: str | None
    error: str | None


class Delivery(BaseModel):
    """The delivery"""

    id: Uuid
    event_id: Uuid
    event_type: EventTypeName
    status: Literal[DELIVERY_STATUSES]
    attempt_count: Annotated[int, Field(ge=0)]
    next_attempt_at: datetime
    give_up_at: datetime
    created_at: datetime
    finished_at: datetime | None
    payload: dict = Field(description="the event's data")
    attempts: list[Attempt]


class RetriedDelivery(BaseModel):
    """The delivery, pending again"""

    id: Uuid
    status: Literal["pending"]
    next_attempt_at: datetime
    give_up_at: datetime


async def _manager(request: web.Request):
    who = (await caller(request)).require("business", "creator")
    if who.via != "jwt":
        raise forbidden("webhook endpoints are changed with a login token, not an API key")
    return who


@routes.post("/v1/webhook-endpoints", "Subscribe an https endpoint to event types; the signing secret is returned "
             "this once", body=EndpointIn, responses={201: CreatedEndpoint})
async def create_endpoint(request: web.Request) -> web.Response:
    """A new endpoint and its signing secret, shown this once."""
    who = await _manager(request)
    allow_private = request.app[SETTINGS].allows_private_webhooks
    body = await parse(EndpointIn, request, {ROLES: who.roles, webhooks.ALLOW_PRIVATE: allow_private})
    try:
        await webhooks.resolve_checked(asyncio.get_running_loop(), body.url, allow_private=allow_private)
    except webhooks.UnsafeTarget as exc:
        raise invalid("url", f"url {exc}") from None
    secret = webhooks.new_secret()
    async with as_user(request.app[PG_POOL], who.id) as conn:
        count = await (await conn.execute(
            "SELECT count(*) AS n FROM webhook_endpoints WHERE owner_id = %(me)s AND disabled_at IS NULL",
            {"me": who.id})).fetchone()
        if count["n"] >= webhooks.MAX_ENDPOINTS:
            raise conflict("too_many_endpoints",
                           f"at most {webhooks.MAX_ENDPOINTS} webhook endpoints; delete one first")
        row = await (await conn.execute(
            f"SELECT {ENDPOINT_COLUMNS} FROM oros_create_webhook_endpoint(%(url)s, %(events)s, %(secret)s)",
            {"url": body.url, "events": body.events, "secret": secret})).fetchone()
    return respond({**row, "secret": secret}, 201)


@routes.get("/v1/webhook-endpoints", "The caller's endpoints, newest first", query=PageQuery,
            responses={200: Page[Endpoint]})
async def list_endpoints(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business", "creator")
    query = parse_query(PageQuery, request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        page = await fetch_page(conn, f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints",
                                ["owner_id = %(me)s", "disabled_at IS NULL"], {"me": who.id}, query)
    return respond(page)


async def _endpoint(conn, endpoint_id: str, who_id: str) -> dict:
    row = await (await conn.execute(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints"
        " WHERE id = %(id)s AND owner_id = %(me)s AND disabled_at IS NULL", {"id": endpoint_id, "me": who_id}
    )).fetchone()
    if row is None:
        raise not_found("webhook endpoint")
    return row


@routes.get("/v1/webhook-endpoints/{id}", "One endpoint", responses={200: Endpoint})
async def get_endpoint(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business", "creator")
    endpoint_id = path_id(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        return respond(await _endpoint(conn, endpoint_id, who.id))


@routes.delete("/v1/webhook-endpoints/{id}", "Delete an endpoint: it receives nothing more, its pending "
               "deliveries are canceled", responses={200: DisabledEndpoint})
async def delete_endpoint(request: web.Request) -> web.Response:
    """The endpoint stops receiving; its pending deliveries are canceled."""
    who = await _manager(request)
    endpoint_id = path_id(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute(
            f"SELECT {ENDPOINT_COLUMNS} FROM oros_disable_webhook_endpoint(%(id)s)", {"id": endpoint_id}
        )).fetchone()
    if row is None:
        raise not_found("webhook endpoint")
    return respond(row)


@routes.post("/v1/webhook-endpoints/{id}/rotate-secret", "A new signing secret, returned this once; the previous "
             "one still signs for grace_s seconds", body=RotationIn, body_required=False, responses={201: Secret})
async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret, shown this once; the previous one still signs for ``grace_s`` (both signatures are sent)."""
    who = await _manager(request)
    endpoint_id = path_id(request)
    grace_s = (await parse(RotationIn, request)).grace_s
    secret = webhooks.new_secret()
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute(
            "SELECT * FROM oros_rotate_webhook_secret(%(id)s, %(secret)s, %(grace_s)s)",
            {"id": endpoint_id, "secret": secret, "grace_s": grace_s})).fetchone()
    if row is None:
        raise not_found("webhook endpoint")
    return respond({"secret": secret, **row}, 201)


@routes.get("/v1/webhook-endpoints/{id}/deliveries", "The endpoint's deliveries, newest first, each with its "
            "attempts", query=DeliveryQuery, responses={200: Page[Delivery]})
async def list_deliveries(request: web.Request) -> web.Response:
    """The endpoint's deliveries, newest first, each with its attempts (``?status=`` filters)."""
    who = (await caller(request)).require("business", "creator")
    endpoint_id = path_id(request)
    query = parse_query(DeliveryQuery, request)
    where, params = ["endpoint_id = %(endpoint)s"], {"endpoint": endpoint_id}
    if query.status is not None:
        where.append("status = %(status)s")
        params["status"] = query.status
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await _endpoint(conn, endpoint_id, who.id)
        page = await fetch_page(conn, f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries", where, params, query)
        attempts = await (await conn.execute(
            _ATTEMPTS_SQL, {"ids": [row["id"] for row in page["items"]]})).fetchall()
    by_delivery: dict = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt.pop("delivery_id"), []).append(attempt)
    page["items"] = [{**row, "attempts": by_delivery.get(row["id"], [])} for row in page["items"]]
    return respond(page)


@routes.post("/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry", "Try a failed delivery again, from now "
             "for another day (same event id)", responses={200: RetriedDelivery})
async def retry_delivery(request: web.Request) -> web.Response:
    """A failed delivery tried again from now, for another day (same event id)."""
    who = await _manager(request)
    endpoint_id, delivery_id = path_id(request), path_id(request, "delivery_id")
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute(
            "SELECT * FROM oros_retry_webhook_delivery(%(endpoint)s, %(delivery)s)",
            {"endpoint": endpoint_id, "delivery": delivery_id})).fetchone()
        if row is None:
            await _endpoint(conn, endpoint_id, who.id)
            found = await (await conn.execute(
                "SELECT status FROM webhook_deliveries WHERE id = %(id)s AND endpoint_id = %(endpoint)s",
                {"id": delivery_id, "endpoint": endpoint_id})).fetchone()
            if found is None:
                raise not_found("delivery")
            raise conflict("not_failed", f"only a failed delivery is retried; this one is {found['status']}")
    return respond(row)
