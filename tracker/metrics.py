"""Prometheus metrics of one tracker process, served at ``GET /metrics``.

Each app owns its registry (tests build many apps in one process, and the
default global registry refuses duplicate names). With ``--workers N`` every
worker answers for itself; scrape each, or run one worker per container.
The two counters every redirect touches are plain ints (``Tally``): a dict
update instead of prometheus_client's lock and checks.
"""

from __future__ import annotations

from collections import Counter as Counts

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
FLUSH_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class Tally(Counts):
    """A labelled Prometheus counter kept as ``{label values: count}``."""

    # The registry keys collectors by identity; a dict's value equality would not do.
    __hash__ = object.__hash__
    __eq__ = object.__eq__

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        super().__init__()
        self.name, self.documentation, self.labels = name, documentation, labels

    def collect(self):
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, count in sorted(self.items()):
            family.add_metric(values, count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        # requests[(route, status)] += 1
        self.requests = Tally("oros_tracker_requests", "HTTP requests answered", ("route", "status"))
        # link_cache[(layer,)] += 1; layer: local (in-process hit), miss, redis, postgres
        self.link_cache = Tally("oros_tracker_link_cache", "Link lookups by the layer that answered", ("layer",))
        r.register(self.requests)
        r.register(self.link_cache)
        self.events = Counter("oros_tracker_events_appended", "Events made durable, by where", ["sink"], registry=r)
        self.batch_size = Histogram("oros_tracker_batch_size", "Events per group-commit flush", buckets=BATCH_BUCKETS, registry=r)
        self.flush_seconds = Histogram("oros_tracker_flush_seconds", "Latency of one group-commit flush", buckets=FLUSH_BUCKETS, registry=r)
        self.flush_failures = Counter("oros_tracker_flush_failures", "Flushes that fell back to the spool", registry=r)
        self.spool_depth = Gauge("oros_tracker_spool_depth", "Events in the local spool, not yet replayed", registry=r)
        self.replayed = Counter("oros_tracker_replayed_events", "Spooled events replayed into the stream", registry=r)
        self.redis_up = Gauge("oros_tracker_redis_up", "1 while the appender writes to Redis, 0 while it spools", registry=r)
        self.rate_limited = Counter("oros_tracker_rate_limited", "Requests refused by the per-IP rate limit", registry=r)
        hit_ratio = Gauge("oros_tracker_link_cache_hit_ratio", "In-process link cache hits / lookups", registry=r)
        hit_ratio.set_function(self._hit_ratio)
        self.redis_up.set(1)
        self.streamed = self.events.labels("stream")
        self.spooled = self.events.labels("spool")

    def _hit_ratio(self) -> float:
        hits, misses = self.link_cache[("local",)], self.link_cache[("miss",)]
        return hits / (hits + misses) if hits + misses else 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)
