"""Route registration: every route with what it takes and what it answers, declared once.

A route module makes ``routes = Routes()`` and decorates each handler::

    @routes.post("/v1/campaigns", "Create a draft campaign (business)",
                 body=CampaignIn, responses={201: Campaign})
    async def create_campaign(request): ...

The decorator registers the handler with aiohttp and records its
``Operation``. ``openapi.py`` writes ``/openapi.json`` from the operations,
and the handler validates with the same models (``payload.parse(CampaignIn,
request)``), which refuses to run a model its route did not declare: the
document and the validation cannot drift apart. docs/api.md shows a whole
module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Any]
# "user": a Bearer token, API key or session is required; "optional": anyone, a caller sees more; "public": no one.
Access = Literal["user", "optional", "public"]


@dataclass(frozen=True)
class Header:
    """A request header the operation reads, typed by a wire type (oros/wire.py)."""

    name: str
    type: Any
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as aiohttp matches it (``/app/{path:.+}``)
    summary: str
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    # Path parameters' wire types; an unlisted one is an id (oros.wire.Uuid), 404 when malformed.
    params: Mapping[str, Any] = field(default_factory=dict)
    headers: tuple[Header, ...] = ()
    # Status -> a model (a JSON body), or an OpenAPI response object (``content``).
    responses: Mapping[int, Any] = field(default_factory=dict)
    access: Access = "user"

    @property
    def canonical(self) -> str:
        """The path as OpenAPI (and aiohttp's ``resource.canonical``) spell it: ``/app/{path}``."""
        return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", self.path)


def content(description: str, media_types: Iterable[str] = (), schema: dict | None = None) -> dict:
    """A response object for what is not a JSON model: a file, a page, text, or nothing (a 304)."""
    response: dict = {"description": description}
    if media_types:
        response["content"] = {media: {"schema": schema or {"type": "string"}} for media in media_types}
    return response


# Each registered handler's operation, for ``payload`` to check a handler parses what its route declares.
DECLARED: dict[Handler, Operation] = {}


class Routes:
    """A module's routes: an aiohttp ``RouteTableDef`` and the ``Operation`` of each."""

    def __init__(self) -> None:
        self.table = web.RouteTableDef()
        self.operations: list[Operation] = []

    def route(self, method: str, path: str, summary: str, **declared: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            operation = Operation(method, path, summary, **declared)
            self.table.route(method, path)(handler)
            self.operations.append(operation)
            DECLARED[handler] = operation
            return handler

        return register

    def get(self, path: str, summary: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, summary, **declared)

    def post(self, path: str, summary: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, summary, **declared)

    def put(self, path: str, summary: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, summary, **declared)

    def patch(self, path: str, summary: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, summary, **declared)

    def delete(self, path: str, summary: str, **declared: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, summary, **declared)
