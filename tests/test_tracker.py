"""The tracker against real Redis and Postgres: redirects, resolution, recorded fields, conversions."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
import re
import secrets
import time
import uuid
from bisect import bisect_left
from dataclasses import fields, replace
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from oros import bots, clickindex
from oros.events import Event, uuid7_ms, uuid7_str
from oros.keys import CLICK_BUCKET_MS
from oros.links import NEGATIVE, LinkInfo, publish
from oros.reasons import UNKNOWN_CAMPAIGN
from tracker.app import create_app
from tracker.appender import SEND_AT, Appender
from tracker.metrics import Distribution, Metrics, SharedMetrics
from tracker.misses import MissBudget
from tracker.resolve import Link
from tracker.spool import Spool
from tracker.typedefs import KEY_USAGE, KNOWN_CODES, METRICS, RESOLVER

from factories import email_user, make_api_key, make_link, odd_spellings
from processes import free_port
from tracker_calls import BROWSER, known_codes_loaded, raw_request, stream_events

# -- test data, written straight into the test's own database ---------------------------------


@pytest.fixture
async def tracker(settings, tracker_client):
    """An in-process tracker on the test's databases, served as `oros tracker` serves; ``tracker.app`` is its
    application."""
    return await tracker_client(create_app(settings))


@pytest.fixture
def data(pg) -> dict:
    return make_link(pg, supporter=True)


def cid_of(response) -> str:
    return dict(parse_qsl(urlsplit(response.headers["Location"]).query))["oros_cid"]


# -- redirects and the recorded click -------------------------------------------------------


async def test_redirect_records_every_field(tracker, data, redis, settings):
    response = await tracker.get(
        f"/{data['code']}?utm_source=tw&utm_campaign=spring&x=1",
        headers={"User-Agent": BROWSER, "Referer": "https://social.example/post/9"},
        allow_redirects=False,
    )
    assert response.status == 302
    assert response.headers["Cache-Control"] == "no-store"
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "shop.example.com", "/p/1")
    params = parse_qsl(location.query)
    click_id = dict(params)["oros_cid"]
    assert params == [("ref", "oros"), ("utm_source", "tw"), ("utm_campaign", "spring"), ("x", "1"),
                      ("oros_cid", click_id)]

    [(_, entry)] = await redis.xrange(settings.keys.stream)
    # Link.click_event writes the dict itself: it must carry exactly the Event's fields.
    assert list(orjson.loads(entry[b"e"])) == [field.name for field in fields(Event)]
    [event] = await stream_events(redis, settings)
    assert event == Event(
        event_id=click_id,
        event_type="click",
        ts_ms=uuid7_ms(click_id),
        campaign_id=data["campaign"],
        link_id=data["link"],
        creator_id=data["creator"],
        supporter_id=data["supporter"],
        business_id=data["business"],
        ip="127.0.0.1",
        user_agent=BROWSER,
        referrer="https://social.example/post/9",
        is_bot=False,
        bot_reason=None,
        source="redirect",
        metadata={"utm_source": "tw", "utm_campaign": "spring"},
    )
    assert uuid.UUID(click_id).version == 7
    index = await redis.hget(settings.keys.clicks_of(click_id), click_id)
    assert orjson.loads(index) == {
        "link_id": data["link"], "campaign_id": data["campaign"], "creator_id": data["creator"],
        "supporter_id": data["supporter"], "business_id": data["business"],
    }
    ttl = await redis.ttl(settings.keys.clicks_of(click_id))
    assert settings.attribution_days * 86400 - 60 < ttl <= settings.attribution_days * 86400


async def test_destination_fragment_and_no_open_redirect(tracker, pg, redis, settings):
    link = make_link(pg, destination="https://shop.example.com/a#reviews")
    response = await tracker.get(
        f"/{link['code']}?url=https://evil.example/&oros_cid=forged&next=%2F%2Fevil.example",
        allow_redirects=False,
    )
    assert response.status == 302
    location = urlsplit(response.headers["Location"])
    assert location.netloc == "shop.example.com" and location.fragment == "reviews"
    params = parse_qsl(location.query)
    assert [value for name, value in params if name == "oros_cid"] == [cid_of(response)]
    assert ("url", "https://evil.example/") in params and ("next", "//evil.example") in params


async def test_unknown_or_malformed_code_is_404(tracker, redis, settings):
    # One test, many cases: each test pays for its own database, so cases share one.
    for path in ("/abc", "/" + "a" * 21, "/bad%20code", "/bad.code", "/%00%00%00%00", "/unknown1"):
        response = await tracker.get(path, allow_redirects=False)
        assert response.status == 404, path
    assert await redis.xlen(settings.keys.stream) == 0


async def test_paused_and_completed_campaigns_still_redirect(tracker, pg, redis, settings):
    campaigns = []
    for status in ("paused", "completed"):
        link = make_link(pg, status=status)
        campaigns.append(link["campaign"])
        assert (await tracker.get(f"/{link['code']}", allow_redirects=False)).status == 302
    assert [e.campaign_id for e in await stream_events(redis, settings)] == campaigns


BOT_CASES = [
    ("GET", {"User-Agent": BROWSER}, None),
    ("HEAD", {"User-Agent": BROWSER}, "head"),
    ("GET", {"User-Agent": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"}, "preview_bot"),
    ("GET", {"User-Agent": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"}, "preview_bot"),
    ("GET", {"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}, "crawler"),
    ("GET", {"User-Agent": "curl/8.5.0"}, "tool"),
    ("GET", {"User-Agent": ""}, "no_user_agent"),
    ("GET", {"User-Agent": BROWSER, "Sec-Purpose": "prefetch"}, "prefetch"),
    ("GET", {"User-Agent": "Mozilla/5.0 (iPhone) AppleWebKit/605.1.15 Instagram 330.0"}, None),
]


def test_bot_patterns_decide_on_re2_as_pythons_engine_would():
    """oros.bots runs its patterns on RE2 (340x faster per new user agent); every alternative, in odd case,
    at the start and inside a browser string, and real browsers, get the verdict Python's engine gives."""
    python = re.compile(bots.BOT_PATTERN, re.IGNORECASE)
    agents = [headers["User-Agent"] for _, headers, _ in BOT_CASES] + [BROWSER, "Mozilla/5.0 (iPhone; FBAN/FBIOS)", "x"]
    for _, pattern in bots._PATTERNS:
        for alternative in pattern.split("|"):
            word = alternative.replace("^", "").replace("\\b", "")
            agents += [word.upper(), f"Mozilla/5.0 (compatible; {word.title()}/2.1)", f"{word}x", f"x{word}"]
    assert len(agents) > 300
    for agent in agents:
        match = python.search(agent[: bots.MAX_UA])
        expected = "no_user_agent" if not agent.strip() else match.lastgroup if match else None
        bots.classify_user_agent.cache_clear()
        assert (agent, bots.classify_user_agent(agent)) == (agent, expected)


