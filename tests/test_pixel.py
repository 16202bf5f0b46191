"""Forged conversions through the pixel (issue 11), attacked end to end.

Each attack goes through the in-process tracker (redirect, ``/px.gif``,
``/v1/conversions``), ingest into ClickHouse and a settlement run, then
reconcile proves the books. The campaign data comes from ``test_settle``'s
``World``; the admin API is used where the business would (stats, opting in).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest

from admin_api.app import create_app as create_admin_app
from admin_api.auth import issue_token
from ingest.consumer import Ingester
from oros import pixel
from oros.events import Event, uuid7_str
from oros.fees import FeeSchedule
from settler.holds import release_due
from settler.load import load_campaigns
from settler.plan import Decided
from settler.post import post_campaign
from settler.reconcile import reconcile
from settler.records import LedgerError
from settler.run import RunContext, settle_once
from settler.verify import Candidate
from tracker.app import create_app as create_tracker_app

from factories import make_api_key

D = Decimal
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/126.0 Safari/537.36"}
MIGRATION_0030 = Path(__file__).parent.parent / "sql" / "postgres" / "0030_one_payment_per_click.sql"


@dataclass
class Shop:
    """A funded, active campaign with one accepted creator's link."""

    campaign: str
    business: str
    creator: str
    code: str


def shop(world, *, objective: str = "conversion", payout: str = "5.00") -> Shop:
    campaign = world.campaign(objective=objective, payout=payout, fund="100.00")
    creator, link = world.creator(campaign)
    code = world.pg.execute("SELECT code FROM tracking_links WHERE id = %s", (link,)).fetchone()["code"]
    return Shop(campaign, world.business_of(campaign), creator, code)


def pixel_secret(pg, business: str, grace_s: int = 3600) -> str:
    """A new pixel secret for ``business``, made by the function POST /v1/pixel-secret calls."""
    secret = pixel.new_secret()
    with pg.transaction():
        pg.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (business,))
        pg.execute("SELECT oros_rotate_pixel_secret(%s, %s)", (secret, grace_s))
    return secret


async def click(tracker, code: str) -> str:
    response = await tracker.get(f"/{code}", headers=BROWSER, allow_redirects=False)
    assert response.status == 302
    return dict(parse_qsl(urlsplit(response.headers["Location"]).query))["oros_cid"]


async def fire(tracker, cid: str, *, kind: str | None = None, order_id: str | None = None,
               value: str | None = None, secret: str | None = None, sig: str | None = None) -> int:
    """The pixel as a business page would embed it; signed when given the secret."""
    query = {"cid": cid, "type": kind, "order_id": order_id, "value": value,
             "sig": sig or (secret and pixel.sign(secret, cid, kind or "conversion", order_id, value))}
    response = await tracker.get("/px.gif", params={k: v for k, v in query.items() if v is not None}, headers=BROWSER)
    return response.status


async def post(tracker, key: str, cid: str, kind: str = "conversion", order_id: str | None = None,
               value: str | None = None) -> tuple[int, dict]:
    body = {"click_id": cid, "type": kind, "order_id": order_id, "value": value}
    response = await tracker.post("/v1/conversions", json={k: v for k, v in body.items() if v is not None},
                                  headers={"Authorization": f"Bearer {key}"})
    return response.status, await response.json()


async def settle(settings, now: datetime | None = None) -> dict:
    ingester = Ingester(settings, consumer="pixel-test")
    try:
        while await ingester.drain_once():
            pass
    finally:
        await ingester.close()
    return await asyncio.to_thread(settle_once, settings, now=now)


def paid(pg, campaign: str) -> Decimal:
    return pg.execute("SELECT coalesce(sum(payout_amount), 0) AS s FROM events WHERE campaign_id = %s"
                      " AND status = 'paid'", (campaign,)).fetchone()["s"]


def outcomes(pg, campaign: str) -> dict[str, int]:
    """How the campaign's conversions and sales were decided: 'paid' or the rejection reason."""
    rows = pg.execute("SELECT coalesce(rejection_reason, status) AS outcome, count(*) AS n FROM events"
                      " WHERE campaign_id = %s AND event_type <> 'click' GROUP BY 1", (campaign,)).fetchall()
    return {r["outcome"]: r["n"] for r in rows}


def decision(pg, event_id: str) -> str:
    row = pg.execute("SELECT coalesce(rejection_reason, status) AS outcome FROM events WHERE id = %s",
                     (event_id,)).fetchone()
    return row["outcome"]


