"""``oros webhooks [--once] [--metrics-port 9103]``: the delivery process.

Delivers until SIGINT/SIGTERM (attempts under way finish first), serving
``/metrics`` and ``/healthz``; ``--once`` delivers what is due now and exits.
Several may run at once: deliveries are leased, never sent by two at a time.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from oros import probes
from oros.settings import Settings

from .deliver import Deliverer
from .metrics import DEFAULT_PORT

log = logging.getLogger(__name__)


async def _run(settings: Settings, once: bool, metrics_port: int) -> None:
    deliverer = Deliverer(settings)
    await deliverer.open()
    try:
        if once:
            attempts = await deliverer.deliver_due()
            log.info("webhooks delivered what was due", extra={"attempts": len(attempts)})
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with probes.serving("webhooks", deliverer.metrics.registry, deliverer.metrics.health, metrics_port):
            log.info("webhooks running", extra={"metrics_port": metrics_port,
                                                "allow_private": settings.allows_private_webhooks})
            await deliverer.run(stop)
    finally:
        await deliverer.close()


def run_webhooks(settings: Settings, *, once: bool = False, metrics_port: int = DEFAULT_PORT) -> None:
    asyncio.run(_run(settings, once, metrics_port))
