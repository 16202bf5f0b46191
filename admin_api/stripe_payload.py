"""Reading the Stripe object a verified webhook event carries: typed fields, or a clear refusal.

A field we need and cannot read is a ``400 bad_payload`` naming it (Stripe
sent something that is not the object it claims); an object that is valid
but carries nothing for us raises ``Ignored``, which the webhook acknowledges
and records so Stripe stops retrying.
"""

from __future__ import annotations

from decimal import Decimal

from oros.httperrors import ApiError
from oros.stripe_gateway import from_cents


class Ignored(Exception):
    """The event is valid but carries nothing for us; it is acknowledged and recorded.

    What it decided to send Stripe (``refund_ids`` issued, a subscription to cancel) is sent once the webhook's
    transaction has committed.
    """

    def __init__(self, reason: str, *, refund_ids: tuple[str, ...] = (), cancel_subscription: str | None = None
                 ) -> None:
        super().__init__(reason)
        self.refund_ids = refund_ids
        self.cancel_subscription = cancel_subscription


def cents(obj: dict, name: str) -> Decimal | None:
    """An integer-cents field as money; None when absent or not an integer."""
    raw = obj.get(name)
    if isinstance(raw, bool) or not isinstance(raw, int):
        return None
    return from_cents(raw)


def text(obj: dict, name: str) -> str:
    raw = obj.get(name)
    if not isinstance(raw, str) or not raw:
        raise ApiError(400, "bad_payload", f"the event's object has no {name}", name)
    return raw


def metadata(obj: dict) -> dict:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def object_id(value: object) -> str | None:
    """An expandable field: an id, or the expanded object's id; None when absent."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def lower(value: object) -> str | None:
    return value.lower() if isinstance(value, str) else None
