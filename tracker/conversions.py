"""POST /v1/conversions (server to server) and GET /px.gif (browser pixel).

Both record a conversion, sale or (API only) refund against the click whose
id the business got in ``oros_cid``. The click index in Redis says which
link, campaign and creator that click came through; an unknown click is
still recorded, against the all-zero campaign, and the settler rejects it
with a reason. Verification (ownership, attribution window, campaign
objective) is the settler's; the edge refuses only what is malformed.

* An order id is recorded once per campaign: its claim (oros/orders.py) is
  atomic, so of two concurrent posts exactly one gets 202 and the other
  200 ``duplicate: true`` with the first one's event id. The claim is scoped
  to the campaign only when the poster owns the campaign; anyone else's
  claims live in their own scope, so a business holding a leaked click id
  cannot burn the owner's order ids.
* The pixel carries no credential: nobody is recorded as its poster, and its
  ``sig`` (oros/pixel.py) is recorded for the settler to check. Its order
  claims live in a scope per signature (or ``unsigned``), so a pixel never
  shadows the owner's authenticated post of the same order, and a forged
  pixel never shadows the genuine signed one.
* ``Idempotency-Key`` (API): the first response is stored for a day and
  replayed for the same key and body; a different body is a 422, a
  concurrent retry a 409.
* ``value`` accepts a decimal string (``"12.50"``) or a JSON number, which is
  read from its text (``parse_float=Decimal``): no float ever holds money.
* Redis is needed here (click index, order claims), so while it is down
  these endpoints answer 503 and the caller retries; redirects keep working.
* Each client address may send ``conversion_rate_per_min`` of them in any
  sliding minute (oros/ratelimit.py); past that, 429 with ``Retry-After``.

Refusals are ``ApiError``s, rendered by the shared error middleware
(oros/httperrors.py), which the tracker puts in front of these two handlers
only (tracker/app.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from decimal import Decimal

import orjson
import psycopg
from aiohttp import web

from oros import apikeys, clickindex, idempotency, orders, ratelimit
from oros.apikeys import NEGATIVE, OWNER_SQL, hash_key
from oros.bots import MAX_UA, bot_reason
from oros.events import CURRENCY_INPUT_RE, ORDER_ID_RE, ORDER_ID_RULE, Event, canonical_uuid, uuid7_ms, uuid7_str
from oros.headers import bearer, text
from oros.httperrors import ApiError, invalid, unavailable
from oros.money import AmountError, fmt, parse_amount
from oros.pixel import SIG_RE

from .appender import AppendError
from .typedefs import APPENDER, CLIENT_IP, KEY_USAGE, KEYS, METRICS, PG_POOL, REDIS, SETTINGS

MAX_BODY = 16 * 1024
API_TYPES = ("conversion", "sale", "refund")
PIXEL_TYPES = ("conversion", "sale")
BODY_FIELDS = {"click_id", "type", "value", "currency", "order_id"}
IDEMPOTENCY_TTL_S = 24 * 3600
RATE_WINDOW_S = 60
# A click this recent that the click index lacks may still be in a tracker's spool (Redis was down
# when it was answered; the replay indexes it moments after Redis is back): the API answers 503 so
# the business retries, rather than recording a conversion nothing can be attributed to.
CLICK_IN_FLIGHT_MS = 10 * 60 * 1000
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


# -- the request's parts --------------------------------------------------------------


async def _check_rate(request: web.Request, ip: str | None) -> None:
    app = request.app
    per_min = app[SETTINGS].conversion_rate_per_min
    try:
        await ratelimit.reserve(app[REDIS], {app[KEYS].limit("conversions", ip or "unknown"): per_min}, RATE_WINDOW_S)
    except ratelimit.Limited as limited:
        app[METRICS].rate_limited.inc()
        raise ApiError(429, "rate_limited", f"more than {per_min} requests a minute from this address",
                       retry_after_s=limited.retry_after_s) from None


async def _business_for_key(request: web.Request) -> str:
    """The id of the business owning the request's Bearer API key."""
    secret = bearer(request.headers.get("Authorization"))
    if secret is None or len(secret) > 200:
        raise ApiError(401, "unauthorized", "send the business API key as 'Authorization: Bearer <key>'")
    app = request.app
    key_hash = hash_key(secret)
    redis_key = app[KEYS].api_key(key_hash)
    cached = await app[REDIS].get(redis_key)
    if cached is None:
        try:
            async with app[PG_POOL].connection(timeout=2.0) as conn:
                row = await (await conn.execute(OWNER_SQL, {"hash": key_hash})).fetchone()
        except (psycopg.Error, OSError, TimeoutError):
            raise unavailable("cannot verify the API key right now, retry shortly") from None
        cached = row["user_id"].encode() if row else NEGATIVE
        ttl = apikeys.CACHE_TTL_S if row else app[SETTINGS].negative_cache_ttl_s
        await apikeys.remember(app[REDIS], app[KEYS], key_hash, cached, ttl)
    if cached == NEGATIVE:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    app[KEY_USAGE].touch(key_hash)
    return cached.decode()


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "too_large", f"body larger than {MAX_BODY} bytes")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "too_large", f"body larger than {MAX_BODY} bytes") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def parse_body(raw: bytes) -> dict:
    """The validated conversion: type, click_id, value (Decimal), currency, order_id."""
    try:
        body = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise invalid("body", "body must be a JSON object") from None
    if not isinstance(body, dict):
        raise invalid("body", "body must be a JSON object")
    for name in body:
        if name not in BODY_FIELDS:
            raise invalid(name, f"unknown field {name!r}")
    event_type = body.get("type")
    if event_type not in API_TYPES:
        raise invalid("type", f"type must be one of {', '.join(API_TYPES)}")
    order_id = _order_id(body.get("order_id"))
    if event_type == "refund" and order_id is None:
        raise invalid("order_id", "a refund needs the order_id of the sale it refunds")
    click_id = body.get("click_id")
    if click_id is not None or event_type != "refund":
        click_id = canonical_uuid(click_id)
        if click_id is None:
            raise invalid("click_id", "click_id must be the oros_cid value (a UUID)")
    return {
        "type": event_type,
        "click_id": click_id,
        "value": _value(body.get("value")),
        "currency": _currency(body.get("currency")),
        "order_id": order_id,
    }


