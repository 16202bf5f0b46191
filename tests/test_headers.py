"""Header bytes that are not UTF-8 reach no handler as lone surrogates (``oros.headers``): every route family of
both services answers them with its own status, never 500."""

from __future__ import annotations

import ipaddress
import itertools
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from admin_api.app import create_app
from admin_api.auth import issue_session, issue_token
from oros.accounts import create_admin
from oros.headers import bearer, text
from tracker.app import create_app as create_tracker

from factories import World, email_user, make_api_key, make_campaign, make_link
from stripe_events import SECRET, signed
from tracker_calls import BROWSER, raw_request


def test_text_replaces_only_what_was_not_utf8():
    assert text(None) is None and text("plain") == "plain" and text("caf\u00e9 \u2603") == "caf\u00e9 \u2603"
    # As aiohttp hands over b"caf\xe9" (surrogateescape).
    assert text(b"caf\xe9 \xc3\xa9".decode("utf-8", "surrogateescape")) == "caf\ufffd \u00e9"
    assert orjson.dumps(text("\udcff" * 3)) == orjson.dumps("\ufffd" * 3)


def test_bearer_takes_token_characters_only():
    assert bearer("Bearer oros_live_abc-_") == "oros_live_abc-_" and bearer("bearer  a.b.c ") == "a.b.c"
    for header in (None, "", "Bearer", "Bearer ", "Basic abc", "Bearer a b", "Bearer ab\udce9", "Bearer \u00e9",
                   "Bearer a\x00b", "\udce9 abc"):
        assert bearer(header) is None, header


@pytest.fixture
async def api(aiohttp_client, settings):
    return await aiohttp_client(create_app(replace(settings, stripe_webhook_secret=SECRET)))


async def test_admin_api_answers_bad_header_bytes_with_4xx(api):
    for auth in (b"Bearer \xe9", b"Bearer eyJhbGciOiJIUzI1NiJ9.\xe9.x", b"Bearer oros_live_\xff", b"\xe9 token"):
        status, body = await raw_request(api, b"GET /v1/me HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: "
                                         + auth + b"\r\n\r\n")
        assert status == 401, auth
        assert orjson.loads(body)["error"]["code"] == "unauthorized"
    webhook = (b"POST /v1/webhooks/stripe HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 2\r\n"
               b"Stripe-Signature: t=1,v1=\xe9\xe9\r\n\r\n{}")
    assert (await raw_request(api, webhook))[0] == 400


# -- one byte 0xE9 in each header a service reads, on each route family of both ---------------


# What a header carries when the route does not send it already; one it sends gets 0xE9 appended to its own value
# (a credential, a key), so the byte lands where the route reads it.
SPOILED = {
    b"User-Agent": b"Mozilla/5.0 (caf\xe9)",
    b"Referer": b"https://r.example/caf\xe9",
    b"X-Forwarded-For": b"203.0.113.7, caf\xe9",  # the test client's 127.0.0.1 is a trusted proxy: it is parsed
    b"Idempotency-Key": b"key-\xe9",
    b"Cookie": b"oros_session=\xe9",
    b"Authorization": b"Bearer \xe9",
}
TRUSTING = (ipaddress.ip_network("127.0.0.0/8"),)


@dataclass
class Route:
    """A request that succeeds with ``ok``; ``refused`` is the status where the spoiled header decides (a
    credential, a malformed Idempotency-Key), ``ok`` elsewhere."""

    client: object
    request: Callable[[int], tuple[bytes, bytes, dict[bytes, bytes], bytes]]  # n -> method, target, headers, body
    ok: int
    refused: dict[bytes, int] = field(default_factory=dict)
    books: Callable[[], None] | None = None


def raw(method: bytes, target: bytes, headers: dict[bytes, bytes], body: bytes) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: t", b"Connection: close",
             *(name + b": " + value for name, value in headers.items())]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def as_json(n: int, **body) -> bytes:
    return orjson.dumps({key: value.format(n=n) if isinstance(value, str) else value for key, value in body.items()})