# -- at most one paid conversion per click --------------------------------------------------------


async def test_sixteen_pixels_on_one_click_pay_one_conversion_at_most(world, settings, pg, aiohttp_client):
    default, billable, signed, api = (shop(world) for _ in range(4))
    admin = await aiohttp_client(create_admin_app(settings))
    opted = await admin.patch(f"/v1/campaigns/{billable.campaign}", json={"pixel_billable": True},
                              headers={"Authorization": f"Bearer {issue_token(settings, billable.business)}"})
    assert opted.status == 200 and (await opted.json())["pixel_billable"] is True
    secret = pixel_secret(pg, signed.business)
    key = make_api_key(pg, api.business)
    tracker = await aiohttp_client(create_tracker_app(settings))
    cids = {s.campaign: await click(tracker, s.code) for s in (default, billable, signed, api)}

    # The creator's attack, with and without order ids, and the business repeating itself.
    for n in range(16):
        order_id = f"A-{n}" if n % 2 else None
        assert await fire(tracker, cids[default.campaign], order_id=order_id) == 200
        assert await fire(tracker, cids[billable.campaign], order_id=order_id) == 200
        assert await fire(tracker, cids[signed.campaign], order_id=order_id, secret=secret) == 200
        assert (await post(tracker, key, cids[api.campaign], order_id=order_id))[0] == 202
    await settle(settings)

    assert paid(pg, default.campaign) == 0  # unsigned, and the campaign never opted in
    assert outcomes(pg, default.campaign) == {"unsigned_pixel": 16}
    for one in (billable, signed, api):
        assert paid(pg, one.campaign) == D("5.00"), one
        assert outcomes(pg, one.campaign) == {"paid": 1, "duplicate_conversion": 15}
    world.assert_books()


# -- only what the business signed is billable ---------------------------------------------------


async def test_only_a_pixel_the_business_signed_is_paid_and_the_rest_show_in_stats(world, settings, pg,
                                                                                      aiohttp_client):
    s = shop(world)
    secret = pixel_secret(pg, s.business)
    stranger = pixel_secret(pg, world.user("business"))  # another business's valid secret
    tracker = await aiohttp_client(create_tracker_app(settings))
    signed, unsigned, forged, tampered = [await click(tracker, s.code) for _ in range(4)]

    assert await fire(tracker, signed, order_id="O-1", value="12.50", secret=secret) == 200
    assert await fire(tracker, unsigned, order_id="O-2") == 200
    assert await fire(tracker, forged, order_id="O-3", secret=stranger) == 200
    # A genuine signature for another order (or click) proves nothing about this one.
    assert await fire(tracker, tampered, order_id="O-5", sig=pixel.sign(secret, tampered, "conversion", "O-4")) == 200
    assert await fire(tracker, tampered, sig=pixel.sign(secret, signed, "conversion")) == 200
    await settle(settings)

    assert paid(pg, s.campaign) == D("5.00")
    assert outcomes(pg, s.campaign) == {"paid": 1, "unsigned_pixel": 1, "bad_pixel_signature": 3}
    admin = await aiohttp_client(create_admin_app(settings))
    response = await admin.get(f"/v1/campaigns/{s.campaign}/stats",
                               headers={"Authorization": f"Bearer {issue_token(settings, s.business)}"})
    totals = (await response.json())["totals"]
    assert totals["conversions"] == {"all": 5, "billable": 1}
    assert {k: totals["rejections"][k] for k in ("unsigned_pixel", "bad_pixel_signature")} == {
        "unsigned_pixel": 1, "bad_pixel_signature": 3}
    world.assert_books()


async def test_a_rotated_secret_signs_only_during_its_grace(world, settings, pg, aiohttp_client):
    s = shop(world)
    old = pixel_secret(pg, s.business)
    new = pixel_secret(pg, s.business, grace_s=3600)
    tracker = await aiohttp_client(create_tracker_app(settings))
    in_grace, after_grace, current = [await click(tracker, s.code) for _ in range(3)]

    assert await fire(tracker, in_grace, secret=old) == 200
    # The grace ends (as it would an hour later): pixels arriving from now on need the new secret.
    # Event times are whole milliseconds and the grace is open below its end: step past the first pixel's.
    await asyncio.sleep(0.005)
    pg.execute("UPDATE pixel_secrets SET expires_at = now() WHERE secret = %s", (old,))
    assert await fire(tracker, after_grace, secret=old) == 200
    assert await fire(tracker, current, secret=new) == 200
    await settle(settings)

    assert [decision(pg, e) for e in await _pixel_ids(pg, s.campaign, (in_grace, after_grace, current))] == [
        "paid", "bad_pixel_signature", "paid"]
    world.assert_books()


