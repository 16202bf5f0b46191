"""Liveness and Prometheus metrics of the admin API.

Each app owns its registry (tests build many apps in one process, and the
default registry refuses duplicate names). Requests are labelled by route
template, never by raw path, so ids cannot explode the label set.
"""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel

from .routing import Routes, content
from .typedefs import METRICS, PG_POOL

routes = Routes()


class Health(BaseModel):
    """Healthy"""

    ok: bool


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("oros_admin_requests", "HTTP requests answered", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("oros_admin_request_seconds", "Request latency", ["route", "method"],
                                 registry=self.registry)


@web.middleware
async def metrics_middleware(request: web.Request, handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics = request.app[METRICS]
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.latency.labels(route, request.method).observe(time.perf_counter() - started)


@routes.get("/healthz", "Liveness: the API answers and reaches Postgres", responses={200: Health}, access="public")
async def healthz(request: web.Request) -> web.Response:
    """Alive and able to reach Postgres."""
    async with request.app[PG_POOL].connection() as conn:
        await conn.execute("SELECT 1")
    return web.json_response({"ok": True})


@routes.get("/metrics", "Prometheus metrics (text exposition format)",
            responses={200: content("Metrics", ["text/plain"])}, access="public")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[METRICS].registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})
