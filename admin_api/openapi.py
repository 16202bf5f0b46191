"""The OpenAPI 3.1 document at ``/openapi.json``, written from the routes' declared operations (routing.py).

Every model a route takes or answers becomes ``#/components/schemas/<Model>``
(pydantic's JSON Schema, the 2020-12 dialect OpenAPI 3.1 uses); query models
become parameters, path parameters and headers take their wire type's schema.
Every operation may also answer the error shape, ``#/components/responses/Error``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from oros.wire import Uuid

from .payload import respond
from .routing import Operation, Routes

REF = "#/components/schemas/{model}"
SECURITY = {"user": [{"bearer": []}, {"session": []}], "optional": [{}, {"bearer": []}, {"session": []}],
            "public": []}
SECURITY_SCHEMES = {
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
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str = None


class Error(BaseModel):
    """An error, naming the offending field when there is one (oros.httperrors.ApiError.body)."""

    error: ErrorDetail


class _Schemas(GenerateJsonSchema):
    """pydantic's schemas without a title on every property (its name says it) and without ``default: null``.

    A model field ``name: T = None`` is then "optional, never null", ``name: T | None`` "required, may be null".
    """

    def field_title_should_be_set(self, schema) -> bool:
        return False

    def default_schema(self, schema):
        json_schema = super().default_schema(schema)
        if "default" in json_schema and json_schema["default"] is None:
            del json_schema["default"]
        return json_schema


def build(tables: Iterable[Routes]) -> dict:
    """The document; two routes declaring the same method of a path is a bug."""
    operations = [operation for table in tables for operation in table.operations]
    models = {Error} | {m for op in operations for m in (op.body, *op.responses.values()) if _is_model(m)}
    refs, definitions = models_json_schema([(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
                                           ref_template=REF, schema_generator=_Schemas)
    schema_of = {model: ref for (model, _), ref in refs.items()}
    paths: dict[str, dict] = {}
    for op in operations:
        item = paths.setdefault(op.canonical, {})
        if op.method.lower() in item:
            raise ValueError(f"OpenAPI: {op.method} {op.canonical} declared twice")
        item[op.method.lower()] = _operation(op, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {"title": "OROS admin API", "version": "1.0.0"},
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "schemas": definitions.get("$defs", {}),
            "responses": {"Error": {"description": "An error, naming the offending field when there is one.",
                                    "content": {"application/json": {"schema": schema_of[Error]}}}},
        },
    }


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _operation(op: Operation, schema_of: dict) -> dict:
    responses = {
        str(status): _json_response(spec, schema_of[spec]) if _is_model(spec) else spec
        for status, spec in sorted(op.responses.items())
    }
    document: dict = {"summary": op.summary,
                      "responses": {**responses, "default": {"$ref": "#/components/responses/Error"}}}
    parameters = _parameters(op)
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        document["requestBody"] = {"required": op.body_required,
                                   "content": {"application/json": {"schema": schema_of[op.body]}}}
    document["security"] = SECURITY[op.access]
    return document


def _json_response(model: type[BaseModel], schema: dict) -> dict:
    description = (model.__doc__ or model.__name__).strip().splitlines()[0]
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _parameters(op: Operation) -> list[dict]:
    names = [segment[1:-1] for segment in op.canonical.split("/") if segment.startswith("{")]
    parameters = [{"name": name, "in": "path", "required": True, "schema": _schema(op.params.get(name, Uuid))}
                  for name in names]
    if op.query is not None:
        query = op.query.model_json_schema(ref_template=REF, schema_generator=_Schemas)
        required = set(query.get("required", ()))
        for name, schema in query["properties"].items():
            description = schema.pop("description", None)
            parameter = {"name": name, "in": "query", "required": name in required, "schema": schema}
            parameters.append({**parameter, "description": description} if description else parameter)
    for header in op.headers:
        parameter = {"name": header.name, "in": "header", "required": header.required, "schema": _schema(header.type)}
        parameters.append({**parameter, "description": header.description} if header.description else parameter)
    return parameters


def _schema(wire_type: Any) -> dict:
    return TypeAdapter(wire_type).json_schema(ref_template=REF, schema_generator=_Schemas)


def handler(document: dict):
    async def openapi_json(request: web.Request) -> web.Response:
        return respond(document)

    return openapi_json