def _value(raw: object) -> Decimal | None:
    if raw is None:
        return None
    try:
        return parse_amount(raw, allow_zero=True)
    except AmountError as exc:
        raise invalid("value", f"value {exc}") from None


def _currency(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not CURRENCY_INPUT_RE.match(raw):
        raise invalid("currency", "currency must be a three-letter ISO 4217 code")
    return raw.upper()


def _order_id(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not ORDER_ID_RE.match(raw):
        raise invalid("order_id", f"order_id must be {ORDER_ID_RULE}")
    return raw


# -- recording ----------------------------------------------------------------------


async def _click(request: web.Request, click_id: str | None) -> dict | None:
    if click_id is None:
        return None
    return await clickindex.lookup(request.app[REDIS], request.app[KEYS], click_id)


def _maybe_spooled(click_id: str | None) -> bool:
    """A UUIDv7 click id (ours) stamped within ``CLICK_IN_FLIGHT_MS`` of now."""
    if click_id is None or click_id[14] != "7":
        return False
    return abs(time.time_ns() // 1_000_000 - uuid7_ms(click_id)) < CLICK_IN_FLIGHT_MS


def _order_key(request: web.Request, fields: dict, campaign_id: str, owner: str | None,
               business_id: str | None) -> str:
    keys, order_id = request.app[KEYS], fields["order_id"]
    if fields["type"] == "refund":
        return orders.refund_key(keys, business_id, order_id, fields["value"])
    if business_id is None:  # the pixel
        return keys.order(f"{campaign_id}:pixel:{fields['sig'] or 'unsigned'}", order_id)
    if owner is not None and owner == business_id:
        return keys.order(campaign_id, order_id)
    return keys.order(f"{campaign_id}:{business_id}", order_id)


async def record(request: web.Request, fields: dict, *, business_id: str | None, source: str) -> tuple[int, dict]:
    """Append the event, or find the order already recorded. Returns (status, body).

    ``business_id`` is the authenticated poster: None for the pixel.
    """
    app = request.app
    settings = app[SETTINGS]
    click = await _click(request, fields["click_id"])
    if click is None and source == "api" and _maybe_spooled(fields["click_id"]):
        raise unavailable("the click is not recorded yet, retry shortly")
    # The click's attribution; the business is the poster's (the pixel's: none), never the click's.
    attributed = {**clickindex.attribution(click), "business_id": business_id}
    campaign_id = attributed["campaign_id"]
    owner = click["business_id"] if click else None
    ts_ms = time.time_ns() // 1_000_000
    event_id = uuid7_str(ts_ms)
    order_key = None
    ttl = orders.ttl_s(settings.attribution_days, settings.hold_days)
    if fields["order_id"] is not None:
        order_key = _order_key(request, fields, campaign_id, owner, business_id)
        first = await orders.claim(app[REDIS], order_key, event_id, ts_ms, ttl)
        if first is not None:
            return 200, {"event_id": first, "duplicate": True}
    headers = request.headers
    user_agent = text(headers.get("User-Agent"))
    reason = bot_reason(request.method, headers, user_agent) if source == "pixel" else None
    event = Event(
        event_id=event_id,
        event_type=fields["type"],
        ts_ms=ts_ms,
        **attributed,
        click_id=fields["click_id"],
        order_id=fields["order_id"],
        value=fmt(fields["value"]),
        currency=fields["currency"],
        ip=app[CLIENT_IP](request),
        user_agent=(user_agent or "")[:MAX_UA] or None,
        referrer=(text(headers.get("Referer")) or "")[:2048] or None,
        is_bot=reason is not None,
        bot_reason=reason,
        source=source,
        metadata={"sig": fields["sig"]} if fields.get("sig") else {},
    )
    try:
        await app[APPENDER].append(event.encode())
    except AppendError:
        if order_key is not None:
            await orders.released(app[REDIS], order_key)
        raise unavailable("could not record the event, retry shortly") from None
    if order_key is not None:
        await orders.recorded(app[REDIS], order_key, event_id, ttl)
    return 202, {"event_id": event_id}


async def _idempotent(request: web.Request, business_id: str, raw: bytes, fields: dict) -> tuple[int, dict]:
    """``record``, or the stored outcome of an earlier request with the same Idempotency-Key."""
    key = request.headers.get(idempotency.HEADER)
    if key is None:
        return await record(request, fields, business_id=business_id, source="api")
    if not idempotency.valid(key):
        raise invalid(idempotency.HEADER, idempotency.PROBLEM)
    redis = request.app[REDIS]
    redis_key = request.app[KEYS].idempotency(business_id, key)
    fingerprint = hashlib.sha256(raw).hexdigest()
    claim = orjson.dumps({"state": "pending", "fingerprint": fingerprint})
    if not await redis.set(redis_key, claim, nx=True, ex=IDEMPOTENCY_TTL_S):
        stored = orjson.loads(await redis.get(redis_key) or b"{}")
        if stored.get("fingerprint") != fingerprint:
            raise invalid("Idempotency-Key", "this Idempotency-Key was used with a different body")
        if stored.get("state") != "done":
            raise ApiError(409, "in_progress", "a request with this Idempotency-Key is still being processed")
        return stored["status"], stored["body"]
    try:
        status, body = await record(request, fields, business_id=business_id, source="api")
    except BaseException:
        await redis.delete(redis_key)  # nothing was recorded: the retry must run
        raise
    done = {"state": "done", "fingerprint": fingerprint, "status": status, "body": body}
    await redis.set(redis_key, orjson.dumps(done), ex=IDEMPOTENCY_TTL_S)
    return status, body


# -- handlers -----------------------------------------------------------------------


async def post_conversion(request: web.Request) -> web.Response:
    await _check_rate(request, request.app[CLIENT_IP](request))
    business_id = await _business_for_key(request)
    raw = await _read_body(request)
    fields = parse_body(raw)
    status, body = await _idempotent(request, business_id, raw, fields)
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"}, dumps=_dumps)


def _malformed(field: str, message: str) -> ApiError:
    """The pixel's refusal: a browser shows no body, so a malformed pixel is simply a 400 naming the field."""
    return ApiError(400, "invalid", message, field)


def parse_pixel(query) -> dict:
    """The pixel's query: ``cid`` (required), ``type``, ``value``, ``currency``, ``order_id``, ``sig``."""
    cid = canonical_uuid(query.get("cid"))
    if cid is None:
        raise _malformed("cid", "cid must be the oros_cid value (a UUID)")
    event_type = query.get("type", "conversion")
    if event_type not in PIXEL_TYPES:
        raise _malformed("type", f"type must be one of {', '.join(PIXEL_TYPES)}")
    try:
        fields = {
            "type": event_type,
            "click_id": cid,
            "value": _value(query.get("value")),
            "currency": _currency(query.get("currency")),
            "order_id": _order_id(query.get("order_id")),
        }
    except ApiError as refused:
        raise _malformed(refused.field, refused.message) from None
    fields["sig"] = _sig(query, fields)
    return fields


def _sig(query, fields: dict) -> str | None:
    """The pixel's signature, lower case; its message must be what the settler will rebuild."""
    sig = query.get("sig")
    if sig is None:
        return None
    sig = sig.lower()
    if not SIG_RE.fullmatch(sig):
        raise _malformed("sig", "sig must be the 64 hex digits of an HMAC-SHA256 (README: the pixel recipe)")
    # The settler checks the signature over the recorded values: refuse a spelling it would not rebuild.
    if query.get("cid") != fields["click_id"]:
        raise _malformed("cid", "a signed pixel's cid must be the oros_cid value as given (lower case)")
    if query.get("value") is not None and query.get("value") != fmt(fields["value"]):
        raise _malformed("value", "a signed pixel's value must have two decimals (12.50), as signed")
    return sig


async def pixel(request: web.Request) -> web.Response:
    if len(request.rel_url.raw_query_string) > 2048:
        raise _malformed("query", "query string longer than 2048 bytes")
    fields = parse_pixel(request.query)
    await _check_rate(request, request.app[CLIENT_IP](request))
    await record(request, fields, business_id=None, source="pixel")
    # A duplicate order is still a 200: the browser has nothing to do about it.
    return web.Response(body=GIF, content_type="image/gif", headers={"Cache-Control": "no-store"})
