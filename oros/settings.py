"""One explicit, frozen settings object, validated when it loads.

Every process builds it once with ``Settings.from_env()`` and passes it into
its factories; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlparse

from .keys import MAX_STREAM_SHARDS, Keys
from .tiers import lowest_creator_fee_pct


class SettingsError(ValueError):
    """A configuration value is missing or malformed; names the variable."""


# The secrets, by the environment variable that carries each (docs/security.md, "Secrets").
JWT_SECRET = "OROS_JWT_SECRET"
STRIPE_WEBHOOK_SECRET = "STRIPE_WEBHOOK_SECRET"
STRIPE_API_KEY = "STRIPE_API_KEY"
IP_HASH_KEY = "OROS_IP_HASH_KEY"
SECRET_FIELDS = {JWT_SECRET: "jwt_secret", STRIPE_WEBHOOK_SECRET: "stripe_webhook_secret",
                 STRIPE_API_KEY: "stripe_api_key", IP_HASH_KEY: "ip_hash_key"}
# While the stored IP is truncated, the settler deduplicates by the IP hash, which ClickHouse keeps
# two days from its UTC day's start (sql/clickhouse/0003): a longer window would outlive it.
ANONYMIZED_MAX_DEDUPE_S = 86_400
MIN_SECRET_BYTES = 32  # HS256 wants a key as long as its output; Stripe's own keys are longer
# Values this project or its compose file once shipped as defaults: published, so never secret.
PUBLISHED_DEFAULTS = frozenset({
    "oros-dev-secret-change-me-in-production", "whsec_oros_dev", "whsec_replace_me",
    "sk_test_oros", "sk_test_replace_me",
})


def _decimal(
    env: dict[str, str], name: str, default: str, *, minimum: Decimal, maximum: Decimal | None = None
) -> Decimal:
    raw = env.get(name, default)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise SettingsError(f"{name}={raw!r} is not a decimal number") from None
    if not value.is_finite() or value < minimum or (maximum is not None and value > maximum):
        raise SettingsError(f"{name}={raw!r} is out of range")
    return value


def _int(env: dict[str, str], name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = env.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name}={raw!r} must be at most {maximum}")
    return value


def _bool(env: dict[str, str], name: str, default: bool | None) -> bool | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() not in ("true", "false", "1", "0"):
        raise SettingsError(f"{name}={raw!r} must be true or false")
    return raw.lower() in ("true", "1")


def _url(env: dict[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = env.get(name) or None
    if raw is not None and urlparse(raw).scheme not in schemes:
        raise SettingsError(f"{name} must use one of the schemes {', '.join(schemes)}")
    return raw


def _cluster_name(env: dict[str, str], name: str) -> str | None:
    raw = env.get(name) or None
    # It is spelled into DDL (ON CLUSTER, Distributed(...)): a plain identifier only.
    if raw is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", raw):
        raise SettingsError(f"{name}={raw!r} is not a cluster name (letters, digits, _)")
    return raw


def _networks(env: dict[str, str], name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    raw = env.get(name, "")
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class Settings:
    # Connections. None means "use the embedded default" (see oros.embedded).
    database_url: str | None = None
    # A streaming replica of database_url: the admin API's lists and reports read there (admin_api/app.py).
    database_read_url: str | None = None
    redis_url: str | None = None
    clickhouse_url: str | None = None
    data_dir: Path = Path(".oros")

    # Scaling out (docs/scaling.md). redis_url is then one seed node of the Redis Cluster.
    redis_cluster: bool = False
    stream_shards: int = 1
    # Replicas that must hold an append before it counts as done (Redis WAIT); None: 1 on a
    # cluster (a failover loses nothing acknowledged), 0 on a plain Redis (its AOF is the copy).
    stream_replicas: int | None = None
    stream_wait_ms: int = 500
    # The ClickHouse cluster (remote_servers) the events table is sharded over; None: one server.
    clickhouse_cluster: str | None = None

    # Secrets have no defaults: each process checks the ones it uses (check_secrets);
    # ``oros dev`` fills them from .oros/secrets.json (oros.embedded.dev_secrets).
    stripe_api_key: str | None = None  # None: Stripe is not configured (card funding answers 503)
    stripe_api_base: str | None = None
    stripe_webhook_secret: str | None = None
    jwt_secret: str | None = None
    # Public by design: the web app hands it to Stripe.js. None: the app offers no card form.
    stripe_publishable_key: str | None = None
    jwt_ttl_s: int = 24 * 3600

    platform_fee_pct: Decimal = Decimal("10")
    tip_fee_pct: Decimal = Decimal("5")
    # A booster's reward: this percent of what its boost paid for (docs/supporters.md, "Boosts").
    boost_reward_pct: Decimal = Decimal("5")
    # A supporter's share link earns it this percent of each payout, out of the creator's net, fixed per
    # share link when it is made (docs/supporters.md, "Share links").
    share_pct: Decimal = Decimal("10")
    hold_days: int = 14
    # The refund_unspent job gives a completed campaign's unspent money back only once a settlement read
    # everything ingested this long after the completion: the longest ingest lag it waits out (docs/supporters.md).
    unspent_grace_s: int = 600
    attribution_days: int = 30
    click_dedupe_s: int = 3600
    min_withdrawal: Decimal = Decimal("10.00")
    trusted_proxies: tuple = field(default_factory=tuple)
    # Ingest truncates the stored IP (IPv4 /24, IPv6 /48) and keys its hash with ip_hash_key
    # (required then; docs/security.md, "IP addresses").
    anonymize_ip: bool = False
    ip_hash_key: str | None = None

    # Tracker tuning.
    flush_interval_ms: int = 0  # appender linger; 0 = flush whenever the event loop is idle
    max_batch: int = 2000
    link_cache_ttl_s: int = 30
    negative_cache_ttl_s: int = 60
    # Public base URL of the tracker; a link's url is this + "/" + code.
    tracker_url: str = "http://127.0.0.1:8080"
    conversion_rate_per_min: int = 6000  # per client IP, conversions and pixels

    # Settler scheduling.
    settle_interval_s: int = 60
    release_interval_s: int = 300
    payout_interval_s: int = 300
    reconcile_interval_s: int = 900
    # Connections a settlement posts campaigns on at once (each campaign is still one transaction).
    settle_workers: int = 2

    # Outgoing webhooks (oros/webhooks.py): whether endpoints may be plain http on private, loopback or
    # link-local addresses (local receivers). None: not set, which is off; `oros dev` turns it on.
    webhooks_allow_private: bool | None = None

    # ClickHouse database that holds the raw events.
    clickhouse_database: str = "oros"
    # Prefix of every Redis key (isolates test runs sharing one Redis).
    redis_prefix: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        return cls(
            database_url=_url(env, "DATABASE_URL", ("postgres", "postgresql")),
            database_read_url=_url(env, "DATABASE_READ_URL", ("postgres", "postgresql")),
            redis_url=_url(env, "REDIS_URL", ("redis", "rediss", "unix")),
            clickhouse_url=_url(env, "CLICKHOUSE_URL", ("http", "https", "chdb")),
            data_dir=Path(env.get("OROS_DATA_DIR", ".oros")),
            redis_cluster=_bool(env, "OROS_REDIS_CLUSTER", False),
            stream_shards=_int(env, "OROS_STREAM_SHARDS", 1, minimum=1, maximum=MAX_STREAM_SHARDS),
            stream_replicas=_int(env, "OROS_STREAM_REPLICAS", 0) if env.get("OROS_STREAM_REPLICAS") else None,
            # Below the tracker's 2 s flush timeout, which would otherwise cut the connection first.
            stream_wait_ms=_int(env, "OROS_STREAM_WAIT_MS", 500, minimum=1, maximum=1500),
            clickhouse_cluster=_cluster_name(env, "CLICKHOUSE_CLUSTER"),
            stripe_api_key=env.get(STRIPE_API_KEY),
            stripe_api_base=_url(env, "STRIPE_API_BASE", ("http", "https")),
            stripe_webhook_secret=env.get(STRIPE_WEBHOOK_SECRET),
            jwt_secret=env.get(JWT_SECRET),
            stripe_publishable_key=env.get("STRIPE_PUBLISHABLE_KEY") or None,
            jwt_ttl_s=_int(env, "OROS_JWT_TTL_S", cls.jwt_ttl_s, minimum=60),
            platform_fee_pct=_decimal(env, "OROS_PLATFORM_FEE_PCT", "10", minimum=Decimal(0), maximum=Decimal(100)),
            tip_fee_pct=_decimal(env, "OROS_TIP_FEE_PCT", "5", minimum=Decimal(0), maximum=Decimal(100)),
            boost_reward_pct=_decimal(env, "OROS_BOOST_REWARD_PCT", "5", minimum=Decimal(0), maximum=Decimal(100)),
            share_pct=_decimal(env, "OROS_SHARE_PCT", "10", minimum=Decimal(0), maximum=Decimal(100)),
            hold_days=_int(env, "OROS_HOLD_DAYS", 14),
            unspent_grace_s=_int(env, "OROS_UNSPENT_GRACE_S", 600),
            attribution_days=_int(env, "OROS_ATTRIBUTION_DAYS", 30, minimum=1),
            click_dedupe_s=_int(env, "OROS_CLICK_DEDUPE_SECONDS", 3600),
            min_withdrawal=_decimal(env, "OROS_MIN_WITHDRAWAL", "10.00", minimum=Decimal("0.01")),
            trusted_proxies=_networks(env, "OROS_TRUSTED_PROXIES"),
            anonymize_ip=_bool(env, "OROS_ANONYMIZE_IP", False),
            ip_hash_key=env.get(IP_HASH_KEY),
            flush_interval_ms=_int(env, "OROS_FLUSH_INTERVAL_MS", 0),
            max_batch=_int(env, "OROS_MAX_BATCH", 2000, minimum=1),
            link_cache_ttl_s=_int(env, "OROS_LINK_CACHE_TTL_S", 30),
            negative_cache_ttl_s=_int(env, "OROS_NEGATIVE_CACHE_TTL_S", 60),
            tracker_url=(_url(env, "OROS_TRACKER_URL", ("http", "https")) or cls.tracker_url).rstrip("/"),
            conversion_rate_per_min=_int(env, "OROS_CONVERSION_RATE_PER_MIN", 6000, minimum=1),
            settle_interval_s=_int(env, "OROS_SETTLE_INTERVAL_S", 60, minimum=1),
            release_interval_s=_int(env, "OROS_RELEASE_INTERVAL_S", 300, minimum=1),
            payout_interval_s=_int(env, "OROS_PAYOUT_INTERVAL_S", 300, minimum=1),
            reconcile_interval_s=_int(env, "OROS_RECONCILE_INTERVAL_S", 900, minimum=1),
            settle_workers=_int(env, "OROS_SETTLE_WORKERS", 2, minimum=1, maximum=64),
            webhooks_allow_private=_bool(env, "OROS_WEBHOOKS_ALLOW_PRIVATE", None),
            clickhouse_database=env.get("OROS_CLICKHOUSE_DATABASE", "oros"),
            redis_prefix=env.get("OROS_REDIS_PREFIX", ""),
        )

    def __post_init__(self) -> None:
        if self.stream_replicas is None:
            object.__setattr__(self, "stream_replicas", 1 if self.redis_cluster else 0)
        if "{" in self.redis_prefix or "}" in self.redis_prefix:
            raise SettingsError("OROS_REDIS_PREFIX may not hold { or }: Redis Cluster would read them as a hash tag")
        if self.redis_cluster and self.redis_url is not None and urlparse(self.redis_url).scheme == "unix":
            raise SettingsError("OROS_REDIS_CLUSTER=true needs a redis:// or rediss:// REDIS_URL (a seed node)")
        if self.boost_reward_pct != self.boost_reward_pct.quantize(Decimal("0.01")):
            raise SettingsError("OROS_BOOST_REWARD_PCT may have at most two decimals (boosts.reward_pct)")
        lowest_fee = lowest_creator_fee_pct(self.platform_fee_pct)
        if self.boost_reward_pct > lowest_fee:
            # A boost reward is paid out of the fee on the campaign's payouts: above the lowest fee a creator
            # can be charged, the platform would pay out more than it took (docs/supporters.md, "Boosts"). Fees
            # are rounded per payout: the rewards a completion pays are also capped at the fees booked (0184).
            raise SettingsError(f"OROS_BOOST_REWARD_PCT={self.boost_reward_pct} is above the lowest creator fee "
                                f"({lowest_fee}%: OROS_PLATFORM_FEE_PCT and the tiers' fee caps, oros/tiers.py)")
        if self.share_pct != self.share_pct.quantize(Decimal("0.01")):
            raise SettingsError("OROS_SHARE_PCT may have at most two decimals (tracking_links.share_pct)")
        if self.anonymize_ip and self.click_dedupe_s > ANONYMIZED_MAX_DEDUPE_S:
            raise SettingsError(f"OROS_CLICK_DEDUPE_SECONDS may be at most {ANONYMIZED_MAX_DEDUPE_S} with "
                                "OROS_ANONYMIZE_IP=true: the IP hash it deduplicates by is kept two days")

    @property
    def allows_private_webhooks(self) -> bool:
        """Local receivers (http, private addresses) allowed: OROS_WEBHOOKS_ALLOW_PRIVATE=true, or `oros dev`."""
        return bool(self.webhooks_allow_private)

    @property
    def ip_secrets(self) -> tuple[str, ...]:
        """The secrets a process that hashes IPs (ingest) needs: the key, while anonymizing."""
        return (IP_HASH_KEY,) if self.anonymize_ip else ()

    def check_secrets(self, *names: str, optional: tuple[str, ...] = ()) -> None:
        """Refuse to run with any of these secrets unset, empty, short or a published default.

        The one place secrets are judged; every entrypoint calls it with the
        secrets its process uses (``optional`` ones may be unset, but not weak).
        The message names the variable, never the value.
        """
        for name in (*names, *optional):
            value = getattr(self, SECRET_FIELDS[name])
            if value is None and name not in names:
                continue
            if value is None:
                problem = "is not set"
            elif not value:
                problem = "is empty"
            elif value in PUBLISHED_DEFAULTS:
                problem = "is a published default value"
            elif len(value.encode()) < MIN_SECRET_BYTES:
                problem = f"is {len(value.encode())} bytes; at least {MIN_SECRET_BYTES} are required"
            else:
                continue
            raise SettingsError(f"{name} {problem} (see docs/security.md, Secrets; `oros dev` needs none)")

    @property
    def keys(self) -> Keys:
        return Keys(self.redis_prefix, self.stream_shards, self.redis_cluster)

    def with_urls(self, *, database_url: str, redis_url: str | None, clickhouse_url: str) -> Settings:
        """The same settings pointed at concrete servers (after embedded start-up)."""
        return replace(self, database_url=database_url, redis_url=redis_url, clickhouse_url=clickhouse_url)
