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

from aiohttp import web

from oros import webhooks
from oros.connections import as_user

from . import openapi as oa
from .auth import caller
from .errors import ApiError, forbidden, invalid, not_found
from .payload import cursor, fetch_page, limit, path_id, read_json, respond, whole
from .typedefs import PG_POOL, SETTINGS

routes = web.RouteTableDef()

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


def _events(body: dict, roles: frozenset[str]) -> list[str]:
    """The event types asked for: known, each one whose events can reach the caller's roles."""
    raw = body.get("events")
    if not isinstance(raw, list) or not 1 <= len(raw) <= len(webhooks.EVENT_TYPES):
        raise invalid("events", f"events must be a list of 1 to {len(webhooks.EVENT_TYPES)} event types")
    for i, name in enumerate(raw):
        audience = webhooks.EVENT_TYPES.get(name) if isinstance(name, str) else None
        if audience is None:
            raise invalid(f"events[{i}]", f"events[{i}] must be one of {', '.join(webhooks.EVENT_TYPES)}")
        if audience not in roles:
            raise invalid(f"events[{i}]", f"{name} events reach a {audience}; the caller is not one")
    return sorted(set(raw))


async def _url(request: web.Request, body: dict) -> str:
    """The endpoint's URL, refused at once when it or the addresses its host resolves to are not allowed."""
    allow_private = request.app[SETTINGS].allows_private_webhooks
    try:
        url = webhooks.check_url(body.get("url"), allow_private=allow_private)
        await webhooks.resolve_checked(asyncio.get_running_loop(), url, allow_private=allow_private)
    except webhooks.UnsafeTarget as exc:
        raise invalid("url", f"url {exc}") from None
    return str(url)


async def _manager(request: web.Request):
    who = (await caller(request)).require("business", "creator")
    if who.via != "jwt":
        raise forbidden("webhook endpoints are changed with a login token, not an API key")
    return who


@routes.post("/v1/webhook-endpoints")
async def create_endpoint(request: web.Request) -> web.Response:
    """A new endpoint and its signing secret, shown this once."""
    who = await _manager(request)
    body = await read_json(request)
    events = _events(body, who.roles)
    url = await _url(request, body)
    secret = webhooks.new_secret()
    async with as_user(request.app[PG_POOL], who.id) as conn:
        count = await (await conn.execute(
            "SELECT count(*) AS n FROM webhook_endpoints WHERE owner_id = %(me)s AND disabled_at IS NULL",
            {"me": who.id})).fetchone()
        if count["n"] >= webhooks.MAX_ENDPOINTS:
            raise ApiError(409, "too_many_endpoints",
                           f"at most {webhooks.MAX_ENDPOINTS} webhook endpoints; delete one first")
        row = await (await conn.execute(
            f"SELECT {ENDPOINT_COLUMNS} FROM oros_create_webhook_endpoint(%(url)s, %(events)s, %(secret)s)",
            {"url": url, "events": events, "secret": secret})).fetchone()
    return respond({**row, "secret": secret}, 201)


