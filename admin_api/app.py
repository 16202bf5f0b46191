"""The admin API application factory: pools as cleanup contexts, one error middleware, all routes."""

from __future__ import annotations

import logging
from typing import AsyncIterator

import psycopg
import redis.exceptions
from aiohttp import web
from clickhouse_connect.driver.exceptions import OperationalError as ClickHouseOperationalError
from psycopg_pool import PoolTimeout

from oros.clientip import ClientIp
from oros.connections import pg_pool, redis_client
from oros.jobs import OwnerJobs
from oros.settings import Settings

from . import (admin, attempts, campaigns, exports, funding, health, memberships, openapi, qr, queues, reports,
               sessions, tips, users, wallets, webapp, webhooks)
from .errors import ApiError, StreamBroken
from .payload import respond
from .typedefs import CLIENT_IP, HASH_GATE, JOBS, METRICS, PG_POOL, REDIS, SETTINGS

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
ROUTE_MODULES = (users, sessions, campaigns, wallets, admin, queues, funding, webhooks, tips, memberships, reports,
                 exports, qr, health, webapp)

# Safety net for what input validation missed: a database refusal caused by the
# request is the caller's problem (4xx), never a 500.
_DB_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (psycopg.errors.UniqueViolation, 409, "conflict"),
    (psycopg.errors.ForeignKeyViolation, 422, "invalid_reference"),
    (psycopg.errors.CheckViolation, 422, "invalid"),
    (psycopg.errors.NotNullViolation, 422, "invalid"),
    (psycopg.errors.DataError, 422, "invalid"),
    (psycopg.errors.InsufficientPrivilege, 403, "forbidden"),
    # Deadlock or serialization failure: nothing was written; the client may simply retry.
    (psycopg.errors.TransactionRollback, 503, "try_again"),
)
# Every pooled connection stayed busy for the pool's timeout: overload, not a bug; the client retries.
POOL_RETRY_AFTER_S = 1
# Redis unreachable (login limits, sessions, link publishing need it): an outage, not a bug.
REDIS_RETRY_AFTER_S = 1
CLICKHOUSE_RETRY_AFTER_S = 1

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Render every failure as ``{"error": {"code", "message", "field"?}}``."""
    try:
        return await handler(request)
    except StreamBroken:
        raise  # the status and part of the body are sent; aiohttp closes the connection
    except ApiError as exc:
        return _api_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        response = respond({"error": {"code": code, "message": exc.reason}}, exc.status)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except PoolTimeout:
        log.warning("no database connection free", extra={"path": request.path})
        return _api_error(ApiError(503, "unavailable", "the service is busy; retry shortly",
                                   retry_after_s=POOL_RETRY_AFTER_S))
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        log.warning("redis unavailable", extra={"path": request.path})
        return _api_error(ApiError(503, "unavailable", "a backing service is unavailable; retry shortly",
                                   retry_after_s=REDIS_RETRY_AFTER_S))
    except ClickHouseOperationalError:
        # Connection refused or lost (ClickHouse down or restarting): an outage the client waits out.
        log.warning("ClickHouse unreachable", extra={"path": request.path})
        return _api_error(ApiError(503, "unavailable", "ClickHouse is unreachable; retry shortly",
                                   retry_after_s=CLICKHOUSE_RETRY_AFTER_S))
    except psycopg.Error as exc:
        for kind, status, code in _DB_ERRORS:
            if isinstance(exc, kind):
                log.info("request refused by the database", extra={"path": request.path, "sqlstate": exc.sqlstate})
                error = {"code": code, "message": exc.diag.message_primary or "refused by the database"}
                if exc.diag.column_name:  # our triggers name the column they refuse (RAISE ... COLUMN)
                    error["field"] = exc.diag.column_name
                return respond({"error": error}, status)
        log.exception("request failed", extra={"path": request.path})
        return _internal()
    except Exception:
        log.exception("request failed", extra={"path": request.path})
        return _internal()


def _api_error(exc: ApiError) -> web.Response:
    response = respond(exc.body(), exc.status)
    if exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def _internal() -> web.Response:
    """A bug on our side: logged with its traceback, answered in the contract's shape without details."""
    return respond({"error": {"code": "internal", "message": "internal error"}}, 500)


async def _pg_context(app: web.Application) -> AsyncIterator[None]:
    pool = pg_pool(app[SETTINGS])
    await pool.open(wait=True)
    app[PG_POOL] = pool
    yield
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
        app.router.add_routes(module.routes)
    document = openapi.build([module.OPENAPI for module in ROUTE_MODULES])
    app.router.add_get("/openapi.json", openapi.handler(document))
    return app
