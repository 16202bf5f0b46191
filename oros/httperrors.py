"""The one HTTP error type and the one middleware that renders every failure, for the admin API and the tracker.

Handlers raise ``ApiError`` (or let an outage's exception through); the
middleware answers ``{"error": {"code", "message", "field"?}}`` with the
status, ``Retry-After`` when the client should wait, and ``Cache-Control:
no-store`` (an error is never worth caching). The admin API installs it as
an app middleware; the tracker wraps only its conversion and pixel handlers
with it (``guarded``), so the redirect path runs no extra frame.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
import psycopg
import redis.exceptions
from aiohttp import web
from clickhouse_connect.driver.exceptions import OperationalError as ClickHouseOperationalError
from psycopg_pool import PoolTimeout

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Overload or an outage the client waits out (no connection free in the pool, Redis or ClickHouse unreachable).
RETRY_AFTER_S = 1

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

# Redis refusing to serve (unreachable, timing out, loading, out of memory, read-only), or a Redis
# Cluster with no node for a slot mid-failover (RedisClusterException is no RedisError): an outage, not a bug.
_REDIS_OUTAGES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ResponseError,
                  redis.exceptions.RedisClusterException)

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
}


class ApiError(Exception):
    """A request answered with a 4xx or 503, naming the field at fault when there is one."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, *,
                 retry_after_s: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after_s = retry_after_s  # sent as Retry-After (429, 503)
        self.headers = headers or {}

    def body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}

    def response(self) -> web.Response:
        headers = {"Cache-Control": "no-store", **self.headers}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        return web.Response(body=orjson.dumps(self.body()), status=self.status, headers=headers,
                            content_type="application/json")


class StreamBroken(Exception):
    """A streamed response failed after its first bytes: nothing can be rendered, the connection is cut."""


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid", message, field)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def forbidden(message: str = "not allowed") -> ApiError:
    return ApiError(403, "forbidden", message)


def unauthorized(message: str = "missing or invalid credentials") -> ApiError:
    return ApiError(401, "unauthorized", message)


def conflict(code: str, message: str, field: str | None = None) -> ApiError:
    return ApiError(409, code, message, field)


def unavailable(message: str) -> ApiError:
    return ApiError(503, "unavailable", message, retry_after_s=RETRY_AFTER_S)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as ``{"error": {"code", "message", "field"?}}``; a bug is logged and answered 500."""
    try:
        return await handler(request)
    except StreamBroken:
        raise  # the status and part of the body are sent; aiohttp closes the connection
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # a redirect or other non-error the handler meant to send
        return as_error(exc, request.path).response()
    except Exception as exc:  # noqa: BLE001 - every failure is rendered; bugs are logged with their traceback
        return as_error(exc, request.path).response()


def as_error(exc: Exception, path: str) -> ApiError:
    """The ``ApiError`` a failure answers as."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, web.HTTPException):
        allow = {"Allow": exc.headers["Allow"]} if exc.status == 405 and "Allow" in exc.headers else None
        return ApiError(exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason, headers=allow)
    if isinstance(exc, PoolTimeout):
        log.warning("no database connection free", extra={"path": path})
        return unavailable("the service is busy; retry shortly")
    if isinstance(exc, _REDIS_OUTAGES):
        log.warning("redis unavailable", extra={"path": path, "error": str(exc)})
        return unavailable("a backing service is unavailable; retry shortly")
    if isinstance(exc, ClickHouseOperationalError):
        # Connection refused or lost (ClickHouse down or restarting): an outage the client waits out.
        log.warning("ClickHouse unreachable", extra={"path": path})
        return unavailable("ClickHouse is unreachable; retry shortly")
    if isinstance(exc, psycopg.Error):
        for kind, status, code in _DB_ERRORS:
            if isinstance(exc, kind):
                log.info("request refused by the database", extra={"path": path, "sqlstate": exc.sqlstate})
                # Our triggers name the column they refuse (RAISE ... COLUMN).
                return ApiError(status, code, exc.diag.message_primary or "refused by the database",
                                exc.diag.column_name or None)
    log.error("request failed", exc_info=exc, extra={"path": path})
    return ApiError(500, "internal", "internal error")


def guarded(handler: Handler) -> Handler:
    """``handler`` behind the error middleware: for an app that must not run the middleware on every route."""

    async def rendered(request: web.Request) -> web.StreamResponse:
        return await error_middleware(request, handler)

    return rendered
