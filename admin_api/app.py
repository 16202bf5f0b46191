"""The admin API application factory: pools as cleanup contexts, one error middleware, all routes."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

from aiohttp import web

from oros.clientip import ClientIp
from oros.connections import pg_pool, pg_read_pool, redis_client
from oros.httperrors import error_middleware
from oros.jobs import OwnerJobs
from oros.settings import Settings

from . import (
    admin,
    attempts,
    boosts,
    campaigns,
    card_payments,
    communities,
    exports,
    funding,
    health,
    live,
    memberships,
    openapi,
    payouts,
    qr,
    queues,
    refunds,
    reports,
    rewards,
    sessions,
    shares,
    tips,
    users,
    wallets,
    webapp,
    webhook_endpoints,
    webhooks,
)
from .typedefs import CLIENT_IP, HASH_GATE, JOBS, METRICS, PG_POOL, READ_POOL, REDIS, SETTINGS

MAX_BODY_BYTES = 1024 * 1024
ROUTE_MODULES = (users, sessions, campaigns, communities, wallets, admin, payouts, queues, funding, card_payments,
                 webhook_endpoints, webhooks, tips, memberships, boosts, refunds, rewards, shares, live, reports,
                 exports, qr, health, webapp)


async def _pg_context(app: web.Application) -> AsyncIterator[None]:
    pool = pg_pool(app[SETTINGS])
    await pool.open(wait=True)
    app[PG_POOL] = app[READ_POOL] = pool
    # Which handlers read from the replica, and why only they: docs/scaling.md, "Postgres".
    if app[SETTINGS].database_read_url:
        app[READ_POOL] = pg_read_pool(app[SETTINGS])
        await app[READ_POOL].open(wait=False)  # the API starts while the replica is down; reports then 503
    yield
    if app[READ_POOL] is not pool:
        await app[READ_POOL].close()
    await pool.close()


async def _redis_context(app: web.Application) -> AsyncIterator[None]:
    client = redis_client(app[SETTINGS])
    app[REDIS] = client
    yield
    await client.aclose()


def create_app(settings: Settings, jobs: OwnerJobs | None = None) -> web.Application:
    """The admin API; ``jobs`` (the settler's, from an entrypoint) enables the on-demand admin triggers."""
    app = web.Application(middlewares=[health.metrics_middleware, error_middleware], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[JOBS] = jobs
    app[METRICS] = health.Metrics()
    app[CLIENT_IP] = ClientIp(settings.trusted_proxies)
    app[HASH_GATE] = attempts.HashGate()
    app.cleanup_ctx.append(_pg_context)
    app.cleanup_ctx.append(_redis_context)
    for module in ROUTE_MODULES:
        app.router.add_routes(module.routes.table)
    app.router.add_get("/openapi.json", openapi.handler(_document()))
    return app


@functools.cache
def _document() -> dict:
    # The route tables are fixed at import: a process builds the document once, not per app.
    return openapi.build(module.routes for module in ROUTE_MODULES)