async def _pixel_ids(pg, campaign: str, cids: tuple[str, ...]) -> list[str]:
    rows = pg.execute("SELECT id::text AS id, click_id::text AS cid FROM events WHERE campaign_id = %s"
                      " AND event_type = 'conversion'", (campaign,)).fetchall()
    by_click = {r["cid"]: r["id"] for r in rows}
    return [by_click[c] for c in cids]


# -- a pixel never shadows the business's authenticated post ------------------------------------------


async def test_a_pixel_never_shadows_the_authenticated_post(world, settings, pg, aiohttp_client):
    conversions, sales = shop(world), shop(world, objective="sale")
    for s in (conversions, sales):  # even where the business accepts unsigned pixels
        pg.execute("UPDATE campaigns SET pixel_billable = true WHERE id = %s", (s.campaign,))
    keys = {s.campaign: make_api_key(pg, s.business) for s in (conversions, sales)}
    tracker = await aiohttp_client(create_tracker_app(settings))
    c1 = await click(tracker, conversions.code)
    s1, s2 = await click(tracker, sales.code), await click(tracker, sales.code)

    # The pixel comes first, with the order ids the business is about to post.
    assert await fire(tracker, c1, order_id="O-1") == 200
    assert await fire(tracker, s1, kind="sale", order_id="S-1", value="20.00") == 200
    assert await fire(tracker, s1, kind="sale", order_id="S-2", value="20.00") == 200  # the order of s2's sale
    accepted = [await post(tracker, keys[conversions.campaign], c1, order_id="O-1"),
                await post(tracker, keys[sales.campaign], s1, "sale", "S-1", "20.00"),
                await post(tracker, keys[sales.campaign], s2, "sale", "S-2", "20.00")]
    assert [(status, body.get("duplicate")) for status, body in accepted] == [(202, None)] * 3
    await settle(settings)

    assert [decision(pg, body["event_id"]) for _, body in accepted] == ["paid"] * 3
    assert outcomes(pg, conversions.campaign) == {"paid": 1, "duplicate_order": 1}
    assert outcomes(pg, sales.campaign) == {"paid": 2, "duplicate_order": 2}
    world.assert_books()


async def test_an_unsigned_pixel_paid_in_an_earlier_run_never_shadows_the_authenticated_post(world, settings, pg,
                                                                                              aiohttp_client):
    s = shop(world, objective="sale", payout="3.00")
    pg.execute("UPDATE campaigns SET pixel_billable = true WHERE id = %s", (s.campaign,))
    b_creator, b_link = world.creator(s.campaign)
    b_code = pg.execute("SELECT code FROM tracking_links WHERE id = %s", (b_link,)).fetchone()["code"]
    key = make_api_key(pg, s.business)
    tracker = await aiohttp_client(create_tracker_app(settings))

    # Creator A guesses the business's next order id on its own click, and is paid in one run.
    a_cid = await click(tracker, s.code)
    assert await fire(tracker, a_cid, kind="sale", order_id="O-1001", value="20.00") == 200
    await settle(settings)
    assert outcomes(pg, s.campaign) == {"paid": 1}

    # The business reports that order, made on creator B's click: the next run pays B.
    b_cid = await click(tracker, b_code)
    status, body = await post(tracker, key, b_cid, "sale", "O-1001", "20.00")
    assert (status, body.get("duplicate")) == (202, None)
    await settle(settings)
    assert decision(pg, body["event_id"]) == "paid"
    # The pixel's sale, still held, is taken back: the business's post of the order supersedes it.
    earned = pg.execute("SELECT creator_id::text AS c, sum(payout_amount) AS s FROM events WHERE campaign_id = %s"
                        " AND status = 'paid' GROUP BY 1", (s.campaign,)).fetchall()
    assert {r["c"]: r["s"] for r in earned} == {b_creator: D("3.00")}

    # The business's refund of its order reverses the sale it reported, not the pixel's.
    assert (await post(tracker, key, b_cid, "refund", "O-1001", "20.00"))[0] == 202
    await settle(settings)
    assert decision(pg, body["event_id"]) == "reversed"
    assert outcomes(pg, s.campaign) == {"superseded_by_business": 1, "reversed": 2}  # the pixel; B's and its refund
    world.assert_books()