async def tracker_route(name: str, settings, pg, tracker_client, _admin_client) -> Route:
    link = make_link(pg)
    client = await tracker_client(create_tracker(replace(settings, trusted_proxies=TRUSTING)))
    browser = {b"User-Agent": BROWSER.encode()}
    if name == "redirect":
        return Route(client, lambda n: (b"GET", f"/{link['code']}".encode(), browser, b""), 302)
    if name == "healthz":
        return Route(client, lambda n: (b"GET", b"/healthz", {}, b""), 200)
    clicked = await client.get(f"/{link['code']}", headers={"User-Agent": BROWSER}, allow_redirects=False)
    cid = dict(parse_qsl(urlsplit(clicked.headers["Location"]).query))["oros_cid"]
    if name == "pixel":
        return Route(client, lambda n: (b"GET", f"/px.gif?cid={cid}&type=conversion&order_id=px-{n}".encode(),
                                        browser, b""), 200)
    key = make_api_key(pg, link["business"]).encode()
    return Route(client, lambda n: (
        b"POST", b"/v1/conversions",
        {b"Authorization": b"Bearer " + key, b"Idempotency-Key": b"conv-%d" % n, b"Content-Type": b"application/json"},
        as_json(n, click_id=cid, type="conversion", order_id="api-{n}")),
        202, {b"Authorization": 401, b"Idempotency-Key": 422})


async def admin_route(name: str, settings, pg, _tracker_client, admin_client) -> Route:
    settings = replace(settings, stripe_webhook_secret=SECRET, trusted_proxies=TRUSTING)
    client = await admin_client(create_app(settings))
    json = {b"Content-Type": b"application/json"}
    if name == "webhook":
        def delivery(n: int):
            payload = orjson.dumps({"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": "customer.created",
                                    "created": 1_764_000_000, "data": {"object": {"id": f"cus_{n}"}}})
            headers = {name.encode(): value.encode() for name, value in signed(payload, SECRET).items()}
            return b"POST", b"/v1/webhooks/stripe", headers, payload

        return Route(client, delivery, 200)
    password = "correct horse battery"
    email = f"admin-{secrets.token_hex(4)}@example.com"
    admin = create_admin(settings, email, password)
    if name == "public":
        return Route(client, lambda n: (b"POST", b"/v1/auth/login", json, as_json(n, email=email, password=password)),
                     200)
    if name == "session":
        token = issue_session(settings, admin)[0].encode()
        return Route(client, lambda n: (b"GET", b"/v1/auth/session", {b"Cookie": b"oros_session=" + token}, b""),
                     200, {b"Cookie": 401})
    campaign = make_campaign(pg, email_user(pg, "biz"))
    token = issue_token(settings, admin).encode()
    return Route(client, lambda n: (
        b"POST", f"/v1/admin/campaigns/{campaign}/funding".encode(),
        {**json, b"Authorization": b"Bearer " + token, b"Idempotency-Key": b"fund-%d" % n},
        as_json(n, amount="10.00", reference="wire-{n}")),
        201, {b"Authorization": 401, b"Idempotency-Key": 422}, World(pg, settings).assert_books)


ROUTES: dict[str, Callable[..., Awaitable[Route]]] = {
    **{f"tracker {name}": lambda *a, name=name: tracker_route(name, *a) for name in ("redirect", "pixel",
                                                                                         "conversions", "healthz")},
    **{f"admin {name}": lambda *a, name=name: admin_route(name, *a) for name in ("public", "bearer", "session",
                                                                                     "webhook")},
}


@pytest.mark.parametrize("route", ROUTES)
async def test_a_non_utf8_byte_in_any_header_is_answered_never_500(route, settings, pg, tracker_client,
                                                                    aiohttp_client):
    built = await ROUTES[route](settings, pg, tracker_client, aiohttp_client)
    numbers = itertools.count()
    method, target, headers, body = built.request(next(numbers))
    assert (await raw_request(built.client, raw(method, target, headers, body)))[0] == built.ok
    for name, spoiled in SPOILED.items():
        method, target, headers, body = built.request(next(numbers))
        headers = {**headers, name: headers[name] + b"\xe9" if name in headers else spoiled}
        status, answer = await raw_request(built.client, raw(method, target, headers, body))
        assert status == built.refused.get(name, built.ok), (name, answer[:300])
        if status == 401:
            assert orjson.loads(answer)["error"]["code"] == "unauthorized"
        if status == 422:
            assert orjson.loads(answer)["error"]["field"] == name.decode()
    if built.books is not None:
        built.books()
