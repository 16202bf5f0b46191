"""``oros dev``: the whole platform in one process on one event loop.

Tracker and admin API on their ports, ingest draining the stream, the
settler's scheduler and the webhook deliverer, all sharing this process's
chDB engine (chDB opens a data directory from one process only, which is
why the admin API exposes settlement triggers for embedded mode). Webhook
endpoints may be local receivers (OROS_WEBHOOKS_ALLOW_PRIVATE defaults to
true here). Unless the environment names a
Stripe, localstripe runs beside it as a child process (oros.embedded), so
card funding works end to end on one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvloop
from aiohttp import web

from oros.embedded import write_services_file
from oros.migrate import run_migrate
from oros.settings import Settings

log = logging.getLogger(__name__)


def run_dev(settings: Settings, *, demo: bool, fund_by_card: bool, tracker_port: int, admin_port: int) -> None:
    """``fund_by_card``: the embedded Stripe is running, so the demo campaign is funded through it."""
    run_migrate(settings)
    write_services_file(settings)
    uvloop.run(_serve(settings, demo=demo, fund_by_card=fund_by_card, tracker_port=tracker_port,
                      admin_port=admin_port))


async def _start_site(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _serve(settings: Settings, *, demo: bool, fund_by_card: bool, tracker_port: int, admin_port: int) -> None:
    from admin_api.app import create_app as create_admin_app
    from admin_api.typedefs import METRICS
    from ingest.consumer import Ingester
    from settler.jobs import OWNER_JOBS
    from settler.metrics import SettlerMetrics
    from settler.scheduler import build_scheduler
    from tracker.app import create_app as create_tracker_app
    from webhooks.deliver import Deliverer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    ingester = Ingester(settings, consumer="dev")
    admin_app = create_admin_app(settings, OWNER_JOBS)
    deliverer = Deliverer(settings)
    await deliverer.open()
    settler_metrics = SettlerMetrics()
    # Ingest's, the deliverer's and the settler's counters on the admin API's /metrics: one process, one scrape.
    admin_app[METRICS].registry.register(ingester.metrics)
    admin_app[METRICS].registry.register(deliverer.metrics)
    admin_app[METRICS].registry.register(settler_metrics)
    runners = [
        await _start_site(create_tracker_app(settings), tracker_port),
        await _start_site(admin_app, admin_port),
    ]
    ingest_task = asyncio.create_task(ingester.run(stop))
    webhooks_task = asyncio.create_task(deliverer.run(stop))
    scheduler = build_scheduler(settings, settler_metrics)
    scheduler.start()
    tracker_url, admin_url = f"http://127.0.0.1:{tracker_port}", f"http://127.0.0.1:{admin_port}"
    log.info("oros dev ready", extra={"tracker": tracker_url, "admin": admin_url})
    try:
        if demo:
            from .demo import print_demo, set_up_demo

            print_demo(await set_up_demo(settings, admin_url=admin_url, tracker_url=tracker_url,
                                         fund_by_card=fund_by_card))
        else:
            stripe = f"embedded Stripe {settings.stripe_api_base}" if fund_by_card else "Stripe as configured"
            print(f"tracker {tracker_url}  admin API {admin_url}  {stripe}  (Ctrl-C stops)", flush=True)
        await stop.wait()
    finally:
        log.info("oros dev stopping")
        scheduler.shutdown(wait=False)
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await ingest_task
        with contextlib.suppress(asyncio.CancelledError):
            await webhooks_task
        await ingester.close()
        await deliverer.close()
        for runner in reversed(runners):
            await runner.cleanup()