async def test_an_order_a_rejected_pixel_named_is_paid_from_the_api_later(world, settings, pg, aiohttp_client):
    s = shop(world)
    key = make_api_key(pg, s.business)
    tracker = await aiohttp_client(create_tracker_app(settings))
    cid = await click(tracker, s.code)
    assert await fire(tracker, cid, order_id="O-9") == 200
    await settle(settings)
    assert outcomes(pg, s.campaign) == {"unsigned_pixel": 1}

    status, body = await post(tracker, key, cid, order_id="O-9")
    assert (status, body.get("duplicate")) == (202, None)
    await settle(settings)
    assert decision(pg, body["event_id"]) == "paid" and paid(pg, s.campaign) == D("5.00")
    world.assert_books()


# -- a sale is paid once per (click, order id) --------------------------------------------------------


async def test_a_sale_is_paid_once_per_click_and_order(world, settings, pg, aiohttp_client):
    s = shop(world, objective="sale", payout="3.00")
    key = make_api_key(pg, s.business)
    secret = pixel_secret(pg, s.business)
    tracker = await aiohttp_client(create_tracker_app(settings))
    cid = await click(tracker, s.code)

    assert (await post(tracker, key, cid, "sale", "O-1", "10.00"))[0] == 202
    assert (await post(tracker, key, cid, "sale", "O-1", "10.00"))[1]["duplicate"] is True  # the edge
    assert await fire(tracker, cid, kind="sale", order_id="O-1", value="10.00", secret=secret) == 200
    assert [(await post(tracker, key, cid, "sale"))[0] for _ in range(2)] == [202, 202]  # no order id
    assert (await post(tracker, key, cid, "sale", "O-2", "5.00"))[0] == 202  # a second order: paid too
    await settle(settings)
    assert outcomes(pg, s.campaign) == {"paid": 3, "duplicate_order": 1, "duplicate_conversion": 1}

    # Later runs know what the click was paid for.
    assert await fire(tracker, cid, kind="sale", order_id="O-2", value="5.00", secret=secret) == 200
    assert (await post(tracker, key, cid, "sale"))[0] == 202
    await settle(settings)
    assert outcomes(pg, s.campaign) == {"paid": 3, "duplicate_order": 2, "duplicate_conversion": 2}
    assert paid(pg, s.campaign) == D("9.00")
    world.assert_books()


async def test_an_unsigned_sale_pixel_pays_a_click_once_whatever_its_order_ids(world, settings, pg, aiohttp_client):
    s = shop(world, objective="sale")
    pg.execute("UPDATE campaigns SET pixel_billable = true WHERE id = %s", (s.campaign,))
    tracker = await aiohttp_client(create_tracker_app(settings))
    cid = await click(tracker, s.code)
    for n in range(16):  # order ids the sender makes up
        assert await fire(tracker, cid, kind="sale", order_id=f"X-{n}", value="1.00") == 200
    await settle(settings)
    assert outcomes(pg, s.campaign) == {"paid": 1, "duplicate_conversion": 15}
    world.assert_books()


async def test_an_order_is_paid_to_one_unsigned_pixel_at_most_and_still_to_the_business(world, settings, pg):
    # Pixels on other clicks naming one order, in one run and in the next: one is paid, as the sale of an order
    # is once per campaign; the business's own post of that order is paid beside it.
    s = shop(world, objective="sale", payout="3.00")
    pg.execute("UPDATE campaigns SET pixel_billable = true WHERE id = %s", (s.campaign,))
    link = pg.execute("SELECT id::text AS id FROM tracking_links WHERE code = %s", (s.code,)).fetchone()["id"]
    clicks = [world.click(s.campaign, (s.creator, link)) for _ in range(4)]
    world.put(clicks)

    def pixel_sale(click) -> Event:
        sale = world.conversion(click, kind="sale", order_id="O-1", value="20.00")
        return dataclasses.replace(sale, event_id=uuid7_str(), business_id=None, source="pixel")

    first = [pixel_sale(clicks[0]), pixel_sale(clicks[1])]
    world.put(first)
    await asyncio.to_thread(settle_once, settings)
    assert sorted(decision(pg, e.event_id) for e in first) == ["duplicate_order", "paid"]

    later = pixel_sale(clicks[2])
    business = dataclasses.replace(world.conversion(clicks[3], kind="sale", order_id="O-1", value="20.00"),
                                   business_id=s.business, source="api")
    world.put([later, business])
    await asyncio.to_thread(settle_once, settings)
    assert (decision(pg, later.event_id), decision(pg, business.event_id)) == ("duplicate_order", "paid")
    assert paid(pg, s.campaign) == D("3.00")  # the business's; the pixel paid before is superseded
    world.assert_books()


