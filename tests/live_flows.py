"""Steps the live-shopping tests share: a sale campaign with its business's API key and an accepted creator,
live events opened through the API, sales reported with the key, settled through ingest's writer and the settler."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson

from admin_api.auth import issue_token
from ingest.writer import insert_events
from oros import apikeys
from oros.events import STREAM_FIELD, Event, uuid7
from oros.reasons import UNKNOWN_CAMPAIGN
from settler.run import settle_once

from factories import World, now_ms


@dataclass
class Party:
    id: str
    headers: dict


@dataclass
class Shop:
    campaign: str
    business: Party
    key: dict  # the business's API key as a Bearer header
    creator: Party


def party(world: World, role: str) -> Party:
    user_id = world.user(role)
    return Party(user_id, {"Authorization": f"Bearer {issue_token(world.settings, user_id)}"})


def api_key(world: World, business: str) -> dict:
    secret, prefix, digest = apikeys.generate()
    world.pg.execute("INSERT INTO api_keys (user_id, name, key_prefix, key_hash) VALUES (%s, 'live', %s, %s)",
                     (business, prefix, digest))
    return {"Authorization": f"Bearer {secret}"}


def shop(world: World, *, objective: str = "sale", payout: str = "5.00", fund: str = "100.00") -> Shop:
    business = party(world, "business")
    campaign = world.campaign(business.id, objective=objective, payout=payout, fund=fund)
    creator = party(world, "creator")
    world.pg.execute("INSERT INTO campaign_creators (campaign_id, creator_id, status) VALUES (%s, %s, 'accepted')",
                     (campaign, creator.id))
    return Shop(campaign, business, api_key(world, business.id), creator)


async def open_event(api, s: Shop, *, pct: str | None = None, start: bool = True) -> dict:
    resp = await api.post("/v1/live-events", json={"campaign_id": s.campaign, "title": "Spring drop",
                                                   "starts_at": "2026-12-07T20:00:00Z"}, headers=s.creator.headers)
    assert resp.status == 201, await resp.text()
    event = await resp.json()
    if pct is not None:
        resp = await api.patch(f"/v1/live-events/{event['id']}", json={"commission_pct": pct},
                               headers=s.business.headers)
        assert resp.status == 200, await resp.text()
    if start:
        resp = await api.post(f"/v1/live-events/{event['id']}/start", headers=s.creator.headers)
        assert resp.status == 200, await resp.text()
    return event


def link_id(world: World, event: dict) -> str:
    return world.pg.execute("SELECT id::text AS id FROM tracking_links WHERE live_event_id = %s",
                            (event["id"],)).fetchone()["id"]


async def viewer(world: World, redis, s: Shop, event: dict) -> Event:
    """A click through the live link, in ClickHouse and in the tracker's click index."""
    click = world.click(s.campaign, (s.creator.id, link_id(world, event)), ts_ms=now_ms() - 30_000)
    world.put([click])
    entry = {"link_id": click.link_id, "campaign_id": s.campaign, "creator_id": s.creator.id, "supporter_id": None,
             "business_id": s.business.id}
    await redis.hset(world.settings.keys.clicks_of(click.event_id), click.event_id, orjson.dumps(entry))
    return click


async def sell(api, s: Shop, event: dict, order: str, amount: str, **more):
    return await api.post(f"/v1/live-events/{event['id']}/sales", json={"order_id": order, "amount": amount, **more},
                          headers=s.key)


async def settle(world: World, redis, settings=None) -> dict:
    """Ingest what the API appended to the stream, then settle (under ``settings``, the world's by default):
    the run report."""
    events = [Event.decode(f[STREAM_FIELD]) for _, f in await redis.xrange(world.settings.keys.stream)]
    insert_events(world.settings, events)
    await redis.delete(world.settings.keys.stream)
    report = await asyncio.to_thread(settle_once, settings or world.settings)
    world.assert_books()
    return report


def live_sales(world: World, event: dict) -> list[dict]:
    return world.pg.execute(
        "SELECT order_id, amount, commission, platform_fee, status, transfer_id::text AS transfer_id,"
        " event_id::text AS event_id FROM live_sales WHERE live_event_id = %s ORDER BY created_at",
        (event["id"],)).fetchall()


def decision(world: World, event_id: str) -> dict:
    return world.pg.execute("SELECT status, rejection_reason, payout_amount, platform_fee, transfer_id::text AS t"
                            " FROM events WHERE id = %s", (event_id,)).fetchone()


def refund(s: Shop, order: str, total: str | None) -> Event:
    return Event(event_id=str(uuid7()), event_type="refund", ts_ms=now_ms(), campaign_id=UNKNOWN_CAMPAIGN,
                 order_id=order, business_id=s.business.id, value=total, source="api")
