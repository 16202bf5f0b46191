"""``POST /v1/webhooks/stripe``: Stripe tells us money moved.

Each Stripe event is applied once: its id is inserted into ``stripe_events``
in the same Postgres transaction as its effect, so a redelivery finds the row
and changes nothing, and a failed effect rolls the row back for Stripe's retry.

* ``payment_intent.succeeded`` credits only a PaymentIntent that
  ``POST /v1/campaigns/{id}/fund`` recorded, for that row's campaign, amount
  and currency (``oros_credit_payment_intent``); the intent's metadata is never
  trusted. ``payment_intent.payment_failed`` marks the pending funding failed.
* A paid checkout session carrying an ``oros_cid`` becomes a ``sale`` event:
  ``checkout.session.completed`` with ``payment_status`` ``paid`` (cards), or
  ``checkout.session.async_payment_succeeded`` (bank debits and other delayed
  methods, whose ``completed`` said ``unpaid``). Anything unpaid books nothing.
  ``charge.refunded`` becomes a ``refund`` event. Both are appended to the Redis
  stream through ``oros.stream``, as the tracker's are; the settler pays or
  reverses them. Their event ids derive from the Stripe event id, so even an
  append whose Postgres commit then failed collapses with its redelivery
  downstream.
* Tips, boosts, memberships, and the refunds and disputes of payments of
  ours (a tip, a card funding, a boost, a membership invoice) are
  admin_api.billing_events': a ``payment_intent.succeeded`` is a tip's first,
  else a boost's, else a funding's, and a ``charge.refunded`` of a payment of
  ours is taken back in the books instead of becoming a sale's refund event.
  A refund an event issued (a boost its campaign can no longer take) is sent
  to Stripe once the event's transaction has committed.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import timedelta
from typing import Any, Literal

import orjson
import psycopg
import redis.asyncio as aioredis
import stripe
from aiohttp import web
from pydantic import BaseModel, RootModel
from redis.exceptions import RedisClusterException

from oros import clickindex, stream
from oros.events import Event, canonical_uuid
from oros.httperrors import ApiError
from oros.money import fmt
from oros.reasons import UNKNOWN_CAMPAIGN
from oros.settings import Settings
from oros.stripe_gateway import CURRENCY
from oros.wire import Money, Uuid

from . import billing_events, refunds
from .payload import respond
from .routing import Header, Routes
from .stripe_payload import Ignored, cents, lower, metadata, text
from .typedefs import PG_POOL, REDIS, SETTINGS

log = logging.getLogger(__name__)

routes = Routes()


_CLAIM_SQL = "INSERT INTO stripe_events (id, type) VALUES (%(id)s, %(type)s) ON CONFLICT DO NOTHING RETURNING id"

_CREDIT_SQL = "SELECT * FROM oros_credit_payment_intent(%(event)s, %(pi)s, %(amount)s, %(currency)s)"

_FAIL_SQL = "SELECT oros_fail_stripe_funding(%(pi)s) AS n"

# The sale as the settler recorded it, when the Redis record has gone; not an unsigned pixel's that named
# the same order (sql/postgres/0167).
_SETTLED_SALE_SQL = """
SELECT e.campaign_id::text AS campaign_id, e.tracking_link_id::text AS link_id, e.creator_id::text AS creator_id,
       e.supporter_id::text AS supporter_id, c.business_id::text AS business_id, e.click_id::text AS click_id
  FROM events e JOIN campaigns c ON c.id = e.campaign_id
 WHERE e.event_type = 'sale' AND e.order_id = %(order)s
 ORDER BY e.unsigned_pixel, e.status = 'paid' DESC
 LIMIT 1
