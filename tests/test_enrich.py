"""ingest/enrich.py: what ingest adds to an event, and the settler's use of the IP hash.

Enrichment is checked on the bytes it produces (each must be what
``orjson.dumps`` of the enriched object gives, and pass ``ingest.rows``),
then through the real pipeline: the stream, the consumer, ClickHouse and a
settlement, with IPs anonymized.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import orjson
import pytest
from crawlerdetect import CrawlerDetect

from admin_api.app import create_app
from ingest import deadletter
from ingest.consumer import Ingester
from ingest.enrich import Enricher, is_crawler
from ingest.rows import check
from ingest.writer import BatchWriter
from oros.bots import classify_user_agent
from oros.events import STREAM_FIELD, Event
from oros.reasons import WRONG_TYPE
from oros.settings import Settings, SettingsError
from settler.run import settle_once

from factories import DAY_MS, make_user, now_ms

KEY = "k" * 40
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.4 Mobile/15E148 Safari/604.1")
WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 "
           "Safari/537.36")
IPAD = ("Mozilla/5.0 (iPad; CPU OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 "
        "Mobile/15E148 Safari/604.1")
ANDROID_TABLET = ("Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/122.0.0.0 Safari/537.36")
INSTAGRAM = ("Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/UQ1A; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Version/4.0 Chrome/122.0.6261.105 Mobile Safari/537.36 Instagram 321.0.0.39.106 Android (34/14)")
FACEBOOK_APP = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                "Mobile/15E148 [FBAN/FBIOS;FBAV/450.0.0.38.108;FBBV/1;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS]")
# Crawlers only crawlerdetect's list knows (the tracker's own patterns pass them).
LISTED_ONLY = ["Mozilla/5.0 (compatible; Qwantify/2.4w; +https://www.qwant.com/)/2.4w",
               "Scrapy/2.11.0 (+https://scrapy.org)", "heritrix/3.4.0", "Feedly/1.0",
               "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/120.0.0.0 Safari/537.36 PTST/240201.144123"]
AGENTS = [IPHONE, WINDOWS, IPAD, ANDROID_TABLET, INSTAGRAM, FACEBOOK_APP, *LISTED_ONLY, "",
          "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", "YandexSearch/7.0 (Android)",
          "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "curl/8.5.0",
          "facebookexternalhit/1.1", "WhatsApp/2.23.20.0", "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101"
          " Firefox/123.0", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
          "Gecko) Version/17.3 Safari/605.1.15", "python-requests/2.31", "x", "Mozilla/5.0"]
BASE = Event(event_id="0190a000-0000-7000-8000-000000000001", event_type="click", ts_ms=1_700_000_000_000,
             campaign_id="0190a000-0000-7000-8000-0000000000aa", ip="8.8.8.8", user_agent=IPHONE,
             referrer="https://News.Example.com:8443/a?b=c")


def enriched(event: Event, settings: Settings | None = None) -> dict:
    line = Enricher(settings or Settings()).line(event.encode())
    assert orjson.dumps(orjson.loads(line)) == line  # byte for byte what orjson writes
    check(line)  # and what ClickHouse takes
    return orjson.loads(line)


def test_crawler_verdicts_are_crawlerdetects():
    """RE2 runs crawlerdetect's own patterns: the same verdict on every agent, look-ahead included."""
    detector = CrawlerDetect()
    assert [is_crawler(a) for a in AGENTS] == [detector.is_crawler(a) for a in AGENTS]
    assert is_crawler("YandexBot/3.0") and not is_crawler("YandexSearch/7.0")  # Yandex(?!Search)


def test_device_browser_os_country_and_referrer_host():
    cases = {IPHONE: ("mobile", "Mobile Safari", "17.4", "iOS", "17.4"),
             WINDOWS: ("desktop", "Chrome", "122.0", "Windows", "10"),
             IPAD: ("tablet", "Mobile Safari", "17.3", "iOS", "17.3"),
             ANDROID_TABLET: ("tablet", "Chrome", "122.0", "Android", "13"),
             INSTAGRAM: ("mobile", "Instagram", "321.0", "Android", "14"),
             "": ("", "", "", "", "")}
    for agent, expected in cases.items():
        e = enriched(replace(BASE, user_agent=agent or None))
        assert (e["device_type"], e["browser"], e["browser_version"], e["os"], e["os_version"]) == expected, agent
    e = enriched(BASE)
    assert (e["country"], e["referrer_host"], e["ip"]) == ("US", "news.example.com", "8.8.8.8")
    assert enriched(replace(BASE, ip="2001:4860:4860::8888"))["country"] == "US"
    assert enriched(replace(BASE, ip="10.1.2.3"))["country"] == ""  # private: no registry assigns it
    none = enriched(replace(BASE, ip=None, referrer="not a url"))
    assert (none["country"], none["ip_hash"], none["referrer_host"]) == ("", "", "")


