"""A creator's link may go only to its campaign's hosts; narrowing them disables links outside, at once.

Before, ``POST /v1/campaigns/{id}/links`` took any http(s) destination, so a
creator could send the business's paid clicks to a phishing page.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from oros.connections import as_user, pg_pool
from settler.reconcile import reconcile
from tracker.app import create_app as create_tracker_app

from admin_flows import accepted_creator, active_campaign, assert_error

# Each reaches (or, to some parser, seems to reach) a host other than shop.example.
STRAY = [
    "https://evil.example/login",
    "https://login.shop.example/",  # a subdomain is another host unless listed
    "https://shop.example.evil.example/",
    "https://shop.example@evil.example/",  # userinfo: the browser goes to evil.example
    "https://evil.example\\@shop.example/",  # a browser reads "\" as "/": evil.example; urlsplit says shop.example
    "https://evil.example#@shop.example",
    "https://shop.example%2eevil.example/",
    "https://[::1]/",
]
ALLOWED = ["https://shop.example/deep/p?ref=1#top", "https://SHOP.example:8443/x", "http://shop.example",
           "https://shop.example?q=1"]


@pytest.fixture
async def world(api, make_user, admin):
    business, creator = make_user("business"), make_user("creator")
    campaign = await active_campaign(api, business, admin, destination_url="https://shop.example/sneakers")
    await accepted_creator(api, business, creator, campaign["id"])
    return {"business": business, "creator": creator, "campaign": campaign,
            "links": f"/v1/campaigns/{campaign['id']}/links", "patch": f"/v1/campaigns/{campaign['id']}"}


async def link(api, world, destination: str):
    return await api.post(world["links"], json={"destination_url": destination}, headers=world["creator"].headers)


async def test_links_may_go_only_to_the_campaign_destinations_host(api, world, pg, settings):
    for destination in STRAY:
        resp = await link(api, world, destination)
        assert resp.status == 422, destination
        assert_error(await resp.json(), "invalid", "destination_url")
    for destination in ALLOWED:
        assert (await link(api, world, destination)).status == 201, destination
    count = pg.execute("SELECT count(*) AS n FROM tracking_links").fetchone()["n"]
    assert count == len(ALLOWED)
    assert all(check.ok for check in reconcile(settings))


async def test_the_database_refuses_a_stray_link_from_any_producer(api, world, settings, pg):
    """A second producer (a script, another service) cannot bypass the API's check."""
    row = (world["campaign"]["id"], world["creator"].id)
    insert = ("INSERT INTO tracking_links (campaign_id, creator_id, code, url, destination_url)"
              " VALUES (%s, %s, 'byp4ss', 'x', 'https://evil.example/')")
    pool = pg_pool(settings, max_size=1)
    await pool.open(wait=True)
    try:
        with pytest.raises(psycopg.errors.CheckViolation):
            async with as_user(pool, world["creator"].id) as conn:  # the request role, as the API runs
                await conn.execute(insert, row)
    finally:
        await pool.close()
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute(insert, row)  # even the owner
    assert (await link(api, world, "https://shop.example/ok")).status == 201
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute("UPDATE tracking_links SET destination_url = 'https://evil.example/'")


async def test_an_allow_list_lets_links_reach_listed_hosts_only(api, world):
    headers = world["business"].headers
    resp = await api.patch(world["patch"], json={"allowed_destination_hosts": ["Shop.Example", "cdn.shop.example",
                                                                                  "shop.example"]},
                           headers=headers)
    assert resp.status == 200
    assert (await resp.json())["allowed_destination_hosts"] == ["cdn.shop.example", "shop.example"]
    assert (await link(api, world, "https://cdn.shop.example/img")).status == 201
    assert (await link(api, world, "https://img.shop.example/")).status == 422

    for hosts in (["bad host"], ["*.shop.example"], ["shop.example:443"], [], ["x"] * 21, "shop.example", [7]):
        resp = await api.patch(world["patch"], json={"allowed_destination_hosts": hosts}, headers=headers)
        assert resp.status == 422, hosts
        assert_error(await resp.json(), "invalid", "allowed_destination_hosts")
    # The campaign's own destination must stay reachable.
    resp = await api.patch(world["patch"], json={"allowed_destination_hosts": ["cdn.shop.example"]}, headers=headers)
    assert resp.status == 422
    assert_error(await resp.json(), "invalid", "destination_url")
    resp = await api.patch(world["patch"], json={"destination_url": "https://evil.example\\@shop.example/"},
                           headers=headers)
    assert_error(await resp.json(), "invalid", "destination_url")


async def settled_status(tracker, code: str) -> int:
    """The redirect's status once the tracker has read the invalidation the API published (pub/sub is async)."""
    for _ in range(100):
        status = (await tracker.get(f"/{code}", allow_redirects=False)).status
        if status != 302:
            return status
        await asyncio.sleep(0.01)
    return status


async def test_narrowing_the_hosts_disables_links_outside_at_once(api, world, aiohttp_client, settings):
    tracker = await aiohttp_client(create_tracker_app(settings))
    headers = world["business"].headers
    await api.patch(world["patch"], json={"allowed_destination_hosts": ["cdn.shop.example", "shop.example"]},
                    headers=headers)
    kept = await (await link(api, world, "https://shop.example/a")).json()
    dropped = await (await link(api, world, "https://cdn.shop.example/b")).json()
    for code in (kept["code"], dropped["code"]):  # both resolved and cached by the tracker
        assert (await tracker.get(f"/{code}", allow_redirects=False)).status == 302

    resp = await api.patch(world["patch"], json={"allowed_destination_hosts": None}, headers=headers)
    assert resp.status == 200 and (await resp.json())["allowed_destination_hosts"] is None

    assert await settled_status(tracker, dropped["code"]) == 404
    assert (await tracker.get(f"/{kept['code']}", allow_redirects=False)).status == 302
    page = await (await api.get(world["links"], headers=headers)).json()
    listed = {item["code"]: item["disabled_at"] for item in page["items"]}
    assert listed[kept["code"]] is None and listed[dropped["code"]] is not None
    # Disabling is final: widening again does not revive the link.
    await api.patch(world["patch"], json={"allowed_destination_hosts": ["cdn.shop.example", "shop.example"]},
                    headers=headers)
    assert (await tracker.get(f"/{dropped['code']}", allow_redirects=False)).status == 404
    assert all(check.ok for check in reconcile(settings))
