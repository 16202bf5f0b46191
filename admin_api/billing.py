"""The Stripe objects the supporter flows create: payment intents, customers, monthly subscriptions.

A client per request (as ``admin_api.funding``), closed when the request is
done. Every POST carries an idempotency key derived from our own row id, so
a retried request asks Stripe for the same object. A subscription is created
``default_incomplete``: its first invoice waits for the customer's card (the
invoice's confirmation secret, confirmed with Stripe.js as a PaymentIntent's
client secret is), and nothing is ours until ``invoice.paid`` arrives
(admin_api.billing_events). A Stripe refusal or outage is ``502
stripe_error``; no Stripe configured is ``503 stripe_not_configured``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import stripe
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from oros.connections import as_user
from oros.httperrors import ApiError
from oros.settings import STRIPE_API_KEY, Settings
from oros.stripe_gateway import CURRENCY, async_stripe_client, to_cents

from .typedefs import SETTINGS

log = logging.getLogger(__name__)

_CUSTOMER_SQL = "SELECT customer_id FROM stripe_customers WHERE user_id = %(me)s"
_REMEMBER_CUSTOMER_SQL = "SELECT oros_remember_stripe_customer(%(customer)s) AS customer_id"


def require_stripe(settings: Settings) -> None:
    if settings.stripe_api_key is None:
        raise ApiError(503, "stripe_not_configured",
                       f"payments are unavailable: {STRIPE_API_KEY} is not set on this server")


@asynccontextmanager
async def client(request: web.Request) -> AsyncIterator[stripe.StripeClient]:
    """A Stripe client for this request; any Stripe error inside becomes ``502 stripe_error``."""
    stripe_client, http = async_stripe_client(request.app[SETTINGS])
    try:
        yield stripe_client
    except stripe.StripeError as exc:
        log.warning("stripe refused a request", extra={"path": request.path, "error": str(exc)})
        raise ApiError(502, "stripe_error", "the payment provider did not accept the request; try again") from None
    finally:
        await http.close_async()


async def payment_intent(stripe_client: stripe.StripeClient, amount: Decimal, metadata: dict, key: str):
    """A card PaymentIntent for ``amount`` usd (its ``client_secret`` goes to Stripe.js)."""
    return await stripe_client.v1.payment_intents.create_async(
        {"amount": to_cents(amount), "currency": CURRENCY, "payment_method_types": ["card"], "metadata": metadata},
        {"idempotency_key": key},
    )


async def customer(stripe_client: stripe.StripeClient, pool: AsyncConnectionPool, user_id: str) -> str:
    """The user's Stripe customer: the one recorded, else a new one (the first recorded wins a race)."""
    async with as_user(pool, user_id) as conn:
        row = await (await conn.execute(_CUSTOMER_SQL, {"me": user_id})).fetchone()
    if row is not None:
        return row["customer_id"]
    made = await stripe_client.v1.customers.create_async(
        {"metadata": {"oros_user_id": user_id}}, {"idempotency_key": f"customer:{user_id}"})
    async with as_user(pool, user_id) as conn:
        return (await (await conn.execute(_REMEMBER_CUSTOMER_SQL, {"customer": made.id})).fetchone())["customer_id"]


async def product(stripe_client: stripe.StripeClient, product_id: str, name: str) -> str:
    """A product with our own fixed id (a tier, the monthly tip), made the first time it is needed."""
    try:
        await stripe_client.v1.products.retrieve_async(product_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status != 404:
            raise
        try:
            await stripe_client.v1.products.create_async({"id": product_id, "name": name})
        except stripe.InvalidRequestError as again:
            if again.code != "resource_already_exists":
                raise
    return product_id


@dataclass(frozen=True)
class Subscribed:
    subscription_id: str
    client_secret: str | None


async def subscribe(stripe_client: stripe.StripeClient, *, customer_id: str, product_id: str, amount: Decimal,
                    metadata: dict, key: str) -> Subscribed:
    """A monthly subscription of ``amount`` usd, waiting for its first payment."""
    sub = await stripe_client.v1.subscriptions.create_async(
        {
            "customer": customer_id,
            "items": [{"price_data": {"currency": CURRENCY, "product": product_id, "unit_amount": to_cents(amount),
                                      "recurring": {"interval": "month"}}}],
            "payment_behavior": "default_incomplete",
            "payment_settings": {"payment_method_types": ["card"], "save_default_payment_method": "on_subscription"},
            "metadata": metadata,
            "expand": ["latest_invoice.confirmation_secret"],
        },
        {"idempotency_key": key},
    )
    invoice = sub.to_dict().get("latest_invoice")
    secret = (invoice.get("confirmation_secret") or {}).get("client_secret") if isinstance(invoice, dict) else None
    return Subscribed(sub.id, secret)


async def cancel(stripe_client: stripe.StripeClient, subscription_id: str, *, at_period_end: bool,
                 key: str) -> datetime | None:
    """Cancel now, or at the end of the paid period; returns that period's end when Stripe tells it."""
    if at_period_end:
        sub = await stripe_client.v1.subscriptions.update_async(
            subscription_id, {"cancel_at_period_end": True}, {"idempotency_key": key})
    else:
        sub = await stripe_client.v1.subscriptions.cancel_async(subscription_id)
    return period_end(sub.to_dict())


def period_end(subscription: dict) -> datetime | None:
    """The end of a subscription's paid period: on its item (Stripe's API since 2025), or on itself (older)."""
    items = (subscription.get("items") or {}).get("data") or []
    raw = (items[0].get("current_period_end") if items and isinstance(items[0], dict) else None) \
        or subscription.get("current_period_end")
    if isinstance(raw, bool) or not isinstance(raw, int):
        return None
    return datetime.fromtimestamp(raw, tz=UTC)