def remaining(pg, campaign: str) -> Decimal:
    row = pg.execute("SELECT remaining_budget FROM campaigns WHERE id = %s", (campaign,)).fetchone()
    return row["remaining_budget"]


async def test_the_business_post_supersedes_an_unsigned_pixel_paid_earlier_and_takes_its_refund(world, settings,
                                                                                              pg, aiohttp_client):
    # A pixel on the very click the business's sale was made on, with the order id and a value of its choosing,
    # is paid in one run; the business refunds part of the order (applied to the pixel's sale, the only one);
    # then the business's own report of the sale arrives.
    s = shop(world, objective="sale", payout="3.00")
    pg.execute("UPDATE campaigns SET pixel_billable = true WHERE id = %s", (s.campaign,))
    key = make_api_key(pg, s.business)
    tracker = await aiohttp_client(create_tracker_app(settings))
    cid = await click(tracker, s.code)
    assert await fire(tracker, cid, kind="sale", order_id="O-7", value="1000.00") == 200
    await settle(settings)
    assert outcomes(pg, s.campaign) == {"paid": 1}
    assert (await post(tracker, key, cid, "refund", "O-7", "10.00"))[0] == 202
    await settle(settings)

    status, body = await post(tracker, key, cid, "sale", "O-7", "20.00")
    assert (status, body.get("duplicate")) == (202, None)
    await settle(settings)

    # The post is paid (it was duplicate_conversion: the pixel held the click), the pixel's sale taken back
    # whole while held, and the refund decided again against the post: half of 20.00, so half its 3.00.
    assert decision(pg, body["event_id"]) == "paid"
    pixel = pg.execute("SELECT status, rejection_reason, duplicate_of::text AS d, reversed_payout FROM events"
                       " WHERE campaign_id = %s AND unsigned_pixel", (s.campaign,)).fetchone()
    assert (pixel["status"], pixel["rejection_reason"], pixel["d"], pixel["reversed_payout"]) == (
        "reversed", "superseded_by_business", body["event_id"], D("3.00"))
    sale = pg.execute("SELECT reversed_payout, refunded_value FROM events WHERE id = %s",
                      (body["event_id"],)).fetchone()
    assert (sale["reversed_payout"], sale["refunded_value"]) == (D("1.50"), D("10.00"))
    refund = pg.execute("SELECT status, metadata->>'refunds' AS sale FROM events WHERE campaign_id = %s"
                        " AND event_type = 'refund'", (s.campaign,)).fetchone()
    assert (refund["status"], refund["sale"]) == ("reversed", body["event_id"])
    assert remaining(pg, s.campaign) == D("98.50")
    world.assert_books()


async def test_a_post_on_another_click_supersedes_the_pixel_while_held_and_not_after(world, settings, pg,
                                                                                   aiohttp_client):
    s = shop(world, objective="sale", payout="3.00")
    pg.execute("UPDATE campaigns SET pixel_billable = true WHERE id = %s", (s.campaign,))
    key = make_api_key(pg, s.business)
    tracker = await aiohttp_client(create_tracker_app(settings))
    # Pixels name O-2, then O-1 on other clicks, settled a day apart: O-2's hold ends first, and is released.
    assert await fire(tracker, await click(tracker, s.code), kind="sale", order_id="O-2", value="20.00") == 200
    await settle(settings)
    assert await fire(tracker, await click(tracker, s.code), kind="sale", order_id="O-1", value="20.00") == 200
    day = timedelta(days=1)
    await settle(settings, now=datetime.now(UTC) + day)
    assert outcomes(pg, s.campaign) == {"paid": 2}
    release_due(settings, datetime.now(UTC) + timedelta(days=settings.hold_days) + day / 2)

    posts = [await post(tracker, key, await click(tracker, s.code), "sale", order, "20.00")
             for order in ("O-1", "O-2")]
    await settle(settings)
    assert [decision(pg, body["event_id"]) for _, body in posts] == ["paid", "paid"]
    pixels = pg.execute("SELECT order_id, status, rejection_reason, duplicate_of FROM events"
                        " WHERE campaign_id = %s AND unsigned_pixel ORDER BY order_id", (s.campaign,)).fetchall()
    assert [(p["order_id"], p["status"], p["rejection_reason"], p["duplicate_of"]) for p in pixels] == [
        ("O-1", "reversed", "superseded_by_business", None), ("O-2", "paid", "superseded_by_business", None)]
    assert remaining(pg, s.campaign) == D("91.00")  # two posts and the released pixel
    world.assert_books()


