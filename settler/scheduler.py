"""``oros settler``: the settle, hold-release, payout, refund-unspent, refund, reconcile and revocation jobs.

Jobs are synchronous (Postgres and the chDB client are), so each runs in a
worker thread, off the event loop that ``oros dev`` shares with the tracker
and admin API. ``coalesce`` folds a backlog of missed runs into one and
``max_instances=1`` never overlaps a job with itself; the settle run's
advisory lock also keeps settlers in other processes apart. Every run is
recorded in a ``SettlerMetrics``, which ``oros settler`` serves on
``--metrics-port`` (``/metrics``, ``/healthz``).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from oros import apikeys, issued_refunds, probes
from oros.settings import Settings

from . import metrics as settler_metrics
from .holds import release_due
from .payouts import pay_withdrawals
from .reconcile import reconcile_and_record
from .report_sums import fold_report_sums
from .run import settle_once
from .unspent import refund_unspent

log = logging.getLogger(__name__)


def _job(name: str, fn, settings: Settings, metrics: settler_metrics.SettlerMetrics):
    async def run() -> None:
        try:
            result = await asyncio.to_thread(settler_metrics.timed, metrics, name, fn, settings)
        except Exception:
            log.exception("settler job failed", extra={"job": name})
            return
        log.info("settler job done", extra={"job": name, "result": _summary(name, result)})

    run.__name__ = name
    return run


def _summary(name: str, result) -> object:
    if name == "reconcile":
        return [c.name for c in result if not c.ok] or "ok"
    if name == "settle":
        return {k: result[k] for k in ("events_seen", "events_paid", "events_rejected", "amount_paid")}
    return result


def build_scheduler(settings: Settings, metrics: settler_metrics.SettlerMetrics | None = None) -> AsyncIOScheduler:
    """The seven jobs, not started; the caller starts it inside its event loop.

    ``refunds`` sends the refunds OROS issued that are still pending at Stripe (oros/issued_refunds.py): the
    request or webhook that issued one sends it at once, this retries what an outage or a crash left.
    ``api_key_revocations`` does the same for the trackers' Redis (oros/apikeys.py).
    """
    metrics = metrics or settler_metrics.SettlerMetrics()
    scheduler = AsyncIOScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})
    for name, fn, every_s in (
        ("settle", settle_once, settings.settle_interval_s),
        ("release_holds", release_due, settings.release_interval_s),
        ("payouts", pay_withdrawals, settings.payout_interval_s),
        # Before ``refunds``: what it gives back is sent at once, what fails is retried by ``refunds``.
        ("refund_unspent", refund_unspent, settings.payout_interval_s),
        ("refunds", issued_refunds.send, settings.payout_interval_s),
        ("reconcile", reconcile_and_record, settings.reconcile_interval_s),
        # The report sums' deltas, folded as often as holds are released: a few runs' worth at a time.
        ("fold_report_sums", fold_report_sums, settings.release_interval_s),
        ("api_key_revocations", apikeys.replay_revocations, apikeys.REPLAY_INTERVAL_S),
    ):
        scheduler.add_job(_job(name, fn, settings, metrics), "interval", seconds=every_s, id=name, name=name)
    return scheduler


async def _serve(settings: Settings, metrics_port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    metrics = settler_metrics.SettlerMetrics()
    async with probes.serving("settler", metrics.registry, metrics.health, metrics_port):
        log.info("settler running", extra={"metrics_port": metrics_port})
        scheduler = build_scheduler(settings, metrics)
        scheduler.start()
        try:
            await stop.wait()
        finally:
            scheduler.shutdown(wait=False)


def run_settler(settings: Settings, metrics_port: int = settler_metrics.DEFAULT_PORT) -> None:
    """``oros settler [--metrics-port 9102]`` (0: no metrics server)."""
    from oros.migrate import migrate_clickhouse

    migrate_clickhouse(settings)
    asyncio.run(_serve(settings, metrics_port))
