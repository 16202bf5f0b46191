"""Campaign stats (ClickHouse raw events + Postgres decisions) and creator earnings, exact on a small dataset."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from admin_api.app import create_app
from admin_api.auth import issue_token

DAY1 = datetime(2026, 3, 1, tzinfo=timezone.utc)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY2 + timedelta(days=1)
CH_COLUMNS = ["event_id", "event_type", "ts", "campaign_id", "creator_id", "value", "ip", "user_agent", "referrer",
              "is_bot", "bot_reason", "source", "metadata"]


def make_user(pg, settings, *roles: str) -> tuple[str, dict]:
    user = pg.execute("INSERT INTO users (email) VALUES (%s) RETURNING id::text AS id",
                      (f"{secrets.token_hex(6)}@example.com",)).fetchone()["id"]
    for role in roles:
        pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)", (user, role))
    return user, {"Authorization": f"Bearer {issue_token(settings, user)}"}


def make_campaign(pg, business: str) -> str:
    return pg.execute(
        "INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget)"
        " VALUES (%s, 'Launch', 'click', 0.50, 100) RETURNING id::text AS id", (business,)
    ).fetchone()["id"]


def raw(ch, campaign: str, kind: str, at: datetime, *, bot: bool = False, value: str | None = None,
        event_id: uuid.UUID | None = None) -> uuid.UUID:
    event_id = event_id or uuid.uuid4()
    ch.insert("events", [[event_id, kind, at, uuid.UUID(campaign), None, Decimal(value) if value else None,
                          "203.0.113.9", "test", "", bot, "ua" if bot else "", "redirect", "{}"]],
              column_names=CH_COLUMNS)
    return event_id


def decided(pg, campaign: str, creator: str, kind: str, at: datetime, status: str, *, reason: str | None = None,
            payout: str | None = None, fee: str | None = None) -> None:
    paid = status in ("paid", "reversed")
    pg.execute(
        """INSERT INTO events (campaign_id, creator_id, event_type, occurred_at, status, rejection_reason,
                               payout_amount, platform_fee, paid)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (campaign, creator, kind, at, status, reason, payout, fee, paid),
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
                payout="0.50", fee="0.05")
    decided(pg, campaign, creator, "click", DAY1 + 10 * h + timedelta(minutes=40), "rejected", reason="duplicate_click")
    decided(pg, campaign, creator, "click", DAY1 + 11 * h, "rejected", reason="bot")
    decided(pg, campaign, creator, "conversion", DAY1 + 12 * h, "rejected", reason="wrong_type")
    decided(pg, campaign, creator, "click", DAY2 + 1 * h, "paid", payout="0.50", fee="0.05")
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
        "clicks": {"all": 5, "billable": 2, "bot": 1, "duplicate": 1},
        "conversions": {"all": 2, "billable": 0},
        "sales": {"all": 0, "billable": 0, "refunded": 0, "value": "0.00"},
        "spend": "1.00",
        "rejections": {"bot": 1, "duplicate_click": 1, "wrong_type": 1},
    }
    assert day2 == {
        "start": DAY2.isoformat(),
        "clicks": {"all": 3, "billable": 1, "bot": 0, "duplicate": 1},
        "conversions": {"all": 0, "billable": 0},
        "sales": {"all": 2, "billable": 2, "refunded": 1, "value": "60.00"},
        "spend": "5.50",
        "rejections": {"duplicate_click": 1},
    }
    assert body["totals"] == {
        "clicks": {"all": 8, "billable": 3, "bot": 1, "duplicate": 2},
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
    assert ten["clicks"] == {"all": 3, "billable": 2, "bot": 0, "duplicate": 1}
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
    body = await (await api.get(f"/v1/campaigns/{dataset['campaign']}/stats", headers=dataset["business"])).json()

    assert len(body["buckets"]) in (7, 8)  # the first bucket starts at the floor of now - 7 days
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
