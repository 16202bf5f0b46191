"""The delivery process's Prometheus metrics and its ``/healthz`` answer (served by ``oros.probes``).

One registry per ``WebhookMetrics`` (tests build many; ``oros dev`` adds it to
the admin API's ``/metrics``, as it does ingest's).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DEFAULT_PORT = 9103
# What an attempt led to: delivered (2xx), retrying (will be tried again), failed (gave up after the
# day), canceled (its endpoint was deleted; no request made).
OUTCOMES = ("delivered", "retrying", "failed", "canceled")
ATTEMPT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class WebhookMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.attempts = Counter("oros_webhooks_attempts", "Delivery attempts by outcome", ["outcome"], registry=r)
        self.attempt_seconds = Histogram("oros_webhooks_attempt_seconds", "Duration of each HTTP attempt",
                                         buckets=ATTEMPT_BUCKETS_S, registry=r)
        self.in_flight = Gauge("oros_webhooks_in_flight", "Attempts under way in this process", registry=r)
        self.due = Gauge("oros_webhooks_due", "Pending deliveries due now (all processes), at the last look",
                         registry=r)
        self.oldest_due_s = Gauge("oros_webhooks_oldest_due_seconds",
                                  "How long the oldest due delivery has waited, at the last look", registry=r)
        self.claim_errors = Counter("oros_webhooks_claim_errors", "Claims that failed (Postgres unreachable)",
                                    registry=r)
        self.last_claim_ok = time.time()
        self.last_error: str | None = None
        for outcome in OUTCOMES:
            self.attempts.labels(outcome)

    def collect(self):
        return self.registry.collect()

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (tests, ``/healthz``)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def health(self) -> tuple[bool, dict]:
        """Unhealthy while claims fail (Postgres unreachable): nothing is delivered meanwhile."""
        ok = self.last_error is None
        return ok, {"ok": ok, "error": self.last_error, "due": int(self.value("oros_webhooks_due")),
                    "last_claim_ok_s_ago": round(time.time() - self.last_claim_ok, 1)}
