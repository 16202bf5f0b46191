"""The tracker's aiohttp application: one cleanup context per resource.

Contexts start in order and stop in reverse, so on shutdown (after the
server stopped accepting and in-flight requests finished) the replayer's
supervisor, the invalidation listener and the known-codes refresh stop
first, then the appender flushes what is left, then Postgres and Redis close.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from oros.clientip import ClientIp
from oros.connections import pg_pool, redis_client
from oros.httperrors import Handler, guarded
from oros.settings import Settings

from .appender import Appender
from .conversions import MAX_BODY, pixel, post_conversion
from .key_usage import KeyUsage
from .metrics import Metrics, SharedMetrics
from .misses import KnownCodes, MissBudget
from .redirect import Redirector
from .replayer import Replayer
from .resolve import Resolver, listen_invalidations
from .spool import Spool
from .typedefs import (
    APPENDER,
    CLIENT_IP,
    KEY_USAGE,
    KEYS,
    KNOWN_CODES,
    METRICS,
    MISS_BUDGET,
    PG_POOL,
    REDIRECTOR,
    REDIS,
    REPLAYER,
    RESOLVER,
    SETTINGS,
    SHARED_METRICS,
    SPOOL,
)

SUBSCRIBE_WAIT_S = 2.0


async def shared_metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    shared = app[SHARED_METRICS]
    task = asyncio.create_task(shared.publish_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    shared.publish()  # the last word: every context before it has stopped, the last batch is flushed


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    # Fail fast instead of redis-py's default ten retries with backoff: a
    # failed flush goes to the spool, and a request must not wait seconds.
    app[REDIS] = redis_client(
        app[SETTINGS], socket_timeout=2.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 1)
    )
    yield
    await app[REDIS].aclose()


async def pg_ctx(app: web.Application) -> AsyncIterator[None]:
    # Only cache misses reach Postgres; a tracker starts (and redirects cached
    # links) while Postgres is down, hence wait=False.
    pool = pg_pool(app[SETTINGS], min_size=1, max_size=4)
    await pool.open(wait=False)
    app[PG_POOL] = pool
    app[KEY_USAGE] = KeyUsage(pool)
    yield
    await app[KEY_USAGE].close()
    await pool.close()


async def appender_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[SPOOL] = Spool(spool_dir(settings), app[METRICS])
    appender = Appender(
        app[REDIS],
        app[KEYS],
        app[SPOOL],
        app[METRICS],
        index_ttl_s=settings.attribution_days * 86400,
        max_batch=settings.max_batch,
        linger_ms=settings.flush_interval_ms,
        replicas=settings.stream_replicas,
        wait_ms=settings.stream_wait_ms,
    )
    appender.start()
    app[APPENDER] = appender
    yield
    await appender.close()
    app[SPOOL].close()


async def resolver_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[KNOWN_CODES] = KnownCodes(app[PG_POOL])
    app[MISS_BUDGET] = MissBudget()
    resolver = Resolver(
        app[REDIS],
        app[PG_POOL],
        app[KEYS],
        app[METRICS],
        app[KNOWN_CODES],
        app[MISS_BUDGET],
        ttl_s=settings.link_cache_ttl_s,
        negative_ttl_s=settings.negative_cache_ttl_s,
    )
    app[RESOLVER] = resolver
    # Its own connection without a read timeout: the channel is quiet for long stretches.
    subscriber = redis_client(settings, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 1))
    subscribed = asyncio.Event()
    task = asyncio.create_task(listen_invalidations(resolver, subscriber, app[KEYS].invalidations, subscribed))
    # Serve once subscribed (no change can slip by unseen), or anyway when Redis is down.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(subscribed.wait(), SUBSCRIBE_WAIT_S)
    known = asyncio.create_task(app[KNOWN_CODES].refresh_forever())
    yield
    for background in (task, known):
        background.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await background
    await subscriber.aclose()


async def replayer_ctx(app: web.Application) -> AsyncIterator[None]:
    app[REPLAYER] = Replayer(app[APPENDER])
    task = asyncio.create_task(app[REPLAYER].supervise())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def spool_dir(settings: Settings):
    """One directory per stream: trackers of one deployment (and only they) share it."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", settings.redis_prefix) or "default"
    return settings.data_dir / "spool" / name


async def healthz(request: web.Request) -> web.Response:
    """``ok``; ``degraded`` (still 200) while spooling, replaying or failing to replay; ``failing`` (503) when
    a click can be recorded nowhere: Redis is down and the last spool write failed (docs/tracker.md)."""
    app = request.app
    appender, spool, replayer = app[APPENDER], app[SPOOL], app[REPLAYER]
    problems = []
    depth = spool.depth()  # every spool file of the directory: other workers' and dead processes' too
    if not appender.redis_ok:
        problems.append("redis unreachable: events go to the spool")
    if depth:
        problems.append(f"{depth} spooled events wait for replay")
    if replayer.failure is not None:
        problems.append(f"spool replay failing: {replayer.failure}")
    cannot_record = not appender.redis_ok and spool.write_error is not None
    if cannot_record:
        problems.append(f"spool write failing: {spool.write_error}")
    status = "failing" if cannot_record else "degraded" if problems else "ok"
    body = {
        "status": status, "redis": appender.redis_ok, "spooling": not appender.redis_ok, "spool_depth": depth,
        "replayer": "failing" if replayer.failure is not None else "ok", "replayer_restarts": replayer.restarts,
        "problems": problems,
    }
    return web.Response(
        status=503 if cannot_record else 200, body=orjson.dumps(body), content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def metrics_page(request: web.Request) -> web.Response:
    shared = request.app.get(SHARED_METRICS)
    body = shared.render() if shared is not None else request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


def counted(route: str, handler: Handler) -> Handler:
    """``handler`` behind the shared error middleware, each answer counted by status.

    Only these routes get the middleware: the redirect renders its own 404 and
    runs no extra frame on the hot path.
    """
    rendered = guarded(handler)

    async def answer(request: web.Request) -> web.StreamResponse:
        response = await rendered(request)
        request.app[METRICS].requests[(route, str(response.status))] += 1
        return response

    return answer


def setup_routes(app: web.Application) -> None:
    # Fixed paths first: "healthz" and "metrics" also fit the code grammar.
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/px.gif", counted("pixel", pixel))
    app.router.add_post("/v1/conversions", counted("conversions", post_conversion))
    redirector = app[REDIRECTOR] = Redirector()
    app.on_startup.append(redirector.bind)  # runs after every cleanup context has started
    app.router.add_get("/{code}", redirector.redirect)  # HEAD too (allow_head)


def create_app(settings: Settings, *, metrics_dir: Path | None = None) -> web.Application:
    """The tracker; ``metrics_dir`` is shared by the workers of one ``--workers N`` (see ``SharedMetrics``)."""
    app = web.Application(client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    app[KEYS] = settings.keys
    app[METRICS] = Metrics()
    app[CLIENT_IP] = ClientIp(settings.trusted_proxies)
    if metrics_dir is not None:
        app[SHARED_METRICS] = SharedMetrics(app[METRICS], metrics_dir)
        app.cleanup_ctx.append(shared_metrics_ctx)  # first, so it stops last
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(pg_ctx)
    app.cleanup_ctx.append(appender_ctx)
    app.cleanup_ctx.append(resolver_ctx)
    app.cleanup_ctx.append(replayer_ctx)
    setup_routes(app)
    return app
