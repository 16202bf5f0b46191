"""Every stats report read from the hourly sums (``event_hours`` in both stores) equals the same report
computed here from the raw rows: ClickHouse ``events FINAL`` and Postgres ``events``.

One seeded world: two campaigns, three creators, several links, countries, devices, browsers, OSes and
referrers, bots, repeated clicks, paid and rejected decisions, a sale refunded (an UPDATE of its decision),
a batch inserted twice with its token, events inserted again in other blocks (a spooled batch appended
twice, a repeat inside one block), and events in the partial hours at both ends of the range.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from admin_api.app import create_app
from admin_api.auth import issue_token
from admin_api.reports import StatsQuery
from ingest.writer import BatchWriter
from oros.events import Event
from settler.report_sums import fold_report_sums
from settler.run import settle_once

from factories import now_ms

HOUR = timedelta(hours=1)
NIL = "00000000-0000-0000-0000-000000000000"
PLACES = [("US", "mobile", "Mobile Safari", "iOS", "news.example"), ("DE", "desktop", "Chrome", "Windows", ""),
          ("US", "desktop", "Firefox", "Mac OS X", "blog.example"), ("", "tablet", "Chrome", "Android", "news.example")]
CH_DIMS = {"country": "country", "device": "device_type", "browser": "browser", "os": "os",
           "referrer": "referrer_host", "link": "link", "creator": "creator", "campaign": "campaign"}


def enriched(event: Event, place: tuple[str, ...]) -> bytes:
    fields = dict(zip(("country", "device_type", "browser", "os", "referrer_host"), place, strict=True))
    return orjson.dumps({**orjson.loads(event.encode()), **fields})


def insert(settings, rows: list[bytes], *, keys: list[str] | None = None) -> None:
    writer = BatchWriter(settings, stream="events")
    for key, raw in zip(keys or [str(uuid.uuid4()) for _ in rows], rows, strict=True):
        writer.submit(key.encode(), raw)
    writer.close()


@pytest.fixture
def seeded(world, settings):
    base = datetime.fromtimestamp(now_ms() // 3_600_000 * 3600 - 50 * 3600, tz=UTC)
    business = world.user("business")
    clicks_campaign = world.campaign(business, payout="0.50", fund="100.00")
    sales_campaign = world.campaign(business, objective="sale", payout="4.00", fund="100.00")
    first, second = world.creator(clicks_campaign), world.creator(clicks_campaign)
    first_b = (first[0], world.link(clicks_campaign, first[0]))
    first_sales = world.join(sales_campaign, first[0])
    third = world.creator(sales_campaign)
    links = [first, second, first_b]

    # Minutes after base: the first and last few fall in the partial hours at the range's ends.
    minutes = [3, 20, 41, 59, 75, 130, 131, 290, 600, 601, 602, 1000, 1441, 1500, 2200, 2800, 2840, 2850, 2895, 2930]
    rows, events = [], []
    for i, (minute, place) in enumerate(zip(minutes, itertools.cycle(PLACES))):
        ts = int((base + timedelta(minutes=minute, seconds=i)).timestamp() * 1000)
        ip = "10.1.0.9" if i in (0, 3, 12, 15) else None  # a visitor who comes back: duplicate clicks
        click = world.click(clicks_campaign, links[i % 3], ts_ms=ts, ip=ip, is_bot=i % 5 == 4,
                            bot_reason="crawler" if i % 5 == 4 else None)
        events.append(click)
        rows.append(enriched(click, place))
        if i % 4 == 1:
            conversion = world.conversion(click, ts_ms=ts + 5000)
            events.append(conversion)
            rows.append(enriched(conversion, place))
    for i, (minute, owner) in enumerate([(100, first_sales), (700, third), (1600, first_sales), (2860, third)]):
        ts = int((base + timedelta(minutes=minute)).timestamp() * 1000)
        click = world.click(sales_campaign, owner, ts_ms=ts)
        sale = world.conversion(click, kind="sale", ts_ms=ts + 60_000, order_id=f"O-{i}", value=f"{20 + i}.5{i}")
        events += [click, sale]
        rows += [enriched(click, PLACES[i]), enriched(sale, PLACES[i])]
    outside = world.click(clicks_campaign, first, ts_ms=int((base - HOUR).timestamp() * 1000))
    rows.append(enriched(outside, PLACES[0]))

    keys = [f"{1000 + n}-0" for n in range(len(rows))]
    insert(settings, rows[:20], keys=keys[:20])
    insert(settings, rows[:20], keys=keys[:20])  # the same batch again, after a crash: same token
    insert(settings, rows[20:], keys=keys[20:])
    insert(settings, rows[5:12])  # a spooled batch appended twice: new entries, new token
    insert(settings, [rows[30], rows[30], rows[31]])  # a repeat inside one block
    settle_once(settings)
    refund = Event(event_id=str(uuid.uuid4()), event_type="refund", ts_ms=now_ms(), campaign_id=NIL, order_id="O-1",
                   business_id=business, value=None, source="api")
    insert(settings, [refund.encode()])
    report = settle_once(settings)
    assert report["refunds"]["reversed"] == 1
    world.assert_books()
    return {"base": base, "business": business, "campaigns": (clicks_campaign, sales_campaign),
            "creators": (first[0], second[0], third[0]), "links": [first[1], second[1], first_b[1]]}


def raw_rows(pg, ch, scope: str, scope_id: str) -> tuple[list[dict], list[dict]]:
    """What happened (ClickHouse, each event once) and what was decided (Postgres), of one scope."""
    happened = ch.query(
        "SELECT event_type, ts, is_bot, value, country, device_type, browser, os, referrer_host,"
        " ifNull(toString(link_id), '') AS link, ifNull(toString(creator_id), '') AS creator,"
        f" toString(campaign_id) AS campaign FROM events FINAL WHERE {scope}_id = {{id:UUID}}"
        " AND event_type != 'refund'", parameters={"id": scope_id}).named_results()
    decided = pg.execute(
        "SELECT event_type, occurred_at AS ts, status, rejection_reason, first_visit, payout_amount, reversed_payout,"
        " country, device_type, browser, os, referrer_host, coalesce(tracking_link_id::text, '') AS link,"
        " coalesce(creator_id::text, '') AS creator, campaign_id::text AS campaign"
        f" FROM events WHERE {scope}_id = %s AND event_type <> 'refund'", (scope_id,)).fetchall()
    return list(happened), decided


def floor(ts: datetime, granularity: str) -> datetime:
    ts = ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return ts.replace(hour=0) if granularity == "day" else ts


def expected(rows: tuple[list[dict], list[dict]], start: datetime, end: datetime, granularity: str,
             group_by: str | None, filters: dict[str, str]) -> dict:
    """The report, computed the plain way from the raw rows."""
    def zero():
        return Counter(), defaultdict(Decimal), Counter()

    buckets, groups = {}, defaultdict(zero)
    at = floor(start, granularity)
    while at < end:
        buckets[at] = zero()
        at += HOUR if granularity == "hour" else 24 * HOUR
    happened, decided = rows

    def selected(row):
        ts = row["ts"].replace(tzinfo=UTC) if row["ts"].tzinfo is None else row["ts"]
        return start <= ts < end and all(row[CH_DIMS[name]] == value for name, value in filters.items())

    for row in filter(selected, happened):
        for counts, money, _ in (buckets[floor(row["ts"].replace(tzinfo=UTC), granularity)],
                                 *([groups[row[CH_DIMS[group_by]]]] if group_by else [])):
            kind = row["event_type"]
            counts[kind] += 1
            counts["bot"] += kind == "click" and row["is_bot"]
            money["value"] += row["value"] or 0 if kind == "sale" else 0
    for row in filter(selected, decided):
        for counts, money, reasons in (buckets[floor(row["ts"], granularity)],
                                       *([groups[row[CH_DIMS[group_by]]]] if group_by else [])):
            counts["unique"] += row["first_visit"]
            if row["status"] == "rejected":
                reasons[row["rejection_reason"]] += 1
                counts["duplicate"] += row["rejection_reason"] == "duplicate_click"
                continue
            counts[f"billable_{row['event_type']}"] += 1
            counts["refunded"] += row["status"] == "reversed"
            if row["status"] == "paid":
                money["spend"] += row["payout_amount"] - row["reversed_payout"]

    def render(counts, money, reasons) -> dict:
        return {"clicks": {"all": counts["click"], "billable": counts["billable_click"], "bot": counts["bot"],
                           "duplicate": counts["duplicate"], "unique": counts["unique"]},
                "conversions": {"all": counts["conversion"], "billable": counts["billable_conversion"]},
                "sales": {"all": counts["sale"], "billable": counts["billable_sale"], "refunded": counts["refunded"],
                          "value": f"{money['value']:.2f}"},
                "spend": f"{money['spend']:.2f}", "rejections": dict(sorted(reasons.items()))}

    total = zero()
    for counts, money, reasons in buckets.values():
        total[0].update(counts), total[2].update(reasons)
        for name, amount in money.items():
            total[1][name] += amount
    report = {"totals": render(*total),
              "buckets": [{"start": b.isoformat(), **render(*s)} for b, s in buckets.items()]}
    if group_by:
        ranked = sorted(groups.items(), key=lambda kv: (-kv[1][0]["click"], kv[0]))
        report["groups"] = [{"key": key, **render(*s)} for key, s in ranked]
    return report


def headers(settings, user: str) -> dict:
    return {"Authorization": f"Bearer {issue_token(settings, user)}"}


async def test_every_report_equals_the_raw_rows(aiohttp_client, settings, seeded, pg, ch):
    api = await aiohttp_client(create_app(settings))
    base = seeded["base"]
    clicks_campaign, sales_campaign = seeded["campaigns"]
    first, second, third = seeded["creators"]
    link = seeded["links"][0]
    start, end = base + timedelta(minutes=17), base + timedelta(hours=48, minutes=53)
    cases = [("campaign", c, seeded["business"], group_by, filters)
             for c in (clicks_campaign, sales_campaign)
             for group_by, filters in [
                 (None, {}), *((g, {}) for g in ("country", "device", "browser", "os", "referrer", "link", "creator")),
                 (None, {"country": "US"}), ("country", {"country": ""}), (None, {"link": link}),
                 ("creator", {"creator": first}), (None, {"referrer": "news.example"}),
                 ("device", {"country": "US"}), (None, {"country": "US", "device": "desktop"})]]
    cases += [("creator", first, first, group_by, filters) for group_by, filters in [
        (None, {}), ("campaign", {}), ("link", {}), ("country", {}), (None, {"campaign": sales_campaign}),
        ("link", {"campaign": clicks_campaign})]]
    cases += [("creator", third, third, "campaign", {})]
    for scope, scope_id, user, group_by, filters in cases:
        rows = raw_rows(pg, ch, scope, scope_id)
        for granularity in ("hour", "day"):
            params = {"from": start.isoformat(), "to": end.isoformat(), "granularity": granularity, **filters}
            if group_by:
                params["group_by"] = group_by
            path = f"/v1/campaigns/{scope_id}/stats" if scope == "campaign" else "/v1/me/stats"
            resp = await api.get(path, params=params, headers=headers(settings, user))
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            want = expected(rows, start, end, granularity, group_by, filters)
            case = (scope, group_by, filters, granularity)
            assert body["totals"] == want["totals"], case
            assert body["buckets"] == want["buckets"], case
            assert body.get("groups") == want.get("groups"), case
    # The seeding reached every kind of number these reports hold.
    totals = expected(raw_rows(pg, ch, "campaign", clicks_campaign), start, end, "day", None, {})["totals"]
    assert totals["clicks"]["bot"] and totals["clicks"]["duplicate"] and totals["clicks"]["unique"]
    assert totals["rejections"].get("wrong_type")
    sales = expected(raw_rows(pg, ch, "campaign", sales_campaign), start, end, "day", None, {})["totals"]
    assert sales["sales"]["refunded"] == 1 and sales["sales"]["billable"] >= 2


def test_a_replay_counts_once_in_the_sums(seeded, ch):
    clicks_campaign, sales_campaign = seeded["campaigns"]
    for campaign in (clicks_campaign, sales_campaign):
        summed = ch.query("SELECT sum(clicks), sum(conversions), sum(sales), sum(sales_value) FROM event_hours"
                          " WHERE scope = 'campaign' AND scope_id = {c:UUID} AND dim = ''",
                          parameters={"c": campaign}).result_rows[0]
        held = ch.query("SELECT countIf(event_type = 'click'), countIf(event_type = 'conversion'),"
                        " countIf(event_type = 'sale'), sumIf(ifNull(value, 0), event_type = 'sale')"
                        " FROM events FINAL WHERE campaign_id = {c:UUID}", parameters={"c": campaign}).result_rows[0]
        assert tuple(summed) == tuple(held)
        assert summed[0] > 0


def test_the_sums_of_decisions_fold_and_backfill_to_the_same(seeded, pg, settings):
    def sums():
        return pg.execute("SELECT scope, scope_id, dim, hour, key, event_type, status, reason, sum(n) AS n,"
                          " sum(visitors) AS visitors, sum(spend) AS spend FROM event_hours"
                          " GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 HAVING sum(n) <> 0 OR sum(visitors) <> 0"
                          " OR sum(spend) <> 0 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8").fetchall()

    before, rows_before = sums(), pg.execute("SELECT count(*) AS n FROM event_hours").fetchone()["n"]
    removed = fold_report_sums(settings)
    assert removed > 0 and removed == rows_before - pg.execute("SELECT count(*) AS n FROM event_hours").fetchone()["n"]
    assert sums() == before
    pg.execute("DELETE FROM event_hours")
    pg.execute("DO $$ BEGIN EXECUTE oros_event_hours_sql('SELECT 1 AS sign, * FROM events'); END $$")
    assert sums() == before
    # The refund's UPDATE moved the sale from paid to reversed: no paid row of it is left over.
    reversed_sale = [r for r in before if r["status"] == "reversed" and r["dim"] == ""]
    assert [(r["event_type"], r["n"]) for r in reversed_sale] == [("sale", 1), ("sale", 1)]


@pytest.mark.parametrize(("start", "end", "group_by", "filters", "hours", "spans"), [
    ("10:00", "13:00", None, {}, ("10:00", "13:00"), []),
    ("10:17", "13:40", "country", {}, ("11:00", "13:00"), [("10:17", "11:00"), ("13:00", "13:40")]),
    ("10:17", "11:40", None, {"country": "US"}, None, [("10:17", "11:40")]),  # no whole hour
    ("10:00", "13:00", "country", {"device": "mobile"}, None, [("10:00", "13:00")]),  # two dimensions
    ("10:00", "13:00", "country", {"country": "US"}, ("10:00", "13:00"), []),
], ids=["whole-hours", "partial-ends", "under-two-hours", "two-dimensions", "filter-and-group-alike"])
def test_a_report_reads_the_sums_for_whole_hours_and_raw_rows_for_the_rest(start, end, group_by, filters, hours,
                                                                          spans):
    def at(hhmm: str) -> datetime:
        return datetime(2026, 3, 1, *map(int, hhmm.split(":")), tzinfo=UTC)

    query = StatsQuery("campaign", NIL, at(start), at(end), "hour", group_by, filters)
    assert query.split() == (tuple(map(at, hours)) if hours else None, [(at(a), at(b)) for a, b in spans])
