"""Prometheus metrics of one tracker process, served at ``GET /metrics``.

Each app owns its registry (tests build many apps in one process, and the
default global registry refuses duplicate names). With ``--workers N`` every
worker answers for itself; scrape each, or run one worker per container.
What every redirect or flush touches is plain Python (``Tally``,
``Distribution``): a dict or list update instead of prometheus_client's
lock and checks, measured at a few microseconds a flush.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Counts

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

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


class Distribution:
    """A Prometheus histogram kept as per-bucket counts; ``observe`` is one bisect and two adds."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.bounds = name, documentation, buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le is inclusive: value == bound falls in it
        self.sum += value

    def collect(self):
        cumulative, buckets = 0, []
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=self.sum)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        # requests[(route, status)] += 1
        self.requests = Tally("oros_tracker_requests", "HTTP requests answered", ("route", "status"))
        # link_cache[(layer,)] += 1; layer: local (in-process hit), miss, redis, postgres
        self.link_cache = Tally("oros_tracker_link_cache", "Link lookups by the layer that answered", ("layer",))
        # events[(sink,)] += n; sink: stream, spool
        self.events = Tally("oros_tracker_events_appended", "Events made durable, by where", ("sink",))
        self.batch_size = Distribution("oros_tracker_batch_size", "Events per group-commit flush", BATCH_BUCKETS)
        self.flush_seconds = Distribution("oros_tracker_flush_seconds", "Latency of one group-commit flush", FLUSH_BUCKETS)
        self.events.update({("stream",): 0, ("spool",): 0})  # both series exist from the start
        for collector in (self.requests, self.link_cache, self.events, self.batch_size, self.flush_seconds):
            r.register(collector)
        self.flush_failures = Counter("oros_tracker_flush_failures", "Flushes that fell back to the spool", registry=r)
        self.spool_depth = Gauge("oros_tracker_spool_depth", "Events in the local spool, not yet replayed", registry=r)
        self.replayed = Counter("oros_tracker_replayed_events", "Spooled events replayed into the stream", registry=r)
        self.redis_up = Gauge("oros_tracker_redis_up", "1 while the appender writes to Redis, 0 while it spools", registry=r)
        self.rate_limited = Counter("oros_tracker_rate_limited", "Requests refused by the per-IP rate limit", registry=r)
        hit_ratio = Gauge("oros_tracker_link_cache_hit_ratio", "In-process link cache hits / lookups", registry=r)
        hit_ratio.set_function(self._hit_ratio)
        self.redis_up.set(1)

    def _hit_ratio(self) -> float:
        hits, misses = self.link_cache[("local",)], self.link_cache[("miss",)]
        return hits / (hits + misses) if hits + misses else 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)
