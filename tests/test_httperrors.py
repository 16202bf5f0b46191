"""The one error type and middleware (oros/httperrors.py), for both apps; pure: no store is touched."""

from __future__ import annotations

import psycopg
import redis.exceptions
from aiohttp import web

from oros.httperrors import ApiError, error_middleware, guarded
from oros.settings import Settings
from tracker.app import create_app as create_tracker


def _failing(exc: Exception):
    async def handler(request: web.Request) -> web.Response:
        raise exc

    return handler


async def test_every_failure_answers_the_contract_shape(aiohttp_client):
    app = web.Application(middlewares=[error_middleware])
    failures = {
        "/refused": ApiError(429, "rate_limited", "slow down", "body", retry_after_s=7),
        "/bug": KeyError("a bug"),
        "/redis": redis.exceptions.ConnectionError("refused"),
        "/database": psycopg.errors.CheckViolation("refused"),
    }
    for path, exc in failures.items():
        app.router.add_get(path, _failing(exc))
    app.router.add_post("/only-post", _failing(KeyError()))
    client = await aiohttp_client(app)

    refused = await client.get("/refused")
    assert (refused.status, await refused.json()) == (
        429, {"error": {"code": "rate_limited", "message": "slow down", "field": "body"}})
    assert (refused.headers["Retry-After"], refused.headers["Cache-Control"]) == ("7", "no-store")
    bug = await client.get("/bug")
    assert (bug.status, await bug.json()) == (500, {"error": {"code": "internal", "message": "internal error"}})
    outage = await client.get("/redis")
    assert (outage.status, (await outage.json())["error"]["code"], outage.headers["Retry-After"]) == (
        503, "unavailable", "1")
    assert (await client.get("/database")).status == 422
    wrong_method = await client.get("/only-post")
    assert (wrong_method.status, wrong_method.headers["Allow"]) == (405, "POST")
    assert (await wrong_method.json())["error"]["code"] == "method_not_allowed"


async def test_a_guarded_handler_renders_its_errors_without_an_app_middleware(aiohttp_client):
    app = web.Application()
    app.router.add_get("/guarded", guarded(_failing(ApiError(400, "invalid", "bad cid", "cid"))))
    client = await aiohttp_client(app)
    resp = await client.get("/guarded")
    assert (resp.status, (await resp.json())["error"]["field"]) == (400, "cid")


def test_the_tracker_guards_conversions_and_pixels_only():
    """The redirect is the hot path: no app-wide middleware, and its handler is not wrapped."""
    app = create_tracker(Settings())
    assert not app.middlewares
    handlers = {route.resource.canonical: route.handler for route in app.router.routes() if route.method != "HEAD"}
    assert handlers["/{code}"].__name__ == "redirect"
    assert handlers["/v1/conversions"].__name__ == handlers["/px.gif"].__name__ == "answer"
