"""Every Redis key, stream and channel name in one place.

A ``prefix`` (empty in production) isolates test runs that share one Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import uuid7_ms

# The click index is one hash per 10 minutes of clicks, not a key per click:
# one HSET per flush instead of a SET per click, and no per-key overhead.
CLICK_BUCKET_MS = 600_000


def click_bucket(click_id: str) -> int:
    """The click-index bucket of a click: its UUIDv7's milliseconds // ``CLICK_BUCKET_MS``."""
    return uuid7_ms(click_id) // CLICK_BUCKET_MS


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
    def ingest_suspects(self) -> str:
        """Hash: stream id -> consumer, while ingest inserts alone an entry delivered too often."""
        return f"{self.prefix}events:suspects"

    @property
    def consumer_group(self) -> str:
        return "ingest"

    @property
    def invalidations(self) -> str:
        """Pub/sub channel: a message is a link code (or ``*``) whose cache entries are stale."""
        return f"{self.prefix}invalidate"

    def link(self, code: str) -> str:
        return f"{self.prefix}link:{code}"

    def clicks(self, bucket: int) -> str:
        """A click-index hash: click id -> the link it came through, for the clicks of one bucket.

        ``bucket`` is the click's unix milliseconds // ``CLICK_BUCKET_MS``; the
        hash expires the attribution window after its last write.
        """
        return f"{self.prefix}clk:{bucket}"

    def clicks_of(self, click_id: str) -> str:
        """The click-index hash that holds ``click_id`` (a UUIDv7: its time names the bucket)."""
        return self.clicks(click_bucket(click_id))

    def api_key(self, key_hash: str) -> str:
        return f"{self.prefix}apikey:{key_hash}"

    def order(self, campaign_id: str, order_id: str) -> str:
        return f"{self.prefix}order:{campaign_id}:{order_id}"

    def stripe_sale(self, order_id: str) -> str:
        """A Stripe checkout sale's attribution, kept so its later refund finds the same click."""
        return f"{self.prefix}stripe_sale:{order_id}"

    def idempotency(self, business_id: str, key: str) -> str:
        return f"{self.prefix}idem:{business_id}:{key}"

    def revoked_session(self, sid: str) -> str:
        """A logged-out web session id; expires when its token would have."""
        return f"{self.prefix}session:revoked:{sid}"

    def limit(self, scope: str, ident: str) -> str:
        """A rate limit's sliding window (oros/ratelimit.py: a hash of counts per second), per scope and who."""
        return f"{self.prefix}limit:{scope}:{ident}"

    def known_login(self, email_id: str, address: str) -> str:
        """Set once ``address`` logged in to the email: the email's failure limit no longer applies to it."""
        return f"{self.prefix}login:known:{email_id}:{address}"

