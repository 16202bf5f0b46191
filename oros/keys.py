"""Every Redis key, stream and channel name in one place.

A ``prefix`` (empty in production) isolates test runs that share one Redis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = ""

    @property
    def stream(self) -> str:
        """The event stream every tracker appends to and ingest drains."""
        return f"{self.prefix}events"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}events:dead"

    @property
    def consumer_group(self) -> str:
        return "ingest"

    @property
    def invalidations(self) -> str:
        """Pub/sub channel: a message is a link code (or ``*``) whose cache entries are stale."""
        return f"{self.prefix}invalidate"

    def link(self, code: str) -> str:
        return f"{self.prefix}link:{code}"

    def click(self, click_id: str) -> str:
        """The click index: click id -> the link it came through, kept for the attribution window."""
        return f"{self.prefix}clk:{click_id}"

    def api_key(self, key_hash: str) -> str:
        return f"{self.prefix}apikey:{key_hash}"

    def order(self, campaign_id: str, order_id: str) -> str:
        return f"{self.prefix}order:{campaign_id}:{order_id}"

    def stripe_sale(self, order_id: str) -> str:
        """A Stripe checkout sale's attribution, kept so its later refund finds the same click."""
        return f"{self.prefix}stripe_sale:{order_id}"

    def idempotency(self, business_id: str, key: str) -> str:
        return f"{self.prefix}idem:{business_id}:{key}"

    def rate(self, scope: str, ident: str, window: int) -> str:
        return f"{self.prefix}rate:{scope}:{ident}:{window}"
