"""Prometheus metrics of the tracker, served at ``GET /metrics``.

Each app owns its registry (tests build many apps in one process, and the
default global registry refuses duplicate names). What every redirect or
flush touches is plain Python (``Tally``, ``Distribution``): a dict or list
update instead of prometheus_client's lock and checks, measured at a few
microseconds a flush.

With ``--workers N`` the kernel hands each scrape to any worker, so every
worker must answer for all of them: a counter read from one worker, then
another, would go backwards. ``SharedMetrics`` has each worker publish a
snapshot of its samples to a directory the workers share, once a second and
when it stops, and a scrape sums its own live samples with the others'
latest snapshots.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import os
from bisect import bisect_left
from collections import Counter as Counts
from pathlib import Path

import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)

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
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=self.sum)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        # requests[(route, status)] += 1
        self.requests = Tally("oros_tracker_requests", "HTTP requests answered", ("route", "status"))
        # link_cache[(layer,)] += 1; layer: local (in-process hit), miss, redis, postgres, filtered (no such code)
        self.link_cache = Tally("oros_tracker_link_cache", "Link lookups by the layer that answered", ("layer",))
        # events[(sink,)] += n; sink: stream, spool
        self.events = Tally("oros_tracker_events_appended", "Events made durable, by where", ("sink",))
        self.batch_size = Distribution("oros_tracker_batch_size", "Events per group-commit flush", BATCH_BUCKETS)
        self.flush_seconds = Distribution("oros_tracker_flush_seconds", "Latency of one group-commit flush",
                                          FLUSH_BUCKETS)
        self.events.update({("stream",): 0, ("spool",): 0})  # both series exist from the start
        for collector in (self.requests, self.link_cache, self.events, self.batch_size, self.flush_seconds):
            r.register(collector)
        self.flush_failures = Counter("oros_tracker_flush_failures", "Flushes that fell back to the spool", registry=r)
        self.spool_depth = Gauge(SPOOL_DEPTH, "Events in the spool directory's files, not yet replayed", registry=r)
        self.replayed = Counter("oros_tracker_replayed_events", "Spooled events replayed into the stream", registry=r)
        self.redis_up = Gauge("oros_tracker_redis_up", "1 while the appender writes to Redis, 0 while it spools",
                              registry=r)
        self.rate_limited = Counter("oros_tracker_rate_limited", "Requests refused by the per-IP rate limit",
                                    registry=r)
        hit_ratio = Gauge("oros_tracker_link_cache_hit_ratio", "In-process link cache hits / lookups", registry=r)
        hit_ratio.set_function(self._hit_ratio)
        self.redis_up.set(1)

    def _hit_ratio(self) -> float:
        return _ratio(self.link_cache[("local",)], self.link_cache[("miss",)])

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> list:
        """Every family as ``[name, type, help, [[sample name, labels, value], ...]]``."""
        return [
            [family.name, family.type, family.documentation, [[s.name, s.labels, s.value] for s in family.samples]]
            for family in self.registry.collect()
        ]


def _ratio(hits: float, misses: float) -> float:
    return hits / (hits + misses) if hits + misses else 0.0


PUBLISH_INTERVAL_S = 1.0
HIT_RATIO = "oros_tracker_link_cache_hit_ratio"
SPOOL_DEPTH = "oros_tracker_spool_depth"
LINK_CACHE = "oros_tracker_link_cache_total"


class SharedMetrics:
    """The metrics of every worker of one ``oros tracker --workers N``, exchanged through ``directory``.

    Counters and histograms are summed; the spool depth is the scraped
    worker's own (each counts every file of the shared spool directory, so a
    sum would count them N times, and a dead worker's last count would stay);
    ``redis_up`` is the lowest (0 while any worker spools); the hit ratio is
    recomputed from the summed lookups. The
    other workers' numbers are at most ``PUBLISH_INTERVAL_S`` old; a worker
    that stopped keeps its final snapshot, so no total goes down.
    """

    def __init__(self, metrics: Metrics, directory: Path) -> None:
        self._metrics = metrics
        self._directory = directory
        self._path = directory / f"{os.getpid()}.json"

    def publish(self) -> None:
        partial = self._path.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps(self._metrics.snapshot()))
        os.replace(partial, self._path)  # readers see the old snapshot or the new one, never half

    async def publish_forever(self) -> None:
        while True:
            try:
                self.publish()
            except OSError:  # a full disk must not stop the publishing for good
                log.exception("could not publish this worker's metrics", extra={"path": str(self._path)})
            await asyncio.sleep(PUBLISH_INTERVAL_S)

    def render(self) -> bytes:
        snapshots = [self._metrics.snapshot()]
        for path in self._directory.glob("*.json"):
            if path != self._path:
                snapshots.append(orjson.loads(path.read_bytes()))
        return generate_latest(_Families(merge(snapshots)))


def _combine(sample: str):
    if sample == SPOOL_DEPTH:
        return _first  # the scraped worker's snapshot comes first
    return min if sample.endswith("_created") or sample == "oros_tracker_redis_up" else operator.add


def _first(first: float, _later: float) -> float:
    return first


def merge(snapshots: list[list]) -> list[Metric]:
    """One family per name, each sample combined over the snapshots (see ``SharedMetrics``)."""
    families: dict[str, Metric] = {}
    values: dict[tuple[str, str, tuple], float] = {}  # (family, sample, labels) -> value, in first-seen order
    for snapshot in snapshots:
        for name, kind, documentation, samples in snapshot:
            families.setdefault(name, Metric(name, documentation, kind))
            for sample, labels, value in samples:
                key = (name, sample, tuple(labels.items()))
                values[key] = _combine(sample)(values[key], value) if key in values else value
    lookups = {labels: value for (_, sample, labels), value in values.items() if sample == LINK_CACHE}
    for key in values:
        if key[1] == HIT_RATIO:
            values[key] = _ratio(lookups.get((("layer", "local"),), 0), lookups.get((("layer", "miss"),), 0))
    for (name, sample, labels), value in values.items():
        families[name].add_sample(sample, dict(labels), value)
    return list(families.values())


class _Families:
    """What ``generate_latest`` reads: anything with ``collect()``."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families