async def test_the_business_post_of_a_conversion_is_paid_on_the_click_an_unsigned_pixel_was_paid_for(
        world, settings, pg, aiohttp_client):
    # Conversions have no reversal: the pixel's pay stands, marked superseded and a duplicate of the post, which
    # the one-conversion-per-click rule no longer refuses.
    s = shop(world)
    pg.execute("UPDATE campaigns SET pixel_billable = true WHERE id = %s", (s.campaign,))
    key = make_api_key(pg, s.business)
    tracker = await aiohttp_client(create_tracker_app(settings))
    cid = await click(tracker, s.code)
    assert await fire(tracker, cid, order_id="O-3") == 200
    await settle(settings)
    status, body = await post(tracker, key, cid, order_id="O-3")
    assert (status, body.get("duplicate")) == (202, None)
    await settle(settings)
    assert decision(pg, body["event_id"]) == "paid"
    pixel = pg.execute("SELECT status, rejection_reason, duplicate_of::text AS d FROM events WHERE campaign_id = %s"
                       " AND unsigned_pixel", (s.campaign,)).fetchone()
    assert (pixel["status"], pixel["rejection_reason"], pixel["d"]) == ("paid", "superseded_by_business",
                                                                        body["event_id"])
    assert [c.name for c in reconcile(settings) if not c.ok] == []
    world.assert_books()


# -- the database is the last line ----------------------------------------------------------------


def _paid_row(pg, campaign: str, creator: str, cid: str, kind: str, order_id: str | None,
              unsigned_pixel: bool = False) -> None:
    pg.execute(
        "INSERT INTO events (id, campaign_id, creator_id, event_type, click_id, order_id, occurred_at, status,"
        " payout_amount, platform_fee, paid, unsigned_pixel)"
        " VALUES (%s, %s, %s, %s, %s, %s, now(), 'paid', 5.00, 0.50, true, %s)",
        (uuid7_str(), campaign, creator, kind, cid, order_id, unsigned_pixel))


def test_the_database_refuses_a_second_payment_for_a_click(world, pg):
    conversions, sales = shop(world), shop(world, objective="sale")
    cid, sale_cid = uuid7_str(), uuid7_str()
    _paid_row(pg, conversions.campaign, conversions.creator, cid, "conversion", "A-1")
    _paid_row(pg, sales.campaign, sales.creator, sale_cid, "sale", None)
    _paid_row(pg, sales.campaign, sales.creator, sale_cid, "sale", "B-1")  # another order of that click
    with pytest.raises(psycopg.errors.UniqueViolation, match="idx_events_paid_conversion_click"):
        _paid_row(pg, conversions.campaign, conversions.creator, cid, "conversion", "A-2")
    with pytest.raises(psycopg.errors.UniqueViolation, match="idx_events_paid_sale_click_order"):
        _paid_row(pg, sales.campaign, sales.creator, sale_cid, "sale", None)


def test_the_database_lets_an_unsigned_pixel_claim_no_order_and_pays_its_click_once(world, pg):
    s = shop(world, objective="sale")
    pixel_cid, cid = uuid7_str(), uuid7_str()
    _paid_row(pg, s.campaign, s.creator, pixel_cid, "sale", "O-1", unsigned_pixel=True)
    _paid_row(pg, s.campaign, s.creator, cid, "sale", "O-1")  # the business's own report of that order
    with pytest.raises(psycopg.errors.UniqueViolation, match="idx_events_paid_order"):
        _paid_row(pg, s.campaign, s.creator, uuid7_str(), "sale", "O-1")
    with pytest.raises(psycopg.errors.UniqueViolation, match="idx_events_paid_unsigned_pixel_click"):
        _paid_row(pg, s.campaign, s.creator, pixel_cid, "sale", "O-2", unsigned_pixel=True)
    with pytest.raises(psycopg.errors.UniqueViolation, match="idx_events_paid_unsigned_pixel_order"):
        _paid_row(pg, s.campaign, s.creator, uuid7_str(), "sale", "O-1", unsigned_pixel=True)  # another click


