"""Header bytes that are not UTF-8 reach no handler as lone surrogates (``oros.headers``)."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from admin_api.app import create_app
from oros.headers import bearer, text

from stripe_events import SECRET
from tracker_calls import raw_request


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