"""


class StripeEvent(RootModel[dict[str, Any]]):
    """A Stripe event, read raw: its signature covers the exact bytes."""


class Received(BaseModel):
    """Acknowledged: applied, a duplicate, or ignored"""

    received: bool
    status: Literal["applied", "duplicate", "ignored"]
    reason: str = None
    funding_id: Uuid = None
    campaign_id: Uuid = None
    amount: Money = None
    event_id: Uuid = None
    fundings_failed: int = None
    tips_failed: int = None
    boosts_failed: int = None
    tip_id: Uuid = None
    boost_id: Uuid = None
    refund_id: Uuid = None
    creator_id: Uuid = None
    membership_id: Uuid = None
    memberships_failed: int = None
    monthly_tips_ended: int = None
    outcome: str = None
    kind: Literal["tip", "funding", "boost", "membership"] = None
    object_id: Uuid = None
    taken_back: Money = None


@routes.post("/v1/webhooks/stripe", "Stripe webhook (signed with the configured secret): funding, tips, memberships, "
             "checkout sales, refunds and disputes; each Stripe event is applied once", body=StripeEvent,
             responses={200: Received}, headers=(Header("Stripe-Signature", str, required=True),), access="public")
async def stripe_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    payload = await request.read()
    event = _verified_event(payload, request.headers.get("Stripe-Signature"), settings.stripe_webhook_secret)
    apply = APPLIERS.get(event["type"])
    if apply is None:
        return respond({"received": True, "status": "ignored", "reason": f"unhandled type {event['type']}"})
    ignored: Ignored | None = None
    async with request.app[PG_POOL].connection() as conn:
        try:
            async with conn.transaction():
                claimed = await (await conn.execute(_CLAIM_SQL, {"id": event["id"], "type": event["type"]})
                                 ).fetchone()
                if claimed is None:
                    return respond({"received": True, "status": "duplicate"})
                try:
                    result = await apply(conn, request.app[REDIS], settings, event)
                except Ignored as exc:
                    log.info("stripe event ignored", extra={"stripe_event": event["id"], "reason": str(exc)})
                    ignored = exc
                except (aioredis.RedisError, RedisClusterException):  # the latter: a cluster mid-failover
                    log.exception("event stream unavailable", extra={"stripe_event": event["id"]})
                    # 503 rolls the claim back, so Stripe's retry applies the event later.
                    raise ApiError(503, "unavailable", "the event stream is unavailable; retry later") from None
        except psycopg.errors.CheckViolation as exc:
            if exc.diag.constraint_name != "positive_available":
                raise
            # Money Stripe took back is more than the platform holds at Stripe (clearing): the books refuse an
            # overdraft, so the event (its claim too) rolled back and waits for Stripe's retry until cash arrives.
            # Stripe's side is kept meanwhile, so reconcile names it (sql/postgres/0175).
            log.error("stripe took back more than clearing holds", extra={"stripe_event": event["id"],
                                                                        "detail": exc.diag.message_primary})
            async with conn.transaction():
                await billing_events.note_takeback(conn, event)
            raise ApiError(503, "unavailable", "the books cannot take this payment back yet; retry later",
                           retry_after_s=60) from None
    # What the committed transaction decided to send Stripe.
    if ignored is not None:
        await refunds.send_refunds(request, list(ignored.refund_ids))
        if ignored.cancel_subscription is not None:
            await billing_events.cancel_subscription(settings, ignored.cancel_subscription)
        return respond({"received": True, "status": "ignored", "reason": str(ignored)})
    if "refund_id" in result:
        await refunds.send_refunds(request, [result["refund_id"]])
    if (sub := result.pop("cancel_subscription", None)) is not None:
        await billing_events.cancel_subscription(settings, sub)
    return respond({"received": True, "status": "applied", **result})


def _verified_event(payload: bytes, signature: str | None, secret: str) -> dict:
    """The event as a plain dict; 400 when the signature or the body is bad."""
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret).to_dict()
    except stripe.SignatureVerificationError:
        raise ApiError(
            400, "bad_signature", "Stripe-Signature does not match the payload", "Stripe-Signature"
        ) from None
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        raise ApiError(400, "bad_payload", "the webhook body is not a Stripe event") from None
    data = event.get("data")
    if (
        not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
        or not isinstance(data, dict)
        or not isinstance(data.get("object"), dict)
    ):
        raise ApiError(400, "bad_payload", "the webhook body is not a Stripe event")
    return event


async def _payment_succeeded(conn: psycopg.AsyncConnection, redis, settings: Settings, event: dict) -> dict:
    intent = event["data"]["object"]
    pi_id = text(intent, "id")
    # Stripe always sends amount_received; localstripe (the embedded Stripe) sends only amount.
    received = cents(intent, "amount_received" if "amount_received" in intent else "amount")
    currency = lower(intent.get("currency"))
    if (tip := await billing_events.credit_tip(conn, settings, event, pi_id, received, currency)) is not None:
        return tip
    if (boost := await billing_events.credit_boost(conn, settings, event, pi_id, received, currency)) is not None:
        return boost
    row = await (await conn.execute(_CREDIT_SQL, {
        "event": event["id"], "pi": pi_id, "amount": received, "currency": currency,
    })).fetchone()
    if row["outcome"] == "credited":
        return {"funding_id": str(row["funding_id"]), "campaign_id": str(row["campaign_id"]),
                "amount": fmt(row["amount"])}
    context = {"stripe_event": event["id"], "payment_intent": pi_id, "reason": row["reason"],
               "claimed_campaign": metadata(intent).get("oros_campaign_id")}
    if row["outcome"] == "refused":
        # Money reached Stripe but not the books: a person must refund it or book it off-Stripe.
        log.error("payment intent refused: paid at Stripe, nothing credited", extra=context)
    elif context["claimed_campaign"] is not None and row["funding_id"] is None:
        log.warning("payment intent names a campaign but no funding row: nothing credited", extra=context)
    raise Ignored(row["reason"])


async def _payment_failed(conn: psycopg.AsyncConnection, redis, settings: Settings, event: dict) -> dict:
    pi_id = text(event["data"]["object"], "id")
    row = await (await conn.execute(_FAIL_SQL, {"pi": pi_id})).fetchone()
    return {"fundings_failed": row["n"], "tips_failed": await billing_events.fail_tip(conn, pi_id),
            "boosts_failed": await billing_events.fail_boost(conn, pi_id)}


async def _checkout_paid(conn: psycopg.AsyncConnection, redis, settings: Settings, event: dict) -> dict:
    session = event["data"]["object"]
    # A session completes before a delayed payment clears (or fails): only money received is a sale.
    if session.get("payment_status") != "paid":
        raise Ignored(f"checkout session payment_status is {session.get('payment_status')!r}, not paid")
    cid = canonical_uuid(session.get("client_reference_id") or metadata(session).get("oros_cid"))
    if cid is None:
        raise Ignored("checkout session carries no oros_cid")
    value = cents(session, "amount_total")
    if value is None:
        raise Ignored("checkout session has no amount_total")
    order_id = session.get("payment_intent") or text(session, "id")
    click = await _click(redis, settings, cid)
    sale = {**clickindex.attribution(click), "click_id": cid}
    appended = Event(
        event_id=_event_id(event),
        event_type="sale",
        ts_ms=_created_ms(event),
        order_id=str(order_id),
        value=fmt(value),
        currency=str(session.get("currency") or CURRENCY).upper(),
        source="stripe",
        metadata={"stripe_event": event["id"], "checkout_session": session.get("id")},
        **sale,
    )
    await stream.append_durably(redis, settings, [appended.encode()])
    # Refunds name only the charge's PaymentIntent: remember which click it paid for.
    ttl = timedelta(days=settings.attribution_days + settings.hold_days)
    await redis.set(settings.keys.stripe_sale(str(order_id)), orjson.dumps(sale), ex=ttl)
    return {"event_id": appended.event_id, "campaign_id": sale["campaign_id"]}


async def _checkout_payment_failed(conn: psycopg.AsyncConnection, redis, settings: Settings, event: dict) -> dict:
    # Its checkout.session.completed said unpaid and booked nothing, so there is nothing to undo.
    raise Ignored("checkout session payment failed: no sale")


async def _charge_refunded(conn: psycopg.AsyncConnection, redis, settings: Settings, event: dict) -> dict:
    charge = event["data"]["object"]
    if (taken := await billing_events.record_refund(conn, charge)) is not None:
        return taken
    order_id = str(charge.get("payment_intent") or text(charge, "id"))
    value = cents(charge, "amount_refunded")
    if value is None or value <= 0:
        raise Ignored("charge has no refunded amount")
    sale = await _original_sale(conn, redis, settings, order_id, metadata(charge).get("oros_cid"))
    if not sale and charge.get("payment_intent") and await billing_events.pays_an_invoice(settings, order_id):
        # A subscription invoice's refund before its invoice.paid: kept (record_refund) for the booking, no sale's.
        raise Ignored(f"PaymentIntent {order_id} pays a subscription invoice not booked yet: the refund is kept "
                      "for when it is")
    appended = Event(
        event_id=_event_id(event),
        event_type="refund",
        ts_ms=_created_ms(event),
        campaign_id=sale.get("campaign_id") or UNKNOWN_CAMPAIGN,
        link_id=sale.get("link_id"),
        creator_id=sale.get("creator_id"),
        supporter_id=sale.get("supporter_id"),
        business_id=sale.get("business_id"),
        click_id=sale.get("click_id"),
        order_id=order_id,
        value=fmt(value),
        currency=str(charge.get("currency") or CURRENCY).upper(),
        source="stripe",
        metadata={
            "stripe_event": event["id"], "charge": charge.get("id"), "fully_refunded": bool(charge.get("refunded"))
        },
    )
    await stream.append_durably(redis, settings, [appended.encode()])
    return {"event_id": appended.event_id, "campaign_id": appended.campaign_id}


async def _original_sale(conn, redis, settings: Settings, order_id: str, cid: object) -> dict:
    """The refunded sale's attribution: our Redis record, else the settler's, else the charge's oros_cid."""
    raw = await redis.get(settings.keys.stripe_sale(order_id))
    if raw:
        return orjson.loads(raw)
    row = await (await conn.execute(_SETTLED_SALE_SQL, {"order": order_id})).fetchone()
    if row is not None:
        return dict(row)
    cid = canonical_uuid(cid)
    if cid is not None:
        return {**await _click(redis, settings, cid), "click_id": cid}
    return {}