async def test_bots_are_flagged_and_stored(tracker, data, redis, settings):
    for method, headers, _ in BOT_CASES:
        response = await tracker.request(method, f"/{data['code']}", headers=headers, allow_redirects=False)
        assert response.status == 302
    events = await stream_events(redis, settings)
    assert [(e.is_bot, e.bot_reason) for e in events] == [(reason is not None, reason) for _, _, reason in BOT_CASES]
    assert [e.source for e in events] == ["head" if method == "HEAD" else "redirect" for method, _, _ in BOT_CASES]


async def test_a_scanned_qr_code_is_recorded_as_source_qr_and_the_mark_not_passed_on(tracker, data, redis, settings):
    cases = [("?qr=1", "qr", ""), ("?utm_source=poster&qr=1", "qr", "utm_source=poster&"),
             ("?qr=10", "redirect", "qr=10&"), ("?xqr=1", "redirect", "xqr=1&"), ("", "redirect", "")]
    for query, _, passed_on in cases:
        response = await tracker.get(f"/{data['code']}{query}", allow_redirects=False)
        assert response.status == 302
        assert urlsplit(response.headers["Location"]).query == f"ref=oros&{passed_on}oros_cid={cid_of(response)}"
    events = await stream_events(redis, settings)
    assert [e.source for e in events] == [source for _, source, _ in cases]
    head = await tracker.head(f"/{data['code']}?qr=1", allow_redirects=False)
    assert head.status == 302 and (await stream_events(redis, settings))[-1].source == "head"


