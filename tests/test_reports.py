"""Campaign stats (ClickHouse raw events + Postgres decisions) and creator earnings, exact on a small dataset."""

from __future__ import annotations

import asyncio
import secrets
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from admin_api import app as app_module
from admin_api.app import create_app
from admin_api.reports import STATS_PER_CALLER, STATS_PER_PROCESS
from admin_api.typedefs import PG_POOL
from oros import connections

from factories import make_campaign, make_user

DAY1 = datetime(2026, 3, 1, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY2 + timedelta(days=1)
CH_COLUMNS = ["event_id", "event_type", "ts", "campaign_id", "creator_id", "value", "ip", "user_agent", "referrer",
              "is_bot", "bot_reason", "source", "metadata"]


def raw(ch, campaign: str, kind: str, at: datetime, *, bot: bool = False, value: str | None = None,
        event_id: uuid.UUID | None = None) -> uuid.UUID:
    event_id = event_id or uuid.uuid4()
    ch.insert("events", [[event_id, kind, at, uuid.UUID(campaign), None, Decimal(value) if value else None,
                          "203.0.113.9", "test", "", bot, "ua" if bot else "", "redirect", "{}"]],
              column_names=CH_COLUMNS)
    return event_id


def decided(pg, campaign: str, creator: str, kind: str, at: datetime, status: str, *, reason: str | None = None,
            payout: str | None = None, fee: str | None = None, first_visit: bool = False, country: str = "") -> None:
    paid = status in ("paid", "reversed")
    pg.execute(
        """INSERT INTO events (campaign_id, creator_id, event_type, occurred_at, status, rejection_reason,
                               payout_amount, platform_fee, paid, reversed_payout, reversed_fee, first_visit, country)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (campaign, creator, kind, at, status, reason, payout, fee, paid,
         *((payout, fee) if status == "reversed" else (0, 0)), first_visit, country),
    )


@pytest.fixture
async def api(aiohttp_client, settings):
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def dataset(pg, ch, settings):
    business, business_auth = make_user(pg, settings, "business")
    creator, creator_auth = make_user(pg, settings, "creator")
    campaign = make_campaign(pg, business)
    other = make_campaign(pg, business)
    h = timedelta(hours=1)

    # Day 1: 5 clicks (one a bot), 2 conversions; one click delivered twice (same edge id).
    replayed = raw(ch, campaign, "click", DAY1 + 9 * h)
    raw(ch, campaign, "click", DAY1 + 9 * h, event_id=replayed)
    for minutes in (5, 20, 40):
        raw(ch, campaign, "click", DAY1 + 10 * h + timedelta(minutes=minutes))
    raw(ch, campaign, "click", DAY1 + 11 * h, bot=True)
    raw(ch, campaign, "conversion", DAY1 + 12 * h)
    raw(ch, campaign, "conversion", DAY1 + 13 * h)
    # Day 2: 3 clicks, 2 sales.
    for hour in (1, 2, 3):
        raw(ch, campaign, "click", DAY2 + hour * h)
    raw(ch, campaign, "sale", DAY2 + 5 * h, value="49.99")
    raw(ch, campaign, "sale", DAY2 + 6 * h, value="10.01")
    # Outside the range or another campaign: never counted.
    raw(ch, campaign, "click", DAY3)
    raw(ch, campaign, "click", DAY1 - timedelta(milliseconds=1))
    raw(ch, other, "click", DAY1 + 10 * h)

    for minutes in (5, 20):
        decided(pg, campaign, creator, "click", DAY1 + 10 * h + timedelta(minutes=minutes), "paid",
                payout="0.50", fee="0.05", first_visit=True)
    decided(pg, campaign, creator, "click", DAY1 + 10 * h + timedelta(minutes=40), "rejected", reason="duplicate_click")
    decided(pg, campaign, creator, "click", DAY1 + 11 * h, "rejected", reason="bot")
    decided(pg, campaign, creator, "conversion", DAY1 + 12 * h, "rejected", reason="wrong_type")
    decided(pg, campaign, creator, "click", DAY2 + 1 * h, "paid", payout="0.50", fee="0.05", first_visit=True)
    decided(pg, campaign, creator, "click", DAY2 + 2 * h, "rejected", reason="duplicate_click")
    decided(pg, campaign, creator, "sale", DAY2 + 5 * h, "reversed", payout="5.00", fee="0.50")
    decided(pg, campaign, creator, "sale", DAY2 + 6 * h, "paid", payout="5.00", fee="0.50")
    decided(pg, campaign, creator, "click", DAY3, "paid", payout="0.50", fee="0.05")
    decided(pg, other, creator, "click", DAY1 + 10 * h, "paid", payout="0.50", fee="0.05")
    return {"business": business_auth, "creator": creator_auth, "campaign": campaign, "other": other}


def query(start: datetime, end: datetime, granularity: str = "day") -> dict:
    return {"from": start.isoformat(), "to": end.isoformat(), "granularity": granularity}


async def test_daily_stats_are_exact(api, dataset):
    resp = await api.get(f"/v1/campaigns/{dataset['campaign']}/stats", params=query(DAY1, DAY3),
                         headers=dataset["business"])

    assert resp.status == 200, await resp.text()
    body = await resp.json()
    day1, day2 = body["buckets"]
    assert day1 == {
        "start": DAY1.isoformat(),
        "clicks": {"all": 5, "billable": 2, "bot": 1, "duplicate": 1, "unique": 2},
        "conversions": {"all": 2, "billable": 0},
        "sales": {"all": 0, "billable": 0, "refunded": 0, "value": "0.00"},
        "spend": "1.00",
        "rejections": {"bot": 1, "duplicate_click": 1, "wrong_type": 1},
    }
    assert day2 == {
        "start": DAY2.isoformat(),
        "clicks": {"all": 3, "billable": 1, "bot": 0, "duplicate": 1, "unique": 1},
        "conversions": {"all": 0, "billable": 0},
        "sales": {"all": 2, "billable": 2, "refunded": 1, "value": "60.00"},
        "spend": "5.50",
        "rejections": {"duplicate_click": 1},
    }
    assert body["totals"] == {
        "clicks": {"all": 8, "billable": 3, "bot": 1, "duplicate": 2, "unique": 3},
        "conversions": {"all": 2, "billable": 0},
        "sales": {"all": 2, "billable": 2, "refunded": 1, "value": "60.00"},
        "spend": "6.50",
        "rejections": {"bot": 1, "duplicate_click": 2, "wrong_type": 1},
    }


async def test_hourly_buckets_are_dense(api, dataset):
    resp = await api.get(f"/v1/campaigns/{dataset['campaign']}/stats", params=query(DAY1, DAY2, "hour"),
                         headers=dataset["business"])

    buckets = (await resp.json())["buckets"]
    assert len(buckets) == 24
    ten = buckets[10]
    assert ten["start"] == (DAY1 + timedelta(hours=10)).isoformat()
    assert ten["clicks"] == {"all": 3, "billable": 2, "bot": 0, "duplicate": 1, "unique": 2}
    assert buckets[9]["clicks"]["all"] == 1  # the replayed click counts once
    assert sum(b["clicks"]["all"] for b in buckets) == 5


async def test_only_the_owner_or_an_admin_sees_stats(api, pg, settings, dataset):
    _, stranger = make_user(pg, settings, "business")
    _, admin = make_user(pg, settings, "admin")
    pg.execute("UPDATE campaigns SET status = 'active' WHERE id = %s", (dataset["campaign"],))  # publicly listed
    url = f"/v1/campaigns/{dataset['campaign']}/stats"
    params = query(DAY1, DAY3)

    assert (await api.get(url, params=params, headers=stranger)).status == 404
    assert (await api.get(url, params=params, headers=dataset["creator"])).status == 403
    assert (await api.get(url, params=params)).status == 401
    by_admin = await api.get(url, params=params, headers=admin)
    assert by_admin.status == 200
    assert (await by_admin.json())["totals"]["clicks"]["all"] == 8


async def test_bad_stats_queries_name_the_field(api, dataset):
    for params, field in [
        ({"granularity": "minute"}, "granularity"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z", "granularity": "hour"}, "from"),
        ({"from": "2024-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from"),
    ]:
        resp = await api.get(f"/v1/campaigns/{dataset['campaign']}/stats", params=params,
                             headers=dataset["business"])
        assert resp.status == 422, params
        assert (await resp.json())["error"]["field"] == field


async def test_default_range_is_the_last_week(api, dataset):
    before = datetime.now(UTC)
    body = await (await api.get(f"/v1/campaigns/{dataset['campaign']}/stats", headers=dataset["business"])).json()
    after = datetime.now(UTC)

    end = datetime.fromisoformat(body["to"])
    assert before <= end <= after and datetime.fromisoformat(body["from"]) == end - timedelta(days=7)
    starts = [datetime.fromisoformat(b["start"]) for b in body["buckets"]]
    midnight = (end - timedelta(days=7)).replace(hour=0, minute=0, second=0, microsecond=0)
    # One bucket per UTC day from the floor of `from` to the day holding `to` (8, or 7 at exactly midnight).
    assert starts == [midnight + timedelta(days=n) for n in range(len(starts))]
    assert starts[-1] < end <= starts[-1] + timedelta(days=1)
    assert body["totals"]["clicks"]["all"] == 0


async def test_creator_earnings_by_campaign_and_day(api, dataset):
    resp = await api.get("/v1/me/earnings", params={"from": DAY1.isoformat(), "to": DAY3.isoformat()},
                         headers=dataset["creator"])

    assert resp.status == 200, await resp.text()
    body = await resp.json()
    campaign, other = dataset["campaign"], dataset["other"]
    items = {(i["campaign_id"], i["day"]): (i["events"], i["earned"], i["reversed"]) for i in body["items"]}
    assert items == {
        (campaign, "2026-03-01"): (2, "0.90", "0.00"),
        (other, "2026-03-01"): (1, "0.45", "0.00"),
        (campaign, "2026-03-02"): (2, "4.95", "4.50"),
    }
    assert body["total_earned"] == "6.30" and body["total_reversed"] == "4.50"
    assert {c["campaign_id"]: c["earned"] for c in body["by_campaign"]} == {campaign: "5.85", other: "0.45"}


async def test_earnings_are_the_callers_own(api, pg, settings, dataset):
    _, someone = make_user(pg, settings, "creator")

    body = await (await api.get("/v1/me/earnings", params={"from": DAY1.isoformat(), "to": DAY3.isoformat()},
                                headers=someone)).json()

    assert body["items"] == [] and body["total_earned"] == "0.00"
    assert (await api.get("/v1/me/earnings", headers=dataset["business"])).status == 403


# --- Stats must not starve the API ---------------------------------------------------------------

class WatchedLock:
    """Stands in for the chDB lock: the test holds it (a ClickHouse busy for as long as we like) and
    sees how many calls wait on it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.waiting = 0
        self._guard = threading.Lock()

    def __enter__(self):
        with self._guard:
            self.waiting += 1
        self.lock.acquire()
        with self._guard:
            self.waiting -= 1
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


@pytest.fixture
def small_pool(monkeypatch):
    """The admin API's pool with 2 connections and a short wait, so exhaustion shows within the test."""
    def pool(settings):
        return AsyncConnectionPool(settings.database_url, min_size=1, max_size=2, timeout=2,
                                   kwargs={"row_factory": dict_row}, open=False, name="small")

    monkeypatch.setattr(app_module, "pg_pool", pool)


async def _until(condition, what: str) -> None:
    """Wait (bounded) until ``condition()``; a bound, not a measurement."""
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_concurrent_stats_never_starve_the_api(aiohttp_client, settings, pg, small_pool, monkeypatch):
    busy = WatchedLock()
    monkeypatch.setattr(connections, "CHDB_LOCK", busy)
    api = await aiohttp_client(create_app(settings))
    callers = []
    for _ in range(STATS_PER_PROCESS // STATS_PER_CALLER):
        business, auth = make_user(pg, settings, "business")
        callers.append((make_campaign(pg, business), auth))
    day = query(DAY1, DAY3)

    with busy.lock:  # ClickHouse answers nothing until the block ends
        stats = [asyncio.create_task(api.get(f"/v1/campaigns/{c}/stats", params=day, headers=auth))
                 for c, auth in callers for _ in range(STATS_PER_CALLER)]
        await _until(lambda: busy.waiting == len(stats),
                     "stats requests never reached ClickHouse (they wait for a Postgres connection)")
        # Every stats request is waiting on ClickHouse, and the 2-connection pool still serves the API.
        for _ in range(5):
            me = await api.get("/v1/me", headers=callers[0][1])
            assert me.status == 200, await me.text()
        # One caller may not hold more, nor may the process.
        campaign, auth = callers[0]
        more = await api.get(f"/v1/campaigns/{campaign}/stats", params=day, headers=auth)
        assert more.status == 429 and more.headers["Retry-After"] == "1"
        assert (await more.json())["error"]["code"] == "too_many_requests"
        business, auth = make_user(pg, settings, "business")
        newcomer = await api.get(f"/v1/campaigns/{make_campaign(pg, business)}/stats", params=day, headers=auth)
        assert newcomer.status == 503 and newcomer.headers["Retry-After"] == "1"
    answers = await asyncio.gather(*stats)
    assert [r.status for r in answers] == [200] * len(stats)
    # Slots are given back: the caller may ask again.
    again = await api.get(f"/v1/campaigns/{campaign}/stats", params=day, headers=callers[0][1])
    assert again.status == 200


async def test_pool_exhaustion_is_503_with_retry_after(aiohttp_client, settings, pg, small_pool):
    api = await aiohttp_client(create_app(settings))
    _, auth = make_user(pg, settings, "business")
    assert (await api.get("/v1/me", headers=auth)).status == 200
    pool = api.server.app[PG_POOL]
    async with pool.connection(), pool.connection():  # every connection busy elsewhere
        resp = await api.get("/v1/me", headers=auth)
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"]["code"] == "unavailable"
    assert (await api.get("/v1/me", headers=auth)).status == 200


async def test_clickhouse_unreachable_is_503_with_retry_after(aiohttp_client, settings, pg, port):
    """An HTTP ClickHouse that refuses connections (down, restarting) is an outage, not a 500."""
    from dataclasses import replace

    down = replace(settings, clickhouse_url=f"http://127.0.0.1:{port()}/")  # nothing listens there
    api = await aiohttp_client(create_app(down))
    business, auth = make_user(pg, settings, "business")
    resp = await api.get(f"/v1/campaigns/{make_campaign(pg, business)}/stats", params=query(DAY1, DAY3), headers=auth)
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"] == {"code": "unavailable",
                                            "message": "ClickHouse is unreachable; retry shortly"}


def test_chdb_calls_hold_one_process_wide_lock(settings, ch, monkeypatch):
    """Every chDB client of the process (any database) queries under the one lock, and an open stream holds it."""
    busy = WatchedLock()
    monkeypatch.setattr(connections, "CHDB_LOCK", busy)
    other = connections.clickhouse_client(settings, database="")
    assert ch is not other
    assert isinstance(ch, connections._SerialClient) and isinstance(other, connections._SerialClient)
    answered: list = []
    worker = threading.Thread(target=lambda: answered.append(other.query("SELECT 1").result_rows))
    with ch.query_rows_stream("SELECT number FROM numbers(3)") as rows:
        worker.start()
        for _ in range(3000):  # bounded wait until the other client's query queues on the lock
            if busy.waiting:
                break
            threading.Event().wait(0.01)
        assert busy.waiting == 1 and answered == []
        assert [r[0] for r in rows] == [0, 1, 2]
    worker.join(timeout=60)
    assert answered == [[(1,)]]


# -- dimensions, filters, unique visitors, a creator's own stats ---------------------------------

VISIT_COLUMNS = ["event_id", "event_type", "ts", "campaign_id", "link_id", "creator_id", "is_bot", "source",
                 "country", "device_type", "referrer_host"]


@pytest.fixture
def visits(pg, ch, settings):
    """Two creators' links on one campaign, and one creator's link on a second business's campaign."""
    business, business_auth = make_user(pg, settings, "business")
    (alice, alice_auth), (bob, _) = make_user(pg, settings, "creator"), make_user(pg, settings, "creator")
    campaign, elsewhere = make_campaign(pg, business), make_campaign(pg, make_user(pg, settings, "business")[0])
    links = {}
    owners = {"alice": (alice, campaign), "bob": (bob, campaign), "alice2": (alice, elsewhere)}
    for name, (creator, camp) in owners.items():
        links[name] = pg.execute(
            "INSERT INTO tracking_links (campaign_id, creator_id, code, url, destination_url)"
            " VALUES (%s, %s, %s, 'http://t/x', 'https://example.com') RETURNING id::text AS id",
            (camp, creator, secrets.token_hex(6))).fetchone()["id"]
    owner = {"alice": (alice, campaign), "bob": (bob, campaign), "alice2": (alice, elsewhere)}
    h = timedelta(hours=1)
    # (link, hour, country, device, bot, decision, first visit)
    rows = [("alice", 1, "US", "mobile", False, "paid", True), ("alice", 2, "US", "mobile", False, "paid", False),
            ("alice", 3, "DE", "desktop", False, "duplicate", False), ("alice", 4, "US", "bot", True, "bot", False),
            ("bob", 5, "DE", "mobile", False, "paid", True), ("bob", 6, "FR", "tablet", False, "paid", True),
            ("alice2", 7, "US", "mobile", False, "paid", True)]
    for link, hour, country, device, bot, decision, first in rows:
        creator, camp = owner[link]
        ch.insert("events", [[uuid.uuid4(), "click", DAY1 + hour * h, uuid.UUID(camp), uuid.UUID(links[link]),
                              uuid.UUID(creator), bot, "redirect", country, device, "news.example"]],
                  column_names=VISIT_COLUMNS)
        status, reason = ("paid", None) if decision == "paid" else ("rejected", f"{decision}_click" if decision ==
                                                                     "duplicate" else "bot")
        pg.execute("""INSERT INTO events (campaign_id, creator_id, tracking_link_id, event_type, occurred_at, status,
                                          rejection_reason, payout_amount, platform_fee, paid, first_visit, country,
                                          device_type, referrer_host)
                      VALUES (%s, %s, %s, 'click', %s, %s, %s, %s, %s, %s, %s, %s, %s, 'news.example')""",
                   (camp, creator, links[link], DAY1 + hour * h, status, reason, "0.50" if status == "paid" else None,
                    "0.05" if status == "paid" else None, status == "paid", first, country, device))
    return {"business": business_auth, "alice": alice_auth, "alice_id": alice, "bob_id": bob,
            "campaign": campaign, "elsewhere": elsewhere, "links": links}


def clicks_by_key(body: dict) -> dict:
    return {g["key"]: g["clicks"] for g in body["groups"]}


async def test_stats_group_by_country_with_unique_visitors(api, visits):
    resp = await api.get(f"/v1/campaigns/{visits['campaign']}/stats",
                         params={**query(DAY1, DAY2), "group_by": "country"}, headers=visits["business"])
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["group_by"] == "country" and body["groups_truncated"] is False
    assert clicks_by_key(body) == {
        "US": {"all": 3, "billable": 2, "bot": 1, "duplicate": 0, "unique": 1},
        "DE": {"all": 2, "billable": 1, "bot": 0, "duplicate": 1, "unique": 1},
        "FR": {"all": 1, "billable": 1, "bot": 0, "duplicate": 0, "unique": 1},
    }
    assert [g["key"] for g in body["groups"]] == ["US", "DE", "FR"]  # by clicks
    assert body["totals"]["clicks"] == {"all": 6, "billable": 4, "bot": 1, "duplicate": 1, "unique": 3}
    assert sum(b["clicks"]["all"] for b in body["buckets"]) == 6  # the time series stays whole


async def test_stats_filter_and_group_by_link_creator_device(api, visits):
    url = f"/v1/campaigns/{visits['campaign']}/stats"
    mobile = await (await api.get(url, params={**query(DAY1, DAY2), "device": "mobile", "group_by": "link"},
                                  headers=visits["business"])).json()
    assert mobile["filters"] == {"device": "mobile"}
    assert clicks_by_key(mobile) == {
        visits["links"]["alice"]: {"all": 2, "billable": 2, "bot": 0, "duplicate": 0, "unique": 1},
        visits["links"]["bob"]: {"all": 1, "billable": 1, "bot": 0, "duplicate": 0, "unique": 1},
    }
    by_creator = await (await api.get(url, params={**query(DAY1, DAY2), "group_by": "creator", "country": "DE"},
                                      headers=visits["business"])).json()
    assert {k: v["all"] for k, v in clicks_by_key(by_creator).items()} == {visits["alice_id"]: 1, visits["bob_id"]: 1}
    devices = await (await api.get(url, params={**query(DAY1, DAY2), "group_by": "device",
                                                "creator": visits["alice_id"].upper()},
                                   headers=visits["business"])).json()
    assert {k: v["all"] for k, v in clicks_by_key(devices).items()} == {"mobile": 2, "desktop": 1, "bot": 1}


async def test_a_creator_sees_stats_of_its_own_links_only(api, visits):
    resp = await api.get("/v1/me/stats", params={**query(DAY1, DAY2), "group_by": "campaign"},
                         headers=visits["alice"])
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["creator_id"] == visits["alice_id"]
    assert clicks_by_key(body) == {
        visits["campaign"]: {"all": 4, "billable": 2, "bot": 1, "duplicate": 1, "unique": 1},
        visits["elsewhere"]: {"all": 1, "billable": 1, "bot": 0, "duplicate": 0, "unique": 1},
    }
    assert body["totals"]["spend"] == "1.50"  # bob's clicks are not hers
    only = await (await api.get("/v1/me/stats", params={**query(DAY1, DAY2), "link": visits["links"]["alice2"]},
                                headers=visits["alice"])).json()
    assert only["totals"]["clicks"]["all"] == 1
    assert (await api.get("/v1/me/stats", headers=visits["business"])).status == 403


async def test_bad_group_by_or_filter_names_the_field(api, visits):
    url = f"/v1/campaigns/{visits['campaign']}/stats"
    for params, field in [({"group_by": "planet"}, "group_by"), ({"group_by": "campaign"}, "group_by"),
                          ({"link": "not-an-id"}, "link"), ({"creator": "1"}, "creator"),
                          ({"referrer": "x" * 256}, "referrer")]:
        resp = await api.get(url, params=params, headers=visits["business"])
        assert resp.status == 422, params
        assert (await resp.json())["error"]["field"] == field
    resp = await api.get("/v1/me/stats", params={"group_by": "creator"}, headers=visits["alice"])
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "group_by"
