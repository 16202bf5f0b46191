"""Stripe webhook events as the tests send them: the bodies, and signed as Stripe signs them."""

from __future__ import annotations

import hashlib
import hmac
import time

import orjson

SECRET = "whsec_test_sales"  # the webhook secret the tests that ``post`` configure
FIVE_MILLION_CENTS = 500_000_000


def signed(payload: bytes, secret: str) -> dict:
    """The headers of a webhook delivery of ``payload`` signed with ``secret`` (Stripe-Signature, scheme v1)."""
    stamp = int(time.time())
    signature = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={stamp},v1={signature}", "Content-Type": "application/json"}


async def post(api, event: dict):
    """Deliver ``event`` to the admin API's webhook, signed with ``SECRET``."""
    payload = orjson.dumps(event)
    return await api.post("/v1/webhooks/stripe", data=payload,
                          headers={"Stripe-Signature": signed(payload, SECRET)["Stripe-Signature"]})


def checkout(event_id: str, session: dict) -> dict:
    obj = {"id": "cs_test_1", "object": "checkout.session", "amount_total": 4999, "currency": "eur",
           "payment_status": "paid", "payment_intent": "pi_sale_1", "metadata": {}, **session}
    return {"id": event_id, "type": "checkout.session.completed", "created": 1_764_000_000, "data": {"object": obj}}


def succeeded_event(event_id: str, pi_id: str, cents: int, metadata: dict | None = None) -> bytes:
    return orjson.dumps({
        "id": event_id, "object": "event", "type": "payment_intent.succeeded", "created": int(time.time()),
        "data": {"object": {"id": pi_id, "object": "payment_intent", "amount": cents, "amount_received": cents,
                            "currency": "usd", "status": "succeeded", "metadata": metadata or {}}},
    })
