"""The one place the ``stripe`` client is configured, and money <-> Stripe's integer cents.

A ``StripeClient`` (not the module-level globals) carries the key and the API
base, so the admin API, the payout job and the tests can each point at a
different server (Stripe, ``localstripe``, the transfer test double) in one
process.
"""

from __future__ import annotations

from decimal import Decimal

import aiohttp
import stripe

from .money import CENT
from .settings import Settings

CURRENCY = "usd"  # wallets and budgets are USD (wallets.currency defaults to 'USD')
# Stripe charges at most $999,999.99 and at least $0.50 at once.
MAX_STRIPE_AMOUNT = Decimal("999999.99")
MIN_STRIPE_AMOUNT = Decimal("0.50")
TIMEOUT_S = 30


def stripe_client(settings: Settings, *, max_network_retries: int = 2) -> stripe.StripeClient:
    """A synchronous client (jobs). Stripe retries only with an idempotency key, so retries are safe."""
    return stripe.StripeClient(
        settings.stripe_api_key,
        base_addresses=_base_addresses(settings),
        max_network_retries=max_network_retries,
        http_client=stripe.RequestsClient(timeout=TIMEOUT_S),
    )


def async_stripe_client(settings: Settings) -> tuple[stripe.StripeClient, stripe.AIOHTTPClient]:
    """A client for ``*_async`` calls inside a running event loop; close the second item when done."""
    http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
    client = stripe.StripeClient(
        settings.stripe_api_key,
        base_addresses=_base_addresses(settings),
        max_network_retries=2,
        http_client=http,
    )
    return client, http


def _base_addresses(settings: Settings) -> dict:
    return {"api": settings.stripe_api_base} if settings.stripe_api_base else {}


def to_cents(amount: Decimal) -> int:
    return int(amount.quantize(CENT) * 100)


def from_cents(cents: int) -> Decimal:
    return (Decimal(int(cents)) / 100).quantize(CENT)