@routes.get("/v1/webhook-endpoints")
async def list_endpoints(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business", "creator")
    size, after = limit(request), cursor(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        page = await fetch_page(conn, f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints",
                                ["owner_id = %(me)s", "disabled_at IS NULL"], {"me": who.id}, size, after)
    return respond(page)


async def _endpoint(conn, endpoint_id: str, who_id: str) -> dict:
    row = await (await conn.execute(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints"
        " WHERE id = %(id)s AND owner_id = %(me)s AND disabled_at IS NULL", {"id": endpoint_id, "me": who_id}
    )).fetchone()
    if row is None:
        raise not_found("webhook endpoint")
    return row


@routes.get("/v1/webhook-endpoints/{id}")
async def get_endpoint(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business", "creator")
    endpoint_id = path_id(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        return respond(await _endpoint(conn, endpoint_id, who.id))


@routes.delete("/v1/webhook-endpoints/{id}")
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


@routes.post("/v1/webhook-endpoints/{id}/rotate-secret")
async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret, shown this once; the previous one still signs for ``grace_s`` (both signatures are sent)."""
    who = await _manager(request)
    endpoint_id = path_id(request)
    grace_s = whole(await read_json(request), "grace_s", default=ROTATION_GRACE_S, low=0, high=MAX_GRACE_S)
    secret = webhooks.new_secret()
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute(
            "SELECT * FROM oros_rotate_webhook_secret(%(id)s, %(secret)s, %(grace_s)s)",
            {"id": endpoint_id, "secret": secret, "grace_s": grace_s})).fetchone()
    if row is None:
        raise not_found("webhook endpoint")
    return respond({"secret": secret, **row}, 201)


@routes.get("/v1/webhook-endpoints/{id}/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    """The endpoint's deliveries, newest first, each with its attempts (``?status=`` filters)."""
    who = (await caller(request)).require("business", "creator")
    endpoint_id = path_id(request)
    size, after = limit(request), cursor(request)
    where, params = ["endpoint_id = %(endpoint)s"], {"endpoint": endpoint_id}
    status = request.query.get("status")
    if status is not None:
        if status not in DELIVERY_STATUSES:
            raise invalid("status", f"status must be one of {', '.join(DELIVERY_STATUSES)}")
        where.append("status = %(status)s")
        params["status"] = status
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await _endpoint(conn, endpoint_id, who.id)
        page = await fetch_page(conn, f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries", where, params, size,
                                after)
        attempts = await (await conn.execute(
            _ATTEMPTS_SQL, {"ids": [row["id"] for row in page["items"]]})).fetchall()
    by_delivery: dict = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt.pop("delivery_id"), []).append(attempt)
    page["items"] = [{**row, "attempts": by_delivery.get(row["id"], [])} for row in page["items"]]
    return respond(page)


@routes.post("/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry")
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
            raise ApiError(409, "not_failed", f"only a failed delivery is retried; this one is {found['status']}")
    return respond(row)


EVENT_TYPE = {"enum": list(webhooks.EVENT_TYPES)}
ENDPOINT = oa.obj({
    "id": oa.UUID, "url": {"type": "string"}, "events": {"type": "array", "items": EVENT_TYPE},
    "created_at": oa.TIMESTAMP, "disabled_at": oa.nullable(oa.TIMESTAMP),
}, ["id", "url", "events", "created_at"])
CREATED = {**ENDPOINT, "properties": {**ENDPOINT["properties"], "secret": {"type": "string", "pattern": "^whsec_"}},
           "required": [*ENDPOINT["required"], "secret"]}
ATTEMPT = oa.obj({
    "attempt": {"type": "integer"}, "started_at": oa.TIMESTAMP, "duration_ms": {"type": "integer"},
    "status_code": oa.nullable({"type": "integer"}), "response_excerpt": oa.nullable({"type": "string"}),
    "error": oa.nullable({"type": "string"}),
}, ["attempt", "started_at", "duration_ms"])
DELIVERY = oa.obj({
    "id": oa.UUID, "event_id": oa.UUID, "event_type": EVENT_TYPE, "status": {"enum": list(DELIVERY_STATUSES)},
    "attempt_count": {"type": "integer"}, "next_attempt_at": oa.TIMESTAMP, "give_up_at": oa.TIMESTAMP,
    "created_at": oa.TIMESTAMP, "finished_at": oa.nullable(oa.TIMESTAMP), "payload": {"type": "object"},
    "attempts": {"type": "array", "items": ATTEMPT},
}, ["id", "event_id", "event_type", "status", "attempt_count", "attempts"])
SECRET = oa.obj({"secret": {"type": "string"}, "created_at": oa.TIMESTAMP,
                 "previous_valid_until": oa.nullable(oa.TIMESTAMP)}, ["secret", "created_at"])
RETRIED = oa.obj({"id": oa.UUID, "status": {"type": "string"}, "next_attempt_at": oa.TIMESTAMP,
                  "give_up_at": oa.TIMESTAMP}, ["id", "status"])

OPENAPI = {
    "/v1/webhook-endpoints": {
        "post": oa.operation(
            "Subscribe an https endpoint to event types; the signing secret is returned this once",
            {"201": oa.json_response("the endpoint and its secret", CREATED)},
            body=oa.json_body(oa.obj({"url": {"type": "string", "format": "uri"},
                                      "events": {"type": "array", "minItems": 1, "items": EVENT_TYPE}},
                                     ["url", "events"]))),
        "get": oa.operation("The caller's endpoints, newest first",
                            {"200": oa.json_response("endpoints", oa.page_of(ENDPOINT))}, parameters=oa.PAGE_PARAMS),
    },
    "/v1/webhook-endpoints/{id}": {
        "get": oa.operation("One endpoint", {"200": oa.json_response("the endpoint", ENDPOINT)},
                            parameters=[oa.path_param()]),
        "delete": oa.operation("Delete an endpoint: it receives nothing more, its pending deliveries are canceled",
                               {"200": oa.json_response("the endpoint, disabled", ENDPOINT)},
                               parameters=[oa.path_param()]),
    },
    "/v1/webhook-endpoints/{id}/rotate-secret": {"post": oa.operation(
        "A new signing secret, returned this once; the previous one still signs for grace_s seconds",
        {"201": oa.json_response("the new secret", SECRET)},
        body=oa.json_body(oa.obj({"grace_s": {"type": "integer", "minimum": 0, "maximum": MAX_GRACE_S}}),
                          required=False),
        parameters=[oa.path_param()])},
    "/v1/webhook-endpoints/{id}/deliveries": {"get": oa.operation(
        "The endpoint's deliveries, newest first, each with its attempts",
        {"200": oa.json_response("deliveries", oa.page_of(DELIVERY))},
        parameters=[oa.path_param(), *oa.PAGE_PARAMS,
                    {"name": "status", "in": "query", "required": False,
                     "schema": {"enum": list(DELIVERY_STATUSES)}}])},
    "/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry": {"post": oa.operation(
        "Try a failed delivery again, from now for another day (same event id)",
        {"200": oa.json_response("the delivery, pending again", RETRIED)},
        parameters=[oa.path_param(), oa.path_param("delivery_id")])},
}
