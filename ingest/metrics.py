"""Ingest's Prometheus metrics and its ``/healthz`` answer (served by ``oros.probes``).

Each ingester owns its registry (tests build many in one process, and the
default registry refuses duplicate names). ``oros ingest`` serves it on
``--metrics-port`` (9101); ``oros dev`` adds it to the admin API's
``/metrics`` instead.

``/healthz`` answers 200 while the loop runs, with ``"status": "degraded"``
while ClickHouse is unavailable: an orchestrator that restarted ingest on an
outage would gain nothing (the backlog waits in the stream either way) and
each restart re-delivers the pending entries, which counts against them.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Why an entry was dead-lettered, as a label: "invalid" (refused by the checks both Python and
# ClickHouse hold), "refused" (ClickHouse refused it alone), "crashed" (an ingester died inserting it alone).
DEAD_CLASSES = ("invalid", "refused", "crashed")
INSERT_OUTCOMES = ("ok", "refused", "unavailable")
PROBE_OUTCOMES = ("takes_inserts", "answers", "fails")  # writer.Probe


class IngestMetrics:
    """The counters of one ingester; ``collect`` lets another registry (the dev admin API) include them."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.inserted = Counter("oros_ingest_events", "Stream entries inserted into ClickHouse", registry=r)
        self.dead = Counter("oros_ingest_dead_letters", "Stream entries moved to the dead letters", ["reason"],
                            registry=r)
        self.inserts = Counter("oros_ingest_inserts", "ClickHouse inserts, by outcome", ["outcome"], registry=r)
        self.retries = Counter("oros_ingest_retries", "Batches retried from memory after ClickHouse was unavailable",
                               registry=r)
        self.batch_retries = Gauge(
            "oros_ingest_batch_retries",
            "Failed attempts in a row of the batch now waiting, the most of any shard; 0 when none waits", registry=r)
        self.probes = Counter("oros_ingest_probes", "Probes of whether ClickHouse takes inserts while a batch fails, "
                              "by what they found", ["outcome"], registry=r)
        self.batch_seconds = Histogram("oros_ingest_batch_seconds", "ClickHouse insert latency per insert",
                                       registry=r)
        self.lag_entries = Gauge("oros_ingest_lag_entries", "Stream entries not yet delivered to the consumer group",
                                 registry=r)
        self.lag_seconds = Gauge("oros_ingest_lag_seconds",
                                 "Age of the newest entry of the last batch when it was inserted", registry=r)
        self.unavailable_since = Gauge("oros_ingest_clickhouse_unavailable_since_seconds",
                                       "Unix time of the first failed insert of the current outage; 0 when inserting",
                                       registry=r)
        for reason in DEAD_CLASSES:
            self.dead.labels(reason)
        for outcome in INSERT_OUTCOMES:
            self.inserts.labels(outcome)
        for outcome in PROBE_OUTCOMES:
            self.probes.labels(outcome)

    def collect(self):
        return self.registry.collect()

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (tests, ``/healthz``)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def health(self) -> tuple[bool, dict]:
        """Always ok (200): degraded while ClickHouse is unavailable (see above)."""
        since = self.value("oros_ingest_clickhouse_unavailable_since_seconds")
        return True, {
            "status": "degraded" if since else "ok",
            "clickhouse": "unavailable" if since else "ok",
            "unavailable_for_s": round(time.time() - since, 1) if since else 0,
            "batch_retries": int(self.value("oros_ingest_batch_retries")),
            "lag_entries": int(self.value("oros_ingest_lag_entries")),
        }