async def _click(redis, settings: Settings, cid: str) -> dict:
    return await clickindex.lookup(redis, settings.keys, cid) or {}


def _event_id(event: dict) -> str:
    """A UUIDv7 fixed by the Stripe event: its time, then bits of a hash of its id."""
    digest = int.from_bytes(hashlib.sha256(event["id"].encode()).digest()[:10], "big")
    value = (_created_ms(event) & 0xFFFF_FFFF_FFFF) << 80 | digest
    value = value & ~(0xF << 76) | 0x7 << 76
    value = value & ~(0x3 << 62) | 0x2 << 62
    return str(uuid.UUID(int=value))


def _created_ms(event: dict) -> int:
    created = event.get("created")
    if isinstance(created, bool) or not isinstance(created, int) or created <= 0:
        raise ApiError(400, "bad_payload", "the Stripe event has no creation time", "created")
    return created * 1000


APPLIERS = {
    "payment_intent.succeeded": _payment_succeeded,
    "payment_intent.payment_failed": _payment_failed,
    "checkout.session.completed": _checkout_paid,
    "checkout.session.async_payment_succeeded": _checkout_paid,
    "checkout.session.async_payment_failed": _checkout_payment_failed,
    "charge.refunded": _charge_refunded,
    **billing_events.APPLIERS,
}
