"""Every Redis key, stream and channel name in one place.

A ``prefix`` (empty in production) isolates test runs that share one Redis.

The event stream may be split into shards (``OROS_STREAM_SHARDS``; always
named so on a Redis Cluster): shard ``i`` is the stream ``{events:i}``, and
its dead letters, ingest's suspects and the click-index hashes its appends
write carry the same hash tag, so every script and MULTI that touches one
shard's keys stays on one cluster slot. One unsharded stream on a plain
Redis keeps the names it always had (``events``, ``clk:<bucket>``), so an
upgrade strands nothing. docs/scaling.md, "Redis".
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import uuid7_ms

# The click index is one hash per 10 minutes of clicks, not a key per click:
# one HSET per flush instead of a SET per click, and no per-key overhead.
CLICK_BUCKET_MS = 600_000
# A click lookup asks every shard (oros/clickindex.py), so their number stays modest.
MAX_STREAM_SHARDS = 256
CONSUMER_GROUP = "ingest"


def click_bucket(click_id: str) -> int:
    """The click-index bucket of a click: its UUIDv7's milliseconds // ``CLICK_BUCKET_MS``."""
    return uuid7_ms(click_id) // CLICK_BUCKET_MS


@dataclass(frozen=True)
class StreamShard:
    """The names of one stream shard: the stream and everything written in one script or MULTI with it."""

    number: int
    stream: str
    clicks_prefix: str  # the click-index hashes' names start with it
    consumer_group: str = CONSUMER_GROUP

    @property
    def dead_letter(self) -> str:
        return f"{self.stream}:dead"

    @property
    def ingest_suspects(self) -> str:
        """Hash: stream id -> consumer, while ingest inserts alone an entry delivered too often."""
        return f"{self.stream}:suspects"

    def clicks(self, bucket: int) -> str:
        """A click-index hash: click id -> the link it came through, for the clicks of one bucket.

        ``bucket`` is the click's unix milliseconds // ``CLICK_BUCKET_MS``; the
        hash expires the attribution window after its last write.
        """
        return f"{self.clicks_prefix}clk:{bucket}"

    def clicks_of(self, click_id: str) -> str:
        """This shard's click-index hash for ``click_id`` (a UUIDv7: its time names the bucket)."""
        return self.clicks(click_bucket(click_id))


@dataclass(frozen=True)
class Keys:
    prefix: str = ""
    stream_shards: int = 1
    cluster: bool = False  # a Redis Cluster: shard names carry their hash tag even when there is one

    @property
    def shards(self) -> tuple[StreamShard, ...]:
        """Every shard of the event stream: each tracker appender writes one, ingest drains them all."""
        return tuple(self.shard(number) for number in range(self.stream_shards))

    def shard(self, number: int) -> StreamShard:
        if not 0 <= number < self.stream_shards:
            raise ValueError(f"stream shard {number} is not one of 0..{self.stream_shards - 1}")
        if self.stream_shards == 1 and not self.cluster:
            return StreamShard(0, f"{self.prefix}events", self.prefix)
        stream = f"{self.prefix}{{events:{number}}}"
        return StreamShard(number, stream, f"{stream}:")

    @property
    def stream(self) -> str:
        """The event stream, where there is one shard (the default)."""
        return self._only_shard.stream

    @property
    def dead_letter(self) -> str:
        return self._only_shard.dead_letter

    @property
    def ingest_suspects(self) -> str:
        return self._only_shard.ingest_suspects

    def clicks(self, bucket: int) -> str:
        return self._only_shard.clicks(bucket)

    def clicks_of(self, click_id: str) -> str:
        """The click-index hash of ``click_id``, where there is one shard (else oros.clickindex asks each)."""
        return self._only_shard.clicks_of(click_id)

    @property
    def _only_shard(self) -> StreamShard:
        if self.stream_shards != 1:
            raise ValueError(f"the stream has {self.stream_shards} shards: name one (Keys.shard)")
        return self.shard(0)

    @property
    def consumer_group(self) -> str:
        return CONSUMER_GROUP

    @property
    def appenders(self) -> str:
        """Counter: each tracker appender takes the next number; its shard is that number mod the shards."""
        return f"{self.prefix}stream:appenders"

    @property
    def invalidations(self) -> str:
        """Pub/sub channel: a message is a link code (or ``*``) whose cache entries are stale."""
        return f"{self.prefix}invalidate"

    def link(self, code: str) -> str:
        return f"{self.prefix}link:{code}"

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
        """A rate limit's sliding window (oros/ratelimit.py: a hash of counts per second), per scope and who.

        One hash tag for all of them: a login checks its address's and its email's windows in one
        script, which a Redis Cluster runs only on keys of one slot (limits are few next to clicks).
        """
        return f"{self.prefix}{{limit}}:{scope}:{ident}"

    def known_login(self, email_id: str, address: str) -> str:
        """Set once ``address`` logged in to the email: the email's failure limit no longer applies to it."""
        return f"{self.prefix}login:known:{email_id}:{address}"

