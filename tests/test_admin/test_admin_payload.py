"""Request models (admin_api/payload.py, routing.py): one declaration validates and documents. Pure: no store."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel
from yarl import URL

from admin_api import openapi
from admin_api.pages import PageQuery
from admin_api.payload import parse, parse_query, respond
from admin_api.routing import Routes
from oros.httperrors import error_middleware
from oros.wire import Amount, OneOf, Text

routes = Routes()


class Line(BaseModel):
    side: OneOf("credit", "debit")
    amount: Amount()


class Order(BaseModel):
    title: Text(10)
    lines: list[Line]
    note: Text(10) = None


@routes.post("/orders", "Declares and parses Order", body=Order, responses={201: Order})
async def create(request: web.Request) -> web.Response:
    order = await parse(Order, request)
    return respond(order.model_dump(), 201)


@routes.post("/drifted", "Declares Order, parses Line", body=Order)
async def drifted(request: web.Request) -> web.Response:
    await parse(Line, request)
    return respond({})


@routes.get("/pages", "Declares its query", query=PageQuery)
async def pages(request: web.Request) -> web.Response:
    return respond({"limit": parse_query(PageQuery, request).limit})


async def client_of(aiohttp_client):
    app = web.Application(middlewares=[error_middleware])
    app.router.add_routes(routes.table)
    return await aiohttp_client(app)


async def test_the_first_offending_field_is_named_by_its_path(aiohttp_client):
    client = await client_of(aiohttp_client)
    cases = [
        ({"title": "t", "lines": [{"side": "credit", "amount": "1.00"}, {"side": "debit", "amount": 1.5}]},
         "lines[1].amount"),
        ({"title": "", "lines": "nope"}, "title"),  # in field order: title before lines
        ({"lines": []}, "title"),
        ({"title": "t", "lines": [{"amount": "1.00"}]}, "lines[0].side"),
        ({"title": "t", "lines": [], "note": "a\x00b"}, "note"),
    ]
    for body, field in cases:
        resp = await client.post("/orders", json=body)
        error = (await resp.json())["error"]
        assert (resp.status, error["code"], error["field"]) == (422, "invalid", field), body
        assert error["message"].startswith(f"{field} "), error
    ok = await client.post("/orders", json={"title": " t ", "lines": [{"side": "debit", "amount": 7}],
                                            "ignored": True})
    assert (ok.status, await ok.json()) == (201, {"title": "t", "lines": [{"side": "debit", "amount": "7.00"}],
                                                   "note": None})
    for raw, status in [(b"\xff\xfe", 400), (b"[1]", 422), (b"{", 400), (b"[" * 100_000, 400)]:
        assert (await client.post("/orders", data=raw)).status == status, raw[:4]


async def test_a_handler_parsing_what_its_route_does_not_declare_is_a_bug(aiohttp_client):
    client = await client_of(aiohttp_client)
    resp = await client.post("/drifted", json={"side": "credit", "amount": "1.00"})
    assert (resp.status, (await resp.json())["error"]["code"]) == (500, "internal")


async def test_queries_validate_as_declared(aiohttp_client):
    client = await client_of(aiohttp_client)
    assert await (await client.get("/pages", params={"limit": "7"})).json() == {"limit": 7}
    for limit in ("0", "201", "-1", "1.5", "x", "٣", " 5", "9" * 5000):
        resp = await client.get("/pages", params={"limit": limit})
        assert (resp.status, (await resp.json())["error"]["field"]) == (422, "limit"), limit
    for raw in ("limit=%FF", "limit=%00", "cursor=%FF%FE"):  # not UTF-8, NUL: refused, never a 500
        resp = await client.get(URL(f"/pages?{raw}", encoded=True))
        assert resp.status == 422, raw
    assert await (await client.get(URL("/pages?limit=3&limit=9", encoded=True))).json() == {"limit": 3}


def test_the_document_takes_the_declared_models():
    document = openapi.build([routes])
    body = document["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Order"}
    order = document["components"]["schemas"]["Order"]
    assert order["required"] == ["title", "lines"] and order["properties"]["title"]["maxLength"] == 10
    assert [p["name"] for p in document["paths"]["/pages"]["get"]["parameters"]] == ["limit", "cursor"]