async def test_forwarded_for_believed_only_from_trusted_proxies(settings, tracker_client, data, redis):
    plain = await tracker_client(create_app(settings))
    await plain.get(f"/{data['code']}", headers={"X-Forwarded-For": "203.0.113.7"}, allow_redirects=False)
    trusting = await tracker_client(
        create_app(
            replace(settings, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8")))
        )
    )
    # The client wrote the leftmost entry itself; the rightmost untrusted hop is the client.
    await trusting.get(
        f"/{data['code']}", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 10.1.2.3"}, allow_redirects=False
    )
    await trusting.get(f"/{data['code']}", headers={"X-Forwarded-For": "not-an-ip"}, allow_redirects=False)
    assert [e.ip for e in await stream_events(redis, settings)] == ["127.0.0.1", "203.0.113.7", "127.0.0.1"]


async def test_a_forged_first_forwarded_for_line_never_becomes_the_client(settings, tracker_client, data, redis):
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    trusting = await tracker_client(create_app(replace(settings, trusted_proxies=loopback)))
    # The client sends its own X-Forwarded-For; the trusted proxy adds a second line with the real peer
    # (as nginx's add_header or some load balancers do). Reading only the first line believed the forgery.
    for lines in ([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.9")],
                  [("X-Forwarded-For", "6.6.6.6, 127.0.0.9"), ("X-Forwarded-For", "203.0.113.9, 127.0.0.2")]):
        response = await trusting.get(f"/{data['code']}", headers=lines, allow_redirects=False)
        assert response.status == 302
    assert [e.ip for e in await stream_events(redis, settings)] == ["203.0.113.9", "203.0.113.9"]


# -- resolution layers and invalidation -------------------------------------------------------


def layer_counts(app) -> dict[str, int]:
    return {layer: count for (layer,), count in app[METRICS].link_cache.items()}


async def test_resolution_layers_and_single_flight(settings, tracker_client, data, redis):
    first = await tracker_client(create_app(settings))
    # 30 concurrent misses for one code share one Postgres query.
    responses = await asyncio.gather(*(first.get(f"/{data['code']}", allow_redirects=False) for _ in range(30)))
    assert {r.status for r in responses} == {302}
    assert layer_counts(first.app)["postgres"] == 1
    assert LinkInfo.decode(await redis.get(settings.keys.link(data["code"]))).link_id == data["link"]
    await first.get(f"/{data['code']}", allow_redirects=False)
    assert layer_counts(first.app)["postgres"] == 1 and layer_counts(first.app)["local"] >= 1

    # A second tracker finds the link in Redis and never asks Postgres.
    second = await tracker_client(create_app(settings))
    assert (await second.get(f"/{data['code']}", allow_redirects=False)).status == 302
    assert layer_counts(second.app).get("postgres", 0) == 0 and layer_counts(second.app)["redis"] == 1


async def test_unknown_codes_are_negatively_cached(tracker, redis, settings):
    for _ in range(5):
        assert (await tracker.get("/nosuchcode", allow_redirects=False)).status == 404
    assert await redis.get(settings.keys.link("nosuchcode")) == NEGATIVE
    assert layer_counts(tracker.app)["postgres"] == 1


async def test_invalidation_reaches_the_process_cache(tracker, pg, data, redis, settings):
    assert urlsplit((await tracker.get(f"/{data['code']}", allow_redirects=False)).headers["Location"]).path == "/p/1"
    pg.execute("UPDATE tracking_links SET destination_url = 'https://shop.example.com/p/2' WHERE id = %s",
               (data["link"],))
    info = LinkInfo.decode(await redis.get(settings.keys.link(data["code"])))
    await publish(redis, settings.keys, [data["code"]], {data["code"]: replace(info, destination_url="https://shop.example.com/p/2")})
    for _ in range(50):
        location = (await tracker.get(f"/{data['code']}", allow_redirects=False)).headers["Location"]
        if urlsplit(location).path == "/p/2":
            break
        await asyncio.sleep(0.02)
    assert urlsplit(location).path == "/p/2"

    # A code first unknown, then created: the negative entry is dropped on publish.
    assert (await tracker.get("/latecomer", allow_redirects=False)).status == 404
    pg.execute("UPDATE tracking_links SET code = 'latecomer' WHERE id = %s", (data["link"],))
    await publish(redis, settings.keys, ["latecomer"])
    for _ in range(50):
        status = (await tracker.get("/latecomer", allow_redirects=False)).status
        if status == 302:
            break
        await asyncio.sleep(0.02)
    assert status == 302


# -- conversions ---------------------------------------------------------------------------


async def click(tracker, code: str) -> str:
    response = await tracker.get(f"/{code}", headers={"User-Agent": BROWSER}, allow_redirects=False)
    assert response.status == 302
    return cid_of(response)


async def test_conversion_is_attributed_to_its_click(tracker, pg, data, redis, settings):
    key = make_api_key(pg, data["business"])
    click_id = await click(tracker, data["code"])
    response = await tracker.post(
        "/v1/conversions",
        data=b'{"click_id": "%s", "type": "sale", "value": 12.5, "currency": "eur", "order_id": "A-1"}'
        % click_id.encode(),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status == 202
    event_id = (await response.json())["event_id"]
    _, sale = await stream_events(redis, settings)
    assert sale == Event(
        event_id=event_id, event_type="sale", ts_ms=uuid7_ms(event_id), campaign_id=data["campaign"],
        link_id=data["link"], creator_id=data["creator"], supporter_id=data["supporter"],
        business_id=data["business"], click_id=click_id, order_id="A-1", value="12.50", currency="EUR",
        ip="127.0.0.1", user_agent=sale.user_agent, referrer=None, source="api",
    )


async def test_key_use_is_written_to_postgres_at_most_once_per_interval(tracker, pg, data):
    key = make_api_key(pg, data["business"])

    def last_used():
        row = pg.execute("SELECT last_used_at FROM api_keys WHERE user_id = %s", (data["business"],)).fetchone()
        return row["last_used_at"]

    assert last_used() is None
    usage = tracker.app[KEY_USAGE]
    for order in ("K-1", "K-2"):
        body = {"click_id": str(uuid.uuid4()), "type": "conversion", "order_id": order}
        response = await tracker.post("/v1/conversions", json=body, headers={"Authorization": f"Bearer {key}"})
        assert response.status == 202
        await usage.close()  # waits for the background write
        if order == "K-1":
            first = last_used()
            assert first is not None
    assert last_used() == first  # the second use, within the interval, wrote nothing


async def test_unknown_click_is_recorded_against_no_campaign(tracker, pg, data, redis, settings):
    key = make_api_key(pg, data["business"])
    unknown = str(uuid.uuid4())
    response = await tracker.post(
        "/v1/conversions", json={"click_id": unknown, "type": "conversion"}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status == 202
    [event] = await stream_events(redis, settings)
    assert (event.campaign_id, event.business_id, event.click_id, event.link_id) == (
        UNKNOWN_CAMPAIGN, data["business"], unknown, None)


async def test_a_recent_click_missing_from_the_index_is_503_until_it_arrives(tracker, pg, data, redis, settings):
    """A click answered from the spool (Redis was down) is indexed only when replayed: the conversion waits for it."""
    key = make_api_key(pg, data["business"])
    click_id = await click(tracker, data["code"])
    bucket = settings.keys.clicks_of(click_id)
    entry = await redis.hget(bucket, click_id)
    await redis.hdel(bucket, click_id)  # as if still in a spool, not replayed yet
    body = {"click_id": click_id, "type": "conversion", "order_id": "SPOOLED-1"}
    auth = {"Authorization": f"Bearer {key}"}
    refused = await tracker.post("/v1/conversions", json=body, headers=auth)
    assert refused.status == 503 and (await refused.json())["error"]["code"] == "unavailable"
    assert [e.event_type for e in await stream_events(redis, settings)] == ["click"]  # nothing recorded, order free
    await redis.hset(bucket, click_id, entry)  # the replay indexed it
    accepted = await tracker.post("/v1/conversions", json=body, headers=auth)
    assert accepted.status == 202
    conversion = (await stream_events(redis, settings))[-1]
    assert (conversion.campaign_id, conversion.click_id, conversion.order_id) == (
        data["campaign"], click_id, "SPOOLED-1")


async def test_an_order_claim_left_by_a_failed_request_is_taken_over(tracker, pg, data, redis, settings):
    """A request that claimed the order, then died or lost Redis before its event was durable (the chaos run:
    Redis stopped mid-flush, so the claim could not be released): the retry records the order; it used to
    be answered ``duplicate`` with the id of an event that never existed."""
    key = make_api_key(pg, data["business"])
    click_id = await click(tracker, data["code"])
    order_key = settings.keys.order(data["campaign"], "LEFT-1")
    phantom = uuid7_str()
    await redis.set(order_key, f"pending:{phantom}:{int(time.time() * 1000) - 11_000}")
    body = {"click_id": click_id, "type": "conversion", "order_id": "LEFT-1"}
    auth = {"Authorization": f"Bearer {key}"}
    response = await tracker.post("/v1/conversions", json=body, headers=auth)
    assert response.status == 202
    event_id = (await response.json())["event_id"]
    assert event_id != phantom and (await stream_events(redis, settings))[-1].event_id == event_id
    assert await redis.get(order_key) == event_id.encode()
    again = await tracker.post("/v1/conversions", json=body, headers=auth)
    assert (again.status, await again.json()) == (200, {"event_id": event_id, "duplicate": True})


async def test_order_id_is_recorded_once_under_concurrency(tracker, pg, data, redis, settings):
    key = make_api_key(pg, data["business"])
    click_id = await click(tracker, data["code"])
    body = {"click_id": click_id, "type": "sale", "value": "30.00", "order_id": "ORDER-7"}
    responses = await asyncio.gather(
        *(tracker.post("/v1/conversions", json=body, headers={"Authorization": f"Bearer {key}"}) for _ in range(25))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 24 + [202]
    bodies = [await r.json() for r in responses]
    [first] = [b["event_id"] for r, b in zip(responses, bodies, strict=True) if r.status == 202]
    assert all(b == {"event_id": first, "duplicate": True}
               for r, b in zip(responses, bodies, strict=True) if r.status == 200)
    sales = [e for e in await stream_events(redis, settings) if e.event_type == "sale"]
    assert [e.event_id for e in sales] == [first]


async def test_another_business_cannot_burn_the_owners_order_id(tracker, pg, data, redis, settings):
    owner_key = make_api_key(pg, data["business"])
    rival_key = make_api_key(pg, email_user(pg, "rival"))
    click_id = await click(tracker, data["code"])
    body = {"click_id": click_id, "type": "sale", "order_id": "O-1"}
    rival, owner = {"Authorization": f"Bearer {rival_key}"}, {"Authorization": f"Bearer {owner_key}"}
    assert (await tracker.post("/v1/conversions", json=body, headers=rival)).status == 202
    assert (await tracker.post("/v1/conversions", json=body, headers=owner)).status == 202
    assert (await tracker.post("/v1/conversions", json=body, headers=owner)).status == 200


async def test_idempotency_key_replays_the_first_response(tracker, pg, data, redis, settings):
    key = make_api_key(pg, data["business"])
    click_id = await click(tracker, data["code"])
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "retry-1"}
    body = {"click_id": click_id, "type": "conversion"}
    first = await tracker.post("/v1/conversions", json=body, headers=headers)
    again = await tracker.post("/v1/conversions", json=body, headers=headers)
    assert (first.status, again.status) == (202, 202)
    assert await first.json() == await again.json()
    assert len([e for e in await stream_events(redis, settings) if e.event_type == "conversion"]) == 1
    other = await tracker.post("/v1/conversions", json={**body, "type": "sale"}, headers=headers)
    assert other.status == 422 and (await other.json())["error"]["field"] == "Idempotency-Key"


async def test_idempotency_key_follows_the_admin_apis_grammar(tracker, pg, data, redis, settings):
    """One grammar (oros/idempotency.py): a key of 101 characters or with a space, once taken here, is a 422, as in
    the admin API."""
    key = make_api_key(pg, data["business"])
    click_id = await click(tracker, data["code"])
    for bad in ("x" * 101, "bad key!"):
        resp = await tracker.post("/v1/conversions", json={"click_id": click_id, "type": "conversion"},
                                  headers={"Authorization": f"Bearer {key}", "Idempotency-Key": bad})
        assert resp.status == 422 and (await resp.json())["error"]["field"] == "Idempotency-Key"
    assert [e.event_type for e in await stream_events(redis, settings)] == ["click"]


async def test_refund_needs_an_order_id_but_no_click(tracker, pg, data, redis, settings):
    key = make_api_key(pg, data["business"])
    auth = {"Authorization": f"Bearer {key}"}
    missing = await tracker.post("/v1/conversions", json={"type": "refund"}, headers=auth)
    assert missing.status == 422 and (await missing.json())["error"]["field"] == "order_id"
    response = await tracker.post("/v1/conversions", json={"type": "refund", "order_id": "A-1", "value": "5.00"},
                                  headers=auth)
    assert response.status == 202
    [event] = await stream_events(redis, settings)
    assert (event.event_type, event.order_id, event.business_id, event.click_id) == (
        "refund", "A-1", data["business"], None)


async def test_each_new_refunded_total_of_an_order_is_a_new_refund(tracker, pg, data, redis, settings):
    auth = {"Authorization": f"Bearer {make_api_key(pg, data['business'])}"}
    statuses = []
    for total in ("20.00", "20.00", "50.00", None):  # a refund's value is the order's refunded total so far
        body = {"type": "refund", "order_id": "A-2", **({"value": total} if total else {})}
        statuses.append((await tracker.post("/v1/conversions", json=body, headers=auth)).status)
    assert statuses == [202, 200, 202, 202]
    assert [e.value for e in await stream_events(redis, settings)] == ["20.00", "50.00", None]


async def test_bad_and_revoked_keys_are_401(tracker, pg, data):
    key = make_api_key(pg, data["business"])
    body = {"click_id": str(uuid.uuid4()), "type": "conversion"}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {key}"},
                    {"Authorization": "Bearer " + "x" * 500}):
        response = await tracker.post("/v1/conversions", json=body, headers=headers)
        assert response.status == 401, headers
    assert (await tracker.post("/v1/conversions", json=body, headers={"Authorization": f"Bearer {key}"})).status == 202


async def test_rate_limit_per_ip(settings, tracker_client, pg, data):
    client = await tracker_client(create_app(replace(settings, conversion_rate_per_min=3)))
    key = make_api_key(pg, data["business"])
    body = {"click_id": str(uuid.uuid4()), "type": "conversion"}
    responses = [await client.post("/v1/conversions", json=body, headers={"Authorization": f"Bearer {key}"})
                 for _ in range(5)]
    assert [r.status for r in responses] == [202] * 3 + [429, 429]
    # The first of the three leaves the sliding minute about 60 s after it was counted: the limit says when.
    assert 55 <= int(responses[3].headers["Retry-After"]) <= 60
    assert responses[3].headers["Cache-Control"] == "no-store"
    assert (await responses[3].json())["error"]["code"] == "rate_limited"
    pixel = await client.get(f"/px.gif?cid={uuid.uuid4()}")  # pixels share the address's limit
    assert pixel.status == 429 and "Retry-After" in pixel.headers


async def test_pixel_records_with_no_poster(tracker, data, redis, settings):
    click_id = await click(tracker, data["code"])
    response = await tracker.get(f"/px.gif?cid={click_id}&type=sale&value=9.99&order_id=P-1",
                                 headers={"User-Agent": BROWSER})
    assert response.status == 200 and response.content_type == "image/gif"
    assert (await response.read()).startswith(b"GIF89a")
    assert (await tracker.get(f"/px.gif?cid={click_id}&type=sale&order_id=P-1")).status == 200  # duplicate
    events = await stream_events(redis, settings)
    [sale] = [e for e in events if e.event_type == "sale"]
    # Nobody authenticated: the pixel no longer counts as the campaign owner's post.
    assert (sale.business_id, sale.campaign_id, sale.value, sale.order_id, sale.source, sale.metadata) == (
        None, data["campaign"], "9.99", "P-1", "pixel", {}
    )


# -- bad input never yields a 500 ------------------------------------------------------------


MALFORMED_BODIES = [
    (b"", "body"),
    (b"not json", "body"),
    (b"[1, 2]", "body"),
    (b"[" * 5000 + b"]" * 5000, "body"),
    (b'{"type": "conversion", "click_id": "x"}', "click_id"),
    (b'{"type": "purchase", "click_id": "%s"}', "type"),
    (b'{"click_id": "%s"}', "type"),
    (b'{"type": "sale", "click_id": "%s", "value": 1.005}', "value"),
    (b'{"type": "sale", "click_id": "%s", "value": -1}', "value"),
    (b'{"type": "sale", "click_id": "%s", "value": NaN}', "body"),
    (b'{"type": "sale", "click_id": "%s", "value": "1e400"}', "value"),
    (b'{"type": "sale", "click_id": "%s", "value": true}', "value"),
    (b'{"type": "sale", "click_id": "%s", "currency": "euro"}', "currency"),
    (b'{"type": "sale", "click_id": "%s", "order_id": ""}', "order_id"),
    (b'{"type": "sale", "click_id": "%s", "order_id": 17}', "order_id"),
    (b'{"type": "sale", "click_id": "%s", "orderId": "x"}', "orderId"),
    (b'{"type": "sale", "click_id": "%s", "order_id": "\\u0000"}', "order_id"),
    (b'\xff\xfe{}', "body"),
]


async def test_malformed_conversion_is_422_naming_the_field(tracker, pg, data, redis, settings):
    key = make_api_key(pg, data["business"])
    for body, field in MALFORMED_BODIES:
        if b"%s" in body:
            body = body % str(uuid.uuid4()).encode()
        response = await tracker.post("/v1/conversions", data=body, headers={"Authorization": f"Bearer {key}"})
        assert response.status == 422, body[:80]
        assert (await response.json())["error"]["field"] == field, body[:80]
    assert await redis.xlen(settings.keys.stream) == 0


async def test_exact_decimal_values(tracker, pg, data, redis, settings):
    key = make_api_key(pg, data["business"])
    cases = {b"0.1": "0.10", b"19.99": "19.99", b'"7"': "7.00", b"1e2": "100.00", b"2.50": "2.50"}
    for raw in cases:
        body = b'{"type": "conversion", "click_id": "%s", "value": %s}' % (str(uuid.uuid4()).encode(), raw)
        response = await tracker.post("/v1/conversions", data=body, headers={"Authorization": f"Bearer {key}"})
        assert response.status == 202
    assert [e.value for e in await stream_events(redis, settings)] == list(cases.values())


async def test_oversized_requests_are_refused(tracker, pg, data):
    key = make_api_key(pg, data["business"])
    big = b'{"type": "conversion", "order_id": "' + b"x" * 20000 + b'"}'
    response = await tracker.post("/v1/conversions", data=big, headers={"Authorization": f"Bearer {key}"})
    assert response.status == 413
    assert (await tracker.get(f"/{data['code']}?q=" + "x" * 3000, allow_redirects=False)).status == 414


async def test_malformed_pixel_is_400(tracker, redis, settings):
    queries = ["", "cid=nope", "cid=%s&type=refund", "cid=%s&value=abc", "cid=%s&value=1.001", "cid=%s&currency=12",
               "cid=%s&order_id=%%00"]
    for query in queries:
        if "%s" in query:
            query = query % uuid.uuid4()
        response = await tracker.get(f"/px.gif?{query}")
        assert response.status == 400, query
        assert (await response.json())["error"]["code"] == "invalid"
    assert await redis.xlen(settings.keys.stream) == 0


async def test_fuzzed_paths_and_headers_never_500(tracker, data, redis, settings):
    """Odd bytes in a path, query or header get the answer a normal request would: redirected and recorded, or 4xx."""
    code = data["code"]
    expected = {f"/{code}?%ff%fe=%00": 302, "/%ff": 404, f"/{code}?a=%zz": 302, f"/{code}?" + "&" * 500: 302,
                "/v1/conversions": 405}
    for path, status in expected.items():
        response = await tracker.get(path, headers={"User-Agent": "\u00e9" * 600, "X-Forwarded-For": "::1, zz"},
                                     allow_redirects=False)
        assert response.status == status, path
        if status == 302:
            assert "oros_cid=" in response.headers["Location"], path
    assert await redis.xlen(settings.keys.stream) == 3  # every redirect recorded


async def test_healthz_and_metrics(tracker, data):
    await tracker.get(f"/{data['code']}", allow_redirects=False)
    health = await tracker.get("/healthz")
    assert health.status == 200 and (await health.json()) == {
        "status": "ok",
        "redis": True,
        "spooling": False,
        "spool_depth": 0,
        "replayer": "ok",
        "replayer_restarts": 0,
        "problems": [],
    }
    text = await (await tracker.get("/metrics")).text()
    for name in (
        "oros_tracker_requests_total", "oros_tracker_events_appended_total", "oros_tracker_batch_size_bucket",
        "oros_tracker_flush_seconds_bucket", "oros_tracker_link_cache_hit_ratio", "oros_tracker_spool_depth",
    ):
        assert name in text
    assert 'oros_tracker_events_appended_total{sink="stream"} 1.0' in text
    assert "oros_tracker_batch_size_count 1.0" in text and 'oros_tracker_batch_size_bucket{le="1.0"} 1.0' in text


def test_distribution_counts_like_a_prometheus_histogram():
    """Bucket bounds are inclusive (le), buckets are cumulative, +Inf holds everything."""
    histogram = Distribution("h", "test", (1, 2, 4))
    for value in (0.5, 1, 2, 3, 9):
        histogram.observe(value)
    [family] = histogram.collect()
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert [samples[("h_bucket", le)] for le in ("1.0", "2.0", "4.0", "+Inf")] == [2, 3, 4, 5]
    assert samples[("h_count", None)] == 5 and samples[("h_sum", None)] == 15.5


def test_workers_metrics_add_up(tmp_path):
    """One worker's scrape reports every worker: sums, the lowest redis_up, the ratio of the sums, its own spool
    depth."""
    first, second = Metrics(), Metrics()
    first.requests[("redirect", "302")] += 3
    second.requests[("redirect", "302")] += 4
    second.requests[("pixel", "200")] += 1
    first.link_cache.update({("local",): 9, ("miss",): 1})
    second.link_cache.update({("local",): 0, ("miss",): 30})
    first.batch_size.observe(1)
    second.batch_size.observe(100)
    second.redis_up.set(0)
    first.spool_depth.set(2)
    second.spool_depth.set(5)
    (tmp_path / "1234.json").write_bytes(orjson.dumps(second.snapshot()))  # what another worker publishes
    shared = SharedMetrics(first, tmp_path)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(shared.render().decode())
        for s in family.samples
    }
    assert samples[("oros_tracker_requests_total", (("route", "redirect"), ("status", "302")))] == 7
    assert samples[("oros_tracker_requests_total", (("route", "pixel"), ("status", "200")))] == 1
    assert samples[("oros_tracker_link_cache_hit_ratio", ())] == 9 / 40  # pooled: not (0.9 + 0) / 2
    assert samples[("oros_tracker_batch_size_count", ())] == 2 and samples[("oros_tracker_batch_size_sum", ())] == 101
    assert samples[("oros_tracker_batch_size_bucket", (("le", "1.0"),))] == 1
    assert samples[("oros_tracker_batch_size_bucket", (("le", "+Inf"),))] == 2
    # The spool depth is the scraped worker's own: each counts every file of the shared spool directory.
    assert samples[("oros_tracker_redis_up", ())] == 0 and samples[("oros_tracker_spool_depth", ())] == 2


def test_a_links_click_event_carries_its_fields():
    """Link.click_event is the template of oros.events (tested there) bound to this link's fields."""
    ip, user_agent, referrer, reason = "203.0.113.9", "UA", None, None
    source, metadata = "redirect", {"utm_source": "x"}
    info = LinkInfo(link_id=str(uuid.uuid4()), code="tmpl", campaign_id=str(uuid.uuid4()), creator_id=str(uuid.uuid4()),
                    supporter_id=None, business_id=str(uuid.uuid4()), destination_url="https://x.example/a?b=1#f",
                    campaign_status="active")
    click_id, ts_ms = uuid7_str(1_700_000_000_000), 1_700_000_000_000
    expected = Event(
        event_id=click_id, event_type="click", ts_ms=ts_ms, campaign_id=info.campaign_id, link_id=info.link_id,
        creator_id=info.creator_id, supporter_id=None, business_id=info.business_id, ip=ip, user_agent=user_agent,
        referrer=referrer, is_bot=reason is not None, bot_reason=reason, source=source, metadata=metadata,
    ).encode()
    assert Link.of(info).click_event(click_id, ts_ms, ip, user_agent, referrer, reason, source, metadata) == expected


async def test_click_index_entries_land_in_their_bucket_hashes(settings, redis, tmp_path):
    """One write whose entries span three buckets, one of them past what a single Lua unpack() takes."""
    metrics = Metrics()
    spool = Spool(tmp_path / "spool", metrics)
    appender = Appender(redis, settings.keys, spool, metrics, index_ttl_s=3600, max_batch=5000)
    appender.start()
    base = 1_700_000_000_000
    stamps = [base] * 4500 + [base + CLICK_BUCKET_MS] * 3 + [base + 5 * CLICK_BUCKET_MS]
    random.Random(7).shuffle(stamps)  # interleaved, as a replay of old spool files could be
    ids = [uuid7_str(ms) for ms in stamps]
    events = [Event(event_id=cid, event_type="click", ts_ms=ms, campaign_id="c").encode()
              for cid, ms in zip(ids, stamps, strict=True)]
    try:
        await appender.write(events, [clickindex.entry(cid, f"v{n}".encode()) for n, cid in enumerate(ids)])
    finally:
        await appender.close()
        spool.close()
    assert await redis.xlen(settings.keys.stream) == len(events)
    async with redis.pipeline(transaction=False) as pipe:
        for cid in ids:
            pipe.hget(settings.keys.clicks_of(cid), cid)
        assert await pipe.execute() == [f"v{n}".encode() for n in range(len(ids))]
    buckets = {settings.keys.clicks_of(cid) for cid in ids}
    assert len(buckets) == 3
    for key in buckets:
        assert 3500 < await redis.ttl(key) <= 3600


async def test_a_full_batch_is_sent_before_the_loop_turn_ends(settings, redis, tmp_path):
    """Events submitted in one turn go out SEND_AT at a time, the rest when the turn ends; all are durable."""
    metrics = Metrics()
    spool = Spool(tmp_path / "spool", metrics)
    appender = Appender(redis, settings.keys, spool, metrics, index_ttl_s=60, max_batch=5000)
    appender.start()
    try:
        await appender.append(b'{"n": -1}')  # opens the stream connection
        count = 2 * SEND_AT + 5
        waiters = [appender.append(orjson.dumps({"n": n})) for n in range(count)]  # no await: one loop turn
        await asyncio.gather(*waiters)
    finally:
        await appender.close()
        spool.close()
    sizes = metrics.batch_size
    assert sizes.counts[bisect_left(sizes.bounds, SEND_AT)] == 2 and sizes.counts[bisect_left(sizes.bounds, 5)] == 1
    assert sum(sizes.counts) == 4 and sizes.sum == 1 + count
    entries = await redis.xrange(settings.keys.stream)
    assert [orjson.loads(fields[b"e"])["n"] for _, fields in entries] == list(range(-1, count))


# -- bytes that are not UTF-8, ids in odd spellings ------------------------------------------


def raw_get(path: bytes, *headers: bytes) -> bytes:
    return (b"GET " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            + b"".join(h + b"\r\n" for h in headers) + b"\r\n")


async def test_header_bytes_that_are_not_utf8_are_recorded_never_500(tracker, data, redis, settings):
    code = data["code"].encode()
    status, _ = await raw_request(tracker, raw_get(b"/" + code, b"User-Agent: Mozilla/5.0 (caf\xe9)", b"Referer: https://r.example/\xff"))
    assert status == 302
    # At the parser's field limit (8190 bytes), and past it.
    assert (await raw_request(tracker, raw_get(b"/" + code, b"User-Agent: " + b"\xe9" * 8000)))[0] == 302
    assert (await raw_request(tracker, raw_get(b"/" + code, b"User-Agent: " + b"\xe9" * 9000)))[0] == 400
    # Raw bytes in the path and the query.
    # The HTTP parser refuses raw bytes in a URL.
    assert (await raw_request(tracker, raw_get(b"/\xff\xffcode")))[0] == 400
    assert (await raw_request(tracker, raw_get(b"/%FF%FFcode")))[0] == 404
    assert (await raw_request(tracker, raw_get(b"/" + code + b"?utm_source=%E9&utm_term=%E9%FF")))[0] == 302
    first, longest, with_query = await stream_events(redis, settings)
    assert (first.user_agent, first.referrer) == ("Mozilla/5.0 (caf\ufffd)", "https://r.example/\ufffd")
    assert longest.user_agent == "\ufffd" * 512
    assert set(with_query.metadata) == {"utm_source", "utm_term"}


async def test_bearer_bytes_that_are_not_utf8_are_401(tracker, pg, data):
    key = make_api_key(pg, data["business"]).encode()
    body = b'{"click_id": "%s", "type": "conversion"}' % str(uuid.uuid4()).encode()
    for auth in (b"Bearer " + key + b"\xe9", b"Bearer \xe9", b"Bearer\xa0" + key, b"\xe9 " + key):
        request = (b"POST /v1/conversions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                   b"Content-Type: application/json\r\nAuthorization: "
                   + auth + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        status, response = await raw_request(tracker, request)
        assert status == 401, auth
        assert orjson.loads(response)["error"]["code"] == "unauthorized"


async def test_ids_in_odd_spellings_are_refused_and_upper_case_is_lower_cased(tracker, pg, data, redis, settings):
    key = make_api_key(pg, data["business"])
    auth = {"Authorization": f"Bearer {key}"}
    click_id = await click(tracker, data["code"])
    for odd in odd_spellings(click_id):
        response = await tracker.post("/v1/conversions", json={"click_id": odd, "type": "conversion"}, headers=auth)
        assert (response.status, (await response.json())["error"]["field"]) == (422, "click_id"), odd
        assert (await tracker.get("/px.gif", params={"cid": odd})).status == 400, odd
    shouted = await tracker.post("/v1/conversions", headers=auth,
                                 json={"click_id": click_id.upper(), "type": "conversion", "order_id": "U-1"})
    assert shouted.status == 202
    assert (await tracker.get("/px.gif", params={"cid": click_id.upper(), "order_id": "U-2"})).status == 200
    _, api, px = await stream_events(redis, settings)
    # Attributed through the click index, which is keyed by the canonical id.
    assert [(e.click_id, e.campaign_id) for e in (api, px)] == [(click_id, data["campaign"])] * 2


# -- a flood of made-up codes ---------------------------------------------------------------


def flood_budget(monkeypatch, **limits) -> None:
    """The trackers created from here on count misses with ``limits`` and a clock that stays in one second."""
    monkeypatch.setattr("tracker.app.MissBudget", functools.partial(MissBudget, clock=lambda: 0.0, **limits))


def random_code() -> str:
    return secrets.token_urlsafe(9)[:12].replace("-", "a").replace("_", "b")


async def test_made_up_codes_never_reach_postgres(settings, tracker_client, pg, monkeypatch):
    flood_budget(monkeypatch, per_client_s=1000, probes_s=0)
    link = make_link(pg)  # before the tracker starts: in the filter it loads
    tracker = await tracker_client(create_app(settings))
    await known_codes_loaded(tracker.app)
    statuses = [(await tracker.get(f"/{random_code()}", allow_redirects=False)).status for _ in range(300)]
    assert set(statuses) == {404}
    assert layer_counts(tracker.app).get("postgres", 0) == 0 and layer_counts(tracker.app)["filtered"] == 300
    assert (await tracker.get(f"/{link['code']}", allow_redirects=False)).status == 302  # a real miss still asks
    assert layer_counts(tracker.app)["postgres"] == 1


def link_info(link: dict) -> LinkInfo:
    """What the admin API publishes to Redis for a link ``make_link`` made."""
    return LinkInfo(link_id=link["link"], code=link["code"], campaign_id=link["campaign"], creator_id=link["creator"],
                    supporter_id=None, business_id=link["business"], destination_url=link["destination"],
                    campaign_status="active")


async def test_a_link_made_after_the_filter_loaded_resolves_at_once(settings, tracker_client, pg, redis, monkeypatch):
    flood_budget(monkeypatch, probes_s=0)
    tracker = await tracker_client(create_app(settings))
    await known_codes_loaded(tracker.app)
    link = make_link(pg)
    info = link_info(link)
    await publish(redis, settings.keys, [link["code"]], {link["code"]: info})  # what the admin API does as it makes one
    assert (await tracker.get(f"/{link['code']}", allow_redirects=False)).status == 302
    # Its Redis entry gone (expired), the code the invalidation added to the filter still reaches Postgres.
    await redis.delete(settings.keys.link(link["code"]))
    tracker.app[RESOLVER].forget_all()
    assert (await tracker.get(f"/{link['code']}", allow_redirects=False)).status == 302


async def test_a_link_whose_publish_was_lost_resolves_in_seconds_in_a_flood(settings, tracker_client, pg, monkeypatch):
    """Made while Redis was down (never published, no Redis entry), after the filter loaded, while a flood
    spends every probe: it answered 404 until the next full load (5 min). The filter reads new codes."""
    flood_budget(monkeypatch, per_client_s=10**6, probes_s=0)
    monkeypatch.setattr("tracker.misses.NEW_CODES_S", 0.05)
    tracker = await tracker_client(create_app(settings))
    await known_codes_loaded(tracker.app)
    link = make_link(pg)
    for _ in range(100):
        assert {(await tracker.get(f"/{random_code()}", allow_redirects=False)).status for _ in range(20)} == {404}
        if (await tracker.get(f"/{link['code']}", allow_redirects=False)).status == 302:
            break
    else:
        raise AssertionError("the link was never resolved")
    assert layer_counts(tracker.app)["postgres"] == 1  # only the real code reached Postgres


async def test_misses_are_bounded_per_client_and_ipv6_per_64(settings, tracker_client, pg, monkeypatch):
    flood_budget(monkeypatch, per_client_s=3)
    link = make_link(pg)
    proxy = (ipaddress.ip_network("127.0.0.0/8"),)
    tracker = await tracker_client(create_app(replace(settings, trusted_proxies=proxy)))
    await known_codes_loaded(tracker.app)

    async def misses(client_ip: str, count: int) -> list[int]:
        headers = {"X-Forwarded-For": client_ip}
        return [(await tracker.get(f"/{random_code()}", headers=headers, allow_redirects=False)).status
                for _ in range(count)]

    assert await misses("203.0.113.5", 5) == [404, 404, 404, 429, 429]
    assert await misses("::ffff:203.0.113.5", 1) == [429]  # the same IPv4 client
    assert await misses("2001:db8:1:2::1", 3) == [404] * 3
    assert await misses("2001:db8:1:2:ffff::9", 1) == [429]  # the same /64
    assert await misses("2001:db8:1:3::1", 1) == [404]
    # Misses that find a link never count: real users behind one address are never refused.
    for _ in range(5):
        tracker.app[RESOLVER].forget_all()
        response = await tracker.get(f"/{link['code']}", headers={"X-Forwarded-For": "198.51.100.7"},
                                     allow_redirects=False)
        assert response.status == 302
    assert await misses("198.51.100.7", 4) == [404, 404, 404, 429]


async def test_postgres_down_at_start_links_resolve_from_redis_and_misses_are_bounded(
    settings, tracker_client, pg, redis, monkeypatch
):
    flood_budget(monkeypatch, per_client_s=1000, lookups=0)
    link = make_link(pg)
    info = link_info(link)
    await publish(redis, settings.keys, [link["code"]], {link["code"]: info})
    down = replace(settings, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    tracker = await tracker_client(create_app(down))
    assert tracker.app[KNOWN_CODES].loaded_at is None
    assert (await tracker.get(f"/{link['code']}", allow_redirects=False)).status == 302
    # No filter yet, so any code may exist; with no lookup slot free, 503 at once, not a pool timeout.
    assert {(await tracker.get(f"/{random_code()}", allow_redirects=False)).status for _ in range(50)} == {503}
    assert layer_counts(tracker.app).get("postgres", 0) == 0


