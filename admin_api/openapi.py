"""The OpenAPI 3 document at ``/openapi.json``, merged from each route module's ``OPENAPI``.

Each module describes its own paths beside its handlers; shared schemas live
here under ``components`` so modules can ``$ref`` them:
``#/components/schemas/Error``, ``Money``, ``Amount`` (input), ``Uuid``, ``Timestamp`` and the
responses ``#/components/responses/Error``.
"""

from __future__ import annotations

from aiohttp import web

from .payload import respond

ERROR_REF = {"$ref": "#/components/responses/Error"}
MONEY = {"$ref": "#/components/schemas/Money"}
AMOUNT = {"$ref": "#/components/schemas/Amount"}
UUID = {"$ref": "#/components/schemas/Uuid"}
TIMESTAMP = {"$ref": "#/components/schemas/Timestamp"}

COMPONENTS = {
    "securitySchemes": {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A JWT from /v1/auth/login or /v1/auth/signup, or a business API key (oros_live_…).",
        },
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": "oros_session",
            "description": "The web app's session (POST /v1/auth/session); requests other than GET, HEAD and "
                           "OPTIONS must also send its csrf_token as X-OROS-CSRF.",
        },
    },
    "schemas": {
        "Money": {"type": "string", "pattern": r"^-?\d{1,10}\.\d{2}$", "example": "12.50"},
        # A positive amount in a request: a decimal string, at most two places, never a float.
        "Amount": {"type": "string", "pattern": r"^(0|[1-9]\d{0,7})(\.\d{1,2})?$", "example": "12.50"},
        "Uuid": {"type": "string", "format": "uuid"},
        "Timestamp": {"type": "string", "format": "date-time"},
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                    },
                }
            },
        },
    },
    "responses": {
        "Error": {
            "description": "An error, naming the offending field when there is one.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    },
}


def json_body(schema: dict, *, required: bool = True) -> dict:
    """An OpenAPI requestBody for a JSON object."""
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def json_response(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def obj(properties: dict, required: list[str] | tuple[str, ...] = ()) -> dict:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def page_of(item: dict) -> dict:
    return obj({"items": {"type": "array", "items": item}, "next_cursor": nullable({"type": "string"})},
               ["items", "next_cursor"])


def operation(summary: str, responses: dict, *, body: dict | None = None, parameters: list | None = None,
              public: bool = False) -> dict:
    """One operation; every one may answer with the error shape (4xx)."""
    op: dict = {"summary": summary, "responses": {**responses, "default": ERROR_REF}}
    if body is not None:
        op["requestBody"] = body
    if parameters:
        op["parameters"] = parameters
    op["security"] = [] if public else [{"bearer": []}, {"session": []}]
    return op


def path_param(name: str = "id") -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}


PAGE_PARAMS = [
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
]


def build(parts: list[dict]) -> dict:
    """Merge path items; two modules describing the same method of a path is a bug."""
    paths: dict = {}
    for part in parts:
        for path, item in part.items():
            merged = paths.setdefault(path, {})
            clash = set(merged) & set(item)
            if clash:
                raise ValueError(f"OpenAPI: {path} {sorted(clash)} described twice")
            merged.update(item)
    return {
        "openapi": "3.1.0",
        "info": {"title": "OROS admin API", "version": "1.0.0"},
        "paths": dict(sorted(paths.items())),
        "components": COMPONENTS,
    }


def handler(document: dict):
    async def openapi_json(request: web.Request) -> web.Response:
        return respond(document)

    return openapi_json