def test_crawlers_are_flagged_in_app_browsers_and_our_reasons_kept():
    assert not any(classify_user_agent(agent) for agent in LISTED_ONLY)  # only the maintained list knows them
    for agent in LISTED_ONLY:
        for source in ("redirect", "qr", "pixel"):
            e = enriched(replace(BASE, user_agent=agent, source=source))
            assert (e["is_bot"], e["bot_reason"], e["device_type"]) == (True, "crawler", "bot"), (agent, source)
        # A conversion the business's server posts carries its HTTP client's agent and address: never a
        # bot for that, and no visitor's device or country.
        api = enriched(replace(BASE, user_agent=agent, source="api"))
        assert api["is_bot"] is False and {api[k] for k in ("country", "device_type", "browser", "ip_hash")} == {""}
    for agent in (INSTAGRAM, FACEBOOK_APP):
        assert enriched(replace(BASE, user_agent=agent))["is_bot"] is False
    # What the tracker flagged keeps its reason (the reason names are the settler's and the reports').
    flagged = replace(BASE, user_agent="facebookexternalhit/1.1", is_bot=True, bot_reason="preview_bot")
    assert (enriched(flagged)["is_bot"], enriched(flagged)["bot_reason"]) == (True, "preview_bot")


def test_anonymized_ips_are_truncated_and_hashed_by_visitor():
    anonymizing = replace(Settings(), anonymize_ip=True, ip_hash_key=KEY)
    cases = {"203.0.113.77": "203.0.113.0", "2001:db8:1234:5678:9abc::1": "2001:db8:1234::",
             "::ffff:198.51.100.9": "198.51.100.0", "2001:db8:0:1::5": "2001:db8::", "junk": ""}
    for ip, stored in cases.items():
        e = enriched(replace(BASE, ip=ip), anonymizing)
        assert e["ip"] == stored, ip
        assert len(e["ip_hash"]) == 32
    one, other = (enriched(replace(BASE, ip=ip), anonymizing) for ip in ("203.0.113.1", "203.0.113.2"))
    assert one["ip"] == other["ip"] and one["ip_hash"] != other["ip_hash"]  # a /24, two visitors
    # An IPv6 host uses any address of its /64: one visitor (oros.clientip.visitor_key); the next /64, another.
    host, same, next_64 = (enriched(replace(BASE, ip=ip), anonymizing)["ip_hash"]
                           for ip in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:3::1"))
    assert host == same != next_64
    rekeyed = enriched(replace(BASE, ip="203.0.113.1"), replace(anonymizing, ip_hash_key="q" * 40))
    assert rekeyed["ip_hash"] != one["ip_hash"]  # keyed: nobody without the key can recompute it
    assert one["ip_hash"] != hashlib.blake2b(b"203.0.113.1", digest_size=16).hexdigest()
    assert enriched(replace(BASE, ip="203.0.113.77"))["ip"] == "203.0.113.77"  # not anonymizing: kept
    assert enriched(replace(BASE, ip="203.0.113.77", source="api"), anonymizing)["ip"] == "203.0.113.0"


def test_what_is_not_the_edges_format_passes_through():
    enricher = Enricher(Settings())
    wire = BASE.encode()
    for raw in (b"{not json", b"[1]", wire.replace(b',"ip":', b',"IP":'), wire[:-1],
                wire.replace(b'"user_agent":"', b'"user_agent":"\\ud800'), wire.replace(b'"ip":"8.8.8.8"', b'"ip":7')):
        assert enricher.line(raw) == raw


def test_anonymize_needs_a_dedupe_window_the_hash_outlives():
    with pytest.raises(SettingsError, match="OROS_CLICK_DEDUPE_SECONDS"):
        Settings.from_env({"OROS_ANONYMIZE_IP": "true", "OROS_CLICK_DEDUPE_SECONDS": "86401"})
    with pytest.raises(SettingsError, match="OROS_ANONYMIZE_IP"):
        Settings.from_env({"OROS_ANONYMIZE_IP": "yes please"})
    assert Settings.from_env({"OROS_ANONYMIZE_IP": "true"}).ip_secrets == ("OROS_IP_HASH_KEY",)


async def test_ingest_stores_enriched_events(settings, redis, ch):
    anonymizing = replace(settings, anonymize_ip=True, ip_hash_key=KEY)
    await redis.xadd(settings.keys.stream, {STREAM_FIELD: replace(BASE, ts_ms=now_ms()).encode()})
    ingester = Ingester(anonymizing, "t")
    try:
        assert await ingester.drain_once() == 1
    finally:
        await ingester.close()
    assert ch.query("SELECT ip, country, device_type, browser, os, referrer_host, length(ip_hash) FROM events"
                    ).result_rows == [("8.8.8.0", "US", "mobile", "Mobile Safari", "iOS", "news.example.com", 32)]


def put_enriched(settings: Settings, events: list[Event]) -> None:
    enricher = Enricher(settings)
    writer = BatchWriter(settings)
    writer.extend([e.event_id.encode() for e in events], enricher.lines([e.encode() for e in events]))
    writer.close()


def test_anonymized_dedupe_and_first_visits_go_by_the_full_ip(world):
    """Truncation must not merge a /24's visitors into one, nor let one visitor's repeat through.

    Deduplicating by the stored (truncated) IP would reject the neighbour's click as a duplicate.
    """
    settings = replace(world.settings, anonymize_ip=True, ip_hash_key=KEY)
    campaign = world.campaign()
    creator = world.creator(campaign)
    day = now_ms() // DAY_MS * DAY_MS - DAY_MS  # yesterday, UTC: its clicks all fall in one day
    first = world.click(campaign, creator, ts_ms=day + 1_000, ip="203.0.113.1")
    neighbour = world.click(campaign, creator, ts_ms=day + 2_000, ip="203.0.113.2")
    repeat = world.click(campaign, creator, ts_ms=day + 3_000, ip="203.0.113.1")
    later = world.click(campaign, creator, ts_ms=day + 7_200_000, ip="203.0.113.1")  # past the window, same day
    put_enriched(settings, [first, neighbour, repeat, later])
    settle_once(settings)
    decided = {r["id"]: r for r in world.pg.execute(
        "SELECT id::text AS id, status, rejection_reason, host(ip_address) AS ip, first_visit, country"
        " FROM events").fetchall()}
    assert [(decided[e.event_id]["status"], decided[e.event_id]["rejection_reason"])
            for e in (first, neighbour, repeat, later)] == [
        ("paid", None), ("paid", None), ("rejected", "duplicate_click"), ("paid", None)]
    assert [decided[e.event_id]["first_visit"] for e in (first, neighbour, repeat, later)] == [True, True, False, False]
    assert {r["ip"] for r in decided.values()} == {"203.0.113.0"}  # Postgres never sees a full address
    world.assert_books()


def test_the_ip_data_is_the_release_the_readme_dates():
    """Each iptocc release is a new snapshot of the registries' data: pinned, installed and named alike."""
    root = Path(__file__).resolve().parents[1]
    pinned = re.search(r'"iptocc==([0-9.]+)"', (root / "pyproject.toml").read_text()).group(1)
    assert metadata.version("iptocc") == pinned
    assert f"version {pinned}, data of " in " ".join((root / "README.md").read_text().split())


async def _ingest(settings: Settings, redis, events: list[Event]) -> None:
    for event in events:
        await redis.xadd(settings.keys.stream, {STREAM_FIELD: event.encode()})
    ingester = Ingester(settings, "t")
    try:
        assert await ingester.drain_once() == len(events)
    finally:
        await ingester.close()


async def test_conversions_and_sales_are_reported_under_their_clicks_visitor(aiohttp_client, world, redis, ch):
    """A sale's server posts it from its own address and HTTP client: it counts where its click came from.

    One click is in ClickHouse before its sale arrives, the other arrives in the same batch as its conversion.
    """
    settings = world.settings
    business, business_auth = make_user(world.pg, settings, "business")
    creator, creator_auth = make_user(world.pg, settings, "creator")
    campaign = world.campaign(business, objective="sale")
    link = world.join(campaign, creator)
    start = now_ms() - 3 * 3_600_000
    server = {"ip": "10.0.0.7", "user_agent": "python-requests/2.31"}
    german = world.click(campaign, link, ts_ms=start, ip="85.214.132.117", user_agent=IPHONE,
                         referrer="https://news.example.com/a")
    american = world.click(campaign, link, ts_ms=start + 1_000, ip="8.8.8.8", user_agent=WINDOWS)
    sale = replace(world.conversion(german, kind="sale", value="20.00", order_id="o-1"), **server)
    conversion = replace(world.conversion(american, order_id="o-2"), **server)
    await _ingest(settings, redis, [german])
    await _ingest(settings, redis, [american, sale, conversion])
    assert {r[0]: r[1:] for r in ch.query(
        "SELECT event_type, country, device_type, browser, referrer_host FROM events FINAL"
        " WHERE event_type != 'click'").result_rows} == {
        "sale": ("DE", "mobile", "Mobile Safari", "news.example.com"), "conversion": ("US", "desktop", "Chrome", "")}
    settle_once(settings)
    decided = world.pg.execute("SELECT event_type, status, country, device_type, referrer_host FROM events"
                               " WHERE event_type != 'click'").fetchall()
    assert {r["event_type"]: (r["status"], r["country"], r["device_type"], r["referrer_host"]) for r in decided} == {
        "sale": ("paid", "DE", "mobile", "news.example.com"), "conversion": ("rejected", "US", "desktop", "")}

    api = await aiohttp_client(create_app(settings))
    params = {"from": datetime.fromtimestamp(start / 1000 - 86_400, tz=UTC).isoformat(), "group_by": "country"}
    for path, auth in ((f"/v1/campaigns/{campaign}/stats", business_auth), ("/v1/me/stats", creator_auth)):
        for granularity in ("hour", "day"):
            resp = await api.get(path, params={**params, "granularity": granularity}, headers=auth)
            assert resp.status == 200, await resp.text()
            groups = {g["key"]: g for g in (await resp.json())["groups"]}
            assert set(groups) == {"DE", "US"}, (path, granularity)  # nothing left "unknown"
            assert groups["DE"]["sales"] == {"all": 1, "billable": 1, "refunded": 0, "value": "20.00"}
            assert groups["US"]["conversions"] == {"all": 1, "billable": 0}
            assert groups["US"]["rejections"] == {WRONG_TYPE: 2}  # the click and its conversion
        resp = await api.get(path, params={**params, "group_by": "device", "device": "mobile"}, headers=auth)
        assert (await resp.json())["groups"][0]["sales"]["all"] == 1
    world.assert_books()


def test_the_settler_reports_a_sale_under_its_clicks_visitor(world):
    """A sale stored without its click's fields (ingested before its click, or before ingest copied them)."""
    campaign = world.campaign(objective="sale")
    click = world.click(campaign, world.creator(campaign), ip="85.214.132.117", user_agent=IPHONE,
                        referrer="https://news.example.com/a")
    put_enriched(world.settings, [click])
    world.put([world.conversion(click, kind="sale", value="9.00", order_id="o-1")])
    settle_once(world.settings)
    assert world.pg.execute("SELECT status, country, device_type, browser, os, referrer_host FROM events"
                            " WHERE event_type = 'sale'").fetchone() == {
        "status": "paid", "country": "DE", "device_type": "mobile", "browser": "Mobile Safari", "os": "iOS",
        "referrer_host": "news.example.com"}
    world.assert_books()


ANONYMIZING = replace(Settings(), anonymize_ip=True, ip_hash_key=KEY)
FULL_IP = b"203.0.113.77"
WIRE = replace(BASE, ip=FULL_IP.decode()).encode()
# Entries the byte-level path cannot read: a lone surrogate orjson refuses, bytes that are not UTF-8, the key in
# another case, a field the edge never writes.
def odd(wire: bytes) -> list[bytes]:
    return [wire.replace(b'"user_agent":"', b'"user_agent":"\\ud800'),
            wire.replace(b'"user_agent":"', b'"user_agent":"\xff'), wire.replace(b'"ip":', b'"IP":'),
            wire[:-1] + b',"extra":1}']



# Entries with no address to read: not JSON, not an object, an IP that is no text.
UNREADABLE = [b'{"ip":"203.0.113.77"', b'["203.0.113.77"]',
              WIRE.replace(b'"ip":"203.0.113.77"', b'"ip":[203,0,113,77]')]


def test_anonymizing_never_passes_a_full_ip_through():
    enricher = Enricher(ANONYMIZING)
    for raw in odd(WIRE):
        line = enricher.line(raw)
        assert FULL_IP not in line and b'"203.0.113.0"' in line, raw
        assert json.loads(line)["ip_hash"] == orjson.loads(enricher.line(WIRE))["ip_hash"]  # the full IP's
    assert [enricher.line(raw) for raw in UNREADABLE] == [None] * len(UNREADABLE)


async def test_ingest_stores_and_dead_letters_no_full_ip_while_anonymizing(settings, redis, ch):
    anonymizing = replace(settings, anonymize_ip=True, ip_hash_key=KEY)
    refused = WIRE.replace(b'"event_type":"click"', b'"event_type":"nope"')  # ClickHouse refuses it: a dead letter
    # Stamped now (an IP hash is kept for the dedupe window only), each with an id of its own.
    entries = [odd(replace(BASE, event_id=f"0190a000-0000-7000-8000-00000000000{i}", ts_ms=now_ms(),
                           ip=FULL_IP.decode()).encode())[i] for i in range(4)]
    for raw in [*entries, refused, *UNREADABLE]:
        await redis.xadd(settings.keys.stream, {STREAM_FIELD: raw})
    ingester = Ingester(anonymizing, "t")
    try:
        await ingester.drain_once()
    finally:
        await ingester.close()
    stored = ch.query("SELECT ip, ip_hash FROM events").result_rows
    letters = await deadletter.read(redis, settings.keys)
    assert stored and len(stored) + len(letters) == len(entries) + 1 + len(UNREADABLE)
    assert {ip for ip, _ in stored} == {"203.0.113.0"} and all(len(h) == 32 for _, h in stored)
    assert not any(FULL_IP in (letter.event or b"") for letter in letters)
    kept = {letter.reason_class: letter for letter in letters if letter.event and b'"nope"' in letter.event}
    assert orjson.loads(kept["invalid"].event)["ip"] == "203.0.113.0"  # refused: kept, truncated, replayable form
    assert sum(letter.event is None and "not kept" in letter.reason for letter in letters) == len(UNREADABLE)


def test_a_late_earlier_click_takes_the_first_visit_mark(world):
    """A visitor's click decided first, then an earlier click of theirs arriving late: one unique visitor.

    The late click is that day's first visit; the one decided before loses its mark, in the rows and in
    the hourly sums the reports read.
    """
    campaign = world.campaign()
    creator = world.creator(campaign)
    day = now_ms() // DAY_MS * DAY_MS - DAY_MS  # yesterday, UTC
    decided_first = world.click(campaign, creator, ts_ms=day + 7_200_000, ip="203.0.113.1")
    late = world.click(campaign, creator, ts_ms=day + 3_600_000, ip="203.0.113.1")
    tomorrow = world.click(campaign, creator, ts_ms=day + DAY_MS + 1_000, ip="203.0.113.1")  # another day: kept
    world.put([decided_first, tomorrow])
    settle_once(world.settings)
    world.put([late])
    settle_once(world.settings)

    def visits() -> dict:
        return {r["id"]: r["first_visit"] for r in world.pg.execute("SELECT id::text AS id, first_visit FROM events")}

    assert visits() == {late.event_id: True, decided_first.event_id: False, tomorrow.event_id: True}
    assert world.pg.execute("SELECT sum(visitors) AS n FROM event_hours WHERE scope = 'campaign' AND dim = ''"
                            ).fetchone()["n"] == 2  # the unique count the reports read
    world.put([late])  # a replay decides nothing again and moves no mark
    settle_once(world.settings)
    assert visits() == {late.event_id: True, decided_first.event_id: False, tomorrow.event_id: True}
    world.assert_books()
