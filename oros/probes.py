"""The ``/metrics`` + ``/healthz`` server of each long-running worker (ingest, settler, webhooks).

A worker hands over its own Prometheus registry (each keeps one: tests build
many in a process, and the default registry refuses duplicate names) and a
``health()`` answering ``(ok, body)``: 200 with the body while ``ok``, else
503, so an orchestrator restarts only what a restart can help.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Health = Callable[[], tuple[bool, dict]]
HOST = "0.0.0.0"


def create_app(registry: CollectorRegistry, health: Health) -> web.Application:
    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        ok, body = health()
        return web.json_response(body, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    return app


@asynccontextmanager
async def serving(worker: str, registry: CollectorRegistry, health: Health, port: int) -> AsyncIterator[None]:
    """Serve ``/metrics`` and ``/healthz`` on ``port`` while the block runs (0: not at all); a port
    already taken stops the process with a message naming the worker and the option."""
    if not port:
        yield
        return
    runner = web.AppRunner(create_app(registry, health), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise SystemExit(f"{worker}: cannot serve metrics on port {port} ({exc.strerror});"
                         " choose another --metrics-port, or 0 for none") from None
    try:
        yield
    finally:
        await runner.cleanup()