def test_a_second_producer_posting_the_same_click_pays_nothing(world, settings, pg):
    s = shop(world)
    click_event = world.click(s.campaign, (s.creator, None))
    conversions = [world.conversion(click_event, order_id=f"P-{n}") for n in range(2)]
    world.put([click_event, *conversions])

    def post_alone(event) -> None:
        # What a producer that skipped verification (or raced past the lock) would write.
        candidate = Candidate(event_id=event.event_id, event_type="conversion", ts_ms=event.ts_ms,
                              campaign_id=s.campaign, creator_id=s.creator, click_id=event.click_id,
                              order_id=event.order_id)
        ctx = RunContext(settings, run_id=_run(pg), now=click_event.occurred_at)
        post_campaign(ctx, pg, Decided(load_campaigns(pg, [s.campaign])[s.campaign], [candidate]),
                      FeeSchedule(settings.platform_fee_pct))

    post_alone(conversions[0])
    with pytest.raises(LedgerError, match="already decided"):
        post_alone(conversions[1])
    assert world.campaign_row(s.campaign)["remaining_budget"] == D("95.00")  # the second rolled back whole
    world.assert_books()


def _run(pg) -> str:
    run_id = str(uuid.uuid4())
    pg.execute("INSERT INTO settlement_runs (id, kind) VALUES (%s, 'settle')", (run_id,))
    return run_id


def test_0030_keeps_clicks_paid_twice_before_it_and_flags_them(world, pg):
    s = shop(world)
    pg.execute("DROP INDEX idx_events_paid_conversion_click, idx_events_paid_sale_click_order")
    pg.execute("ALTER TABLE events DROP COLUMN duplicate_of")
    cid = uuid7_str()
    for order_id in ("A-1", "A-2", "A-3"):  # the attack, paid before the fix
        _paid_row(pg, s.campaign, s.creator, cid, "conversion", order_id)

    pg.execute(MIGRATION_0030.read_text())

    rows = pg.execute("SELECT id::text AS id, duplicate_of::text AS first FROM events WHERE click_id = %s"
                      " ORDER BY occurred_at, id", (cid,)).fetchall()
    assert [r["first"] for r in rows] == [None, rows[0]["id"], rows[0]["id"]]
    with pytest.raises(psycopg.errors.UniqueViolation):
        _paid_row(pg, s.campaign, s.creator, cid, "conversion", "A-4")


# -- bad pixels never make a 500 ---------------------------------------------------------------


async def test_malformed_or_non_utf8_signatures_are_400_and_record_nothing(world, settings, pg, redis,
                                                                           aiohttp_client):
    s = shop(world)
    tracker = await aiohttp_client(create_tracker_app(settings))
    cid = await click(tracker, s.code)
    good = pixel.sign("k" * 40, cid, "conversion")
    cases = {
        f"cid={cid}&sig=abc": "sig",
        f"cid={cid}&sig={good}00": "sig",
        f"cid={cid}&sig={'g' * 64}": "sig",
        f"cid={cid}&sig=%ff%fe" + "a" * 62: "sig",
        f"cid={cid}&sig=" + "%C3%A9" * 32: "sig",
        f"cid={cid.upper()}&sig={good}": "cid",  # signed as written, but not the id the tracker gave
        f"cid={cid}&value=5&sig={good}": "value",  # signed values have two decimals
        f"cid={cid}&order_id=%ff&sig={good}": "order_id",
        f"cid=%ff&sig={good}": "cid",
    }
    before = await redis.xlen(settings.keys.stream)
    for query, field in cases.items():
        response = await tracker.get(f"/px.gif?{query}", headers=BROWSER)
        assert response.status == 400, query
        assert (await response.json())["error"]["field"] == field, query
    assert await redis.xlen(settings.keys.stream) == before
    # Upper-case hex is the same signature; a well-formed wrong one is recorded, to be rejected.
    assert await fire(tracker, cid, sig=good.upper()) == 200
    await settle(settings)
    assert outcomes(pg, s.campaign) == {"bad_pixel_signature": 1}
    world.assert_books()
