"""Request input through the route's declared models, and JSON responses.

``parse(Model, request)`` and ``parse_query(Model, request)`` validate with
the model the route declared (admin_api/routing.py) and answer the first
offending field, in the model's field order, as 422 ``invalid`` naming its
path (``legs[1].amount``); a body that is not JSON (or not UTF-8) is 400
``bad_json``. All of it happens before any database work starts, so bad input
never half-writes.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any, TypeVar, get_origin

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from oros.events import canonical_uuid
from oros.httperrors import ApiError, invalid
from oros.wire import INVALID

from .routing import DECLARED

M = TypeVar("M", bound=BaseModel)


async def parse(model: type[M], request: web.Request, context: dict | None = None) -> M:
    """The request's JSON object body as ``model``; an empty body is ``{}``.

    ``context`` reaches the wire types that also depend on the caller or the settings (pydantic's validation
    context: an endpoint's event types must reach the caller's roles), so those rules too are checked in
    field order.
    """
    _check_declared(request, "body", model)
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise ApiError(400, "bad_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid("body", "request body must be a JSON object")
    return validate(model, body, context)


def parse_query(model: type[M], request: web.Request) -> M:
    """The query string as ``model``: a list field takes every value of its name, any other the first."""
    _check_declared(request, "query", model)
    query, data = request.query, {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in query:
            data[key] = query.getall(key) if get_origin(info.annotation) is list else query[key]
    return validate(model, data)


def validate(model: type[M], data: dict, context: dict | None = None) -> M:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
        field = field or "body"
        if error["type"] == "missing":
            predicate = "is required"
        elif error["type"] == INVALID:
            predicate = error["msg"]
        else:
            predicate = f"is invalid: {error['msg']}"
        raise invalid(field, f"{field} {predicate}") from None


def _check_declared(request: web.Request, part: str, model: type[BaseModel]) -> None:
    """A handler validates with the model its route documents, or not at all (a bug: 500)."""
    declared = getattr(DECLARED.get(request.match_info.handler), part, None)
    if declared is not model:
        raise RuntimeError(f"{request.method} {request.path} parses its {part} as {model.__name__}, "
                           f"but its route declares {declared}")


def path_id(request: web.Request, name: str = "id") -> str:
    """A UUID path segment, canonical; a malformed one is simply not found (never a 500)."""
    raw = request.match_info[name]
    value = canonical_uuid(raw)
    if value is None:
        raise ApiError(404, "not_found", f"{name} {raw!r} not found")
    return value


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(data: Any) -> bytes:
    """JSON as the API writes it: Decimals as strings (money keeps its two places), UUIDs and times as strings."""
    return orjson.dumps(data, default=_default, option=orjson.OPT_PASSTHROUGH_SUBCLASS)


def respond(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json")
