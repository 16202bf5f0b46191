"""The settler's Prometheus metrics and its ``/healthz`` answer (served by ``oros.probes``).

One registry per ``SettlerMetrics`` (not the process default), as the admin
API does, so tests and ``oros dev`` can build several. Money is a
``Decimal`` everywhere else; a Prometheus sample is a float, so the amount
paid is converted here, at the edge, and the ledger stays the record.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DEFAULT_PORT = 9102
JOBS = ("settle", "release_holds", "payouts", "refunds", "reconcile")
RUN_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class SettlerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter("oros_settler_runs", "Job runs by outcome (failed = the job raised)",
                            ["job", "outcome"], registry=r)
        self.run_seconds = Histogram("oros_settler_run_seconds", "Job run duration", ["job"],
                                     buckets=RUN_BUCKETS_S, registry=r)
        self.last_success = Gauge("oros_settler_last_success_timestamp_seconds",
                                  "Unix time the job last finished without raising", ["job"], registry=r)
        self.events = Counter("oros_settler_events", "Events settled: paid, or rejected by reason",
                              ["outcome", "reason"], registry=r)
        self.amount_paid = Counter("oros_settler_amount_paid", "Payouts posted to the ledger (currency units)",
                                   registry=r)
        self.late_events = Counter("oros_settler_late_events",
                                   "Events found behind the watermark by the completeness proof", registry=r)
        self.undecided = Gauge("oros_settler_undecided_events",
                               "ClickHouse events not decided at the end of the last settle run (the next run's)",
                               registry=r)
        self.reconcile_failures = Counter("oros_settler_reconcile_failures",
                                          "Reconcile runs in which at least one check failed", registry=r)
        self.reconcile_failing = Gauge("oros_settler_reconcile_failing_checks",
                                       "Checks the last reconcile failed", registry=r)
        # Last outcome per job, for /healthz: (finished at, ok, error).
        self.last: dict[str, tuple[float, bool, str | None]] = {}
        self.failing_checks: list[str] = []
        for job in JOBS:
            for outcome in ("succeeded", "failed"):
                self.runs.labels(job, outcome)

    def collect(self):
        """Lets another registry include these (``oros dev`` serves them on the admin API's /metrics)."""
        return self.registry.collect()

    def observe(self, job: str, seconds: float, result: object = None, error: BaseException | None = None) -> None:
        """Record one job run and what it returned."""
        finished = time.time()
        self.run_seconds.labels(job).observe(seconds)
        self.runs.labels(job, "failed" if error else "succeeded").inc()
        self.last[job] = (finished, error is None, None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            return
        self.last_success.labels(job).set(finished)
        if job == "settle":
            self._settled(result)
        elif job == "reconcile":
            self._reconciled(result)

    def _settled(self, report: dict) -> None:
        paid = report["events_paid"]
        if paid:
            self.events.labels("paid", "").inc(paid)
        for reason, n in report["rejected_by_reason"].items():
            self.events.labels("rejected", reason).inc(n)
        self.amount_paid.inc(float(report["amount_paid"]))
        proof = report.get("completeness", {})
        self.late_events.inc(proof.get("late_events", 0))
        self.undecided.set(proof.get("undecided_next_run", 0))

    def _reconciled(self, checks: list) -> None:
        self.failing_checks = [c.name for c in checks if not c.ok]
        self.reconcile_failing.set(len(self.failing_checks))
        if self.failing_checks:
            self.reconcile_failures.inc()

    def health(self) -> tuple[bool, dict]:
        """Healthy while no job's last run raised; the body says when each last ran and how."""
        jobs = {job: {"finished_at": at, "ok": ok, "error": error} for job, (at, ok, error) in self.last.items()}
        ok = all(job["ok"] for job in jobs.values())
        return ok, {"ok": ok, "jobs": jobs, "reconcile_failing": self.failing_checks}


def timed(metrics: SettlerMetrics, job: str, fn: Callable, *args) -> object:
    """Run ``fn(*args)`` and record it; re-raise what it raised."""
    started = time.perf_counter()
    try:
        result = fn(*args)
    except Exception as exc:
        metrics.observe(job, time.perf_counter() - started, error=exc)
        raise
    metrics.observe(job, time.perf_counter() - started, result)
    return result
