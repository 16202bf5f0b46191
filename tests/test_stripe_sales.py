"""Stripe checkout sales and refunds become ``sale``/``refund`` events in the Redis stream."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from decimal import Decimal as D

import orjson
import pytest

from admin_api.app import create_app
from ingest.writer import insert_events
from oros.events import STREAM_FIELD, Event, uuid7_str
from oros.reasons import UNKNOWN_CAMPAIGN
from settler.run import settle_once

from factories import World
from stripe_events import SECRET, checkout, post


@pytest.fixture
def hook_settings(settings):
    return replace(settings, stripe_webhook_secret=SECRET)


@pytest.fixture
async def api(aiohttp_client, hook_settings):
    return await aiohttp_client(create_app(hook_settings))


@pytest.fixture
async def click(redis, hook_settings):
    """A recorded click in the tracker's click index."""
    cid = uuid7_str()
    index = {"link_id": str(uuid.uuid4()), "campaign_id": str(uuid.uuid4()), "creator_id": str(uuid.uuid4()),
             "supporter_id": None, "business_id": str(uuid.uuid4())}
    await redis.hset(hook_settings.keys.clicks_of(cid), cid, orjson.dumps(index))
    return cid, index


def refunded(event_id: str, charge: dict) -> dict:
    obj = {"id": "ch_1", "object": "charge", "payment_intent": "pi_sale_1", "amount": 4999,
           "amount_refunded": 4999, "refunded": True, "currency": "eur", "metadata": {}, **charge}
    return {"id": event_id, "type": "charge.refunded", "created": 1_764_000_600, "data": {"object": obj}}


async def stream(redis, settings) -> list[Event]:
    return [Event.decode(fields[STREAM_FIELD]) for _, fields in await redis.xrange(settings.keys.stream)]


async def test_checkout_session_becomes_one_sale_event(api, redis, hook_settings, click):
    cid, index = click

    first = await post(api, checkout("evt_cs_1", {"client_reference_id": cid}))
    again = await post(api, checkout("evt_cs_1", {"client_reference_id": cid}))

    assert (await first.json())["status"] == "applied"
    assert (await again.json())["status"] == "duplicate"
    [sale] = await stream(redis, hook_settings)
    assert (sale.event_type, sale.source, sale.click_id, sale.value, sale.currency, sale.order_id) == (
        "sale", "stripe", cid, "49.99", "EUR", "pi_sale_1")
    assert (sale.campaign_id, sale.link_id, sale.creator_id, sale.business_id) == (
        index["campaign_id"], index["link_id"], index["creator_id"], index["business_id"])
    assert sale.ts_ms == 1_764_000_000_000
    assert uuid.UUID(sale.event_id).version == 7


async def test_sale_event_id_is_fixed_by_the_stripe_event(api, redis, hook_settings, click, pg):
    cid, _ = click
    await post(api, checkout("evt_cs_2", {"client_reference_id": cid}))
    # As if the first delivery's commit had failed after the append: Stripe redelivers.
    pg.execute("DELETE FROM stripe_events")
    await post(api, checkout("evt_cs_2", {"client_reference_id": cid}))

    first, second = await stream(redis, hook_settings)
    assert first.event_id == second.event_id  # so ingest and the settler collapse the replay


async def test_oros_cid_in_metadata_and_unknown_click(api, redis, hook_settings):
    cid = str(uuid.uuid4())  # not in the click index

    resp = await post(api, checkout("evt_cs_3", {"client_reference_id": None, "metadata": {"oros_cid": cid},
                                                 "payment_intent": None}))

    assert resp.status == 200
    [sale] = await stream(redis, hook_settings)
    assert (sale.click_id, sale.campaign_id, sale.order_id, sale.business_id) == (
        cid, UNKNOWN_CAMPAIGN, "cs_test_1", None)


async def test_checkout_without_click_id_is_ignored(api, redis, hook_settings):
    for n, session in enumerate([{}, {"client_reference_id": "order-42"}, {"metadata": {"oros_cid": 7}}]):
        resp = await post(api, checkout(f"evt_cs_4_{n}", session))
        assert (await resp.json())["status"] == "ignored"
    assert await stream(redis, hook_settings) == []


async def test_refund_after_checkout_names_the_sale(api, redis, hook_settings, click):
    cid, index = click
    await post(api, checkout("evt_cs_5", {"client_reference_id": cid}))

    resp = await post(api, refunded("evt_rf_1", {"amount_refunded": 2000, "refunded": False}))

    assert (await resp.json())["status"] == "applied"
    _, refund = await stream(redis, hook_settings)
    assert (refund.event_type, refund.source, refund.order_id, refund.value, refund.currency) == (
        "refund", "stripe", "pi_sale_1", "20.00", "EUR")
    assert (refund.business_id, refund.campaign_id, refund.click_id, refund.creator_id) == (
        index["business_id"], index["campaign_id"], cid, index["creator_id"])
    assert refund.metadata["fully_refunded"] is False


async def test_refund_found_through_charge_metadata(api, redis, hook_settings, click):
    cid, index = click

    await post(api, refunded("evt_rf_2", {"payment_intent": "pi_other", "metadata": {"oros_cid": cid}}))

    [refund] = await stream(redis, hook_settings)
    assert (refund.order_id, refund.business_id, refund.click_id) == ("pi_other", index["business_id"], cid)


async def test_refund_of_unknown_sale_is_still_recorded(api, redis, hook_settings):
    await post(api, refunded("evt_rf_3", {"payment_intent": "pi_unknown"}))

    [refund] = await stream(redis, hook_settings)
    assert (refund.order_id, refund.campaign_id, refund.business_id) == ("pi_unknown", UNKNOWN_CAMPAIGN, None)


async def test_refund_found_through_the_settled_sale(api, redis, hook_settings, pg):
    """The Redis record has expired: the settler's recorded sale names the click and the business."""
    business, creator = (
        pg.execute("INSERT INTO users (email) VALUES (%s) RETURNING id::text AS id", (email,)).fetchone()["id"]
        for email in ("shop@example.com", "cr@example.com")
    )
    campaign = pg.execute(
        "INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget)"
        " VALUES (%s, 'Sale', 'sale', 5, 100) RETURNING id::text AS id", (business,)).fetchone()["id"]
    cid = str(uuid.uuid4())
    pg.execute("INSERT INTO events (campaign_id, creator_id, event_type, order_id, click_id, status, payout_amount,"
               " platform_fee, paid) VALUES (%s, %s, 'sale', 'pi_settled', %s, 'paid', 5, 0.5, true)",
               (campaign, creator, cid))

    await post(api, refunded("evt_rf_4", {"payment_intent": "pi_settled"}))

    [refund] = await stream(redis, hook_settings)
    assert (refund.business_id, refund.campaign_id, refund.creator_id, refund.click_id) == (
        business, campaign, creator, cid)


# -- through the settler: what a webhook makes the business pay ----------------------------------


@pytest.fixture
def world(pg, hook_settings) -> World:
    return World(pg, hook_settings)


async def sale_click(world: World, redis, *, payout: str = "5.00") -> Event:
    """A sale campaign's creator, a click on their link in ClickHouse, and the tracker's click index entry."""
    campaign = world.campaign(objective="sale", payout=payout)
    click = world.click(campaign, world.creator(campaign), ts_ms=int(time.time() * 1000) - 60_000)
    world.put([click])
    index = {"link_id": click.link_id, "campaign_id": campaign, "creator_id": click.creator_id,
             "supporter_id": None, "business_id": world.business_of(campaign)}
    await redis.hset(world.settings.keys.clicks_of(click.event_id), click.event_id, orjson.dumps(index))
    return click


def now_event(event: dict, event_type: str | None = None) -> dict:
    """The Stripe event stamped now (the settler refuses sales before their click or in the future)."""
    return {**event, "type": event_type or event["type"], "created": int(time.time())}


async def settle_stream(redis, settings) -> dict:
    """Ingest what the webhook appended, then settle: the run report."""
    insert_events(settings, await stream(redis, settings))
    await redis.delete(settings.keys.stream)
    return await asyncio.to_thread(settle_once, settings)


async def test_unpaid_checkout_books_no_sale_until_its_payment_succeeds(api, redis, world):
    click = await sale_click(world, redis)
    session = {"client_reference_id": click.event_id, "payment_status": "unpaid", "payment_intent": "pi_sepa_1"}

    unpaid = await post(api, now_event(checkout("evt_cs_unpaid", session)))
    # Before, this was a sale: the business paid the commission on money that never arrived.
    assert (await unpaid.json())["status"] == "ignored"
    assert (await settle_stream(redis, world.settings))["events_paid"] == 0

    failed = await post(api, now_event(checkout("evt_cs_failed", session), "checkout.session.async_payment_failed"))
    assert (await failed.json())["status"] == "ignored"
    assert await stream(redis, world.settings) == []

    paid = {**session, "payment_status": "paid"}
    succeeded = now_event(checkout("evt_cs_cleared", paid), "checkout.session.async_payment_succeeded")
    assert (await (await post(api, succeeded)).json())["status"] == "applied"
    assert (await (await post(api, succeeded)).json())["status"] == "duplicate"
    report = await settle_stream(redis, world.settings)
    assert (report["events_paid"], report["amount_paid"]) == (1, "5.00")
    world.assert_books()


async def test_no_payment_required_is_not_a_sale(api, redis, world):
    click = await sale_click(world, redis)
    session = {"client_reference_id": click.event_id, "payment_status": "no_payment_required", "amount_total": 0}
    resp = await post(api, now_event(checkout("evt_cs_free", session)))
    assert (await resp.json())["status"] == "ignored"
    assert await stream(redis, world.settings) == []


async def test_stripe_partial_refunds_reverse_pro_rata_once_each(api, redis, world, pg):
    click = await sale_click(world, redis)  # payout 5.00 (fee 0.50) on a 49.99 checkout
    campaign = click.campaign_id
    await post(api, now_event(checkout("evt_cs_part", {"client_reference_id": click.event_id,
                                                       "payment_intent": "pi_part"})))
    assert (await settle_stream(redis, world.settings))["amount_paid"] == "5.00"

    partial = now_event(refunded("evt_rf_part", {"payment_intent": "pi_part", "amount_refunded": 2000,
                                                 "refunded": False}))
    await post(api, partial)
    pg.execute("DELETE FROM stripe_events WHERE id = 'evt_rf_part'")  # its commit failed after the append...
    await post(api, partial)  # ...so Stripe redelivers, and the same refund event is appended twice
    report = await settle_stream(redis, world.settings)

    # 5.00 x 20.00 / 49.99 = 2.0004 -> 2.00 back, once (before: all 5.00, for a 40% refund).
    assert report["refunds"]["amount"] == "2.00"
    assert world.campaign_row(campaign)["remaining_budget"] == D("97.00")
    assert world.wallet(click.creator_id)["pending_balance"] == D("2.70")
    world.assert_books()

    await post(api, now_event(refunded("evt_rf_full", {"payment_intent": "pi_part"})))  # refunded in full
    report = await settle_stream(redis, world.settings)
    assert report["refunds"]["amount"] == "3.00"
    assert world.campaign_row(campaign)["remaining_budget"] == D("100.00")
    assert world.wallet(click.creator_id)["pending_balance"] == 0
    world.assert_books()
