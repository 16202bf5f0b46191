"""``POST /v1/links/{code}/shares``: a supporter's own link to a creator's link, and what it earns.

The app trusts 127.0.0.0/8 as its proxy, so ``X-Forwarded-For`` names where each request comes from.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace
from decimal import Decimal

import pytest

from admin_api.app import create_app
from oros.clientip import ip_hash, ip_hash_key, ip_hash_key_id
from oros.links import LinkInfo
from settler.jobs import OWNER_JOBS
from settler.run import settle_once

from admin_flows import accepted_creator, active_campaign, assert_error
from factories import World

D = Decimal
SUPPORTER_IP = "198.51.100.7"


@pytest.fixture
async def api(aiohttp_client, settings):
    trusting = replace(settings, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    return await aiohttp_client(create_app(trusting, OWNER_JOBS))


@pytest.fixture
async def linked(api, make_user, admin):
    """An active click campaign (0.50 a click) with an accepted creator's link."""
    business, creator = make_user("business"), make_user("creator")
    campaign = await active_campaign(api, business, admin)
    await accepted_creator(api, business, creator, campaign["id"])
    resp = await api.post(f"/v1/campaigns/{campaign['id']}/links", headers=creator.headers)
    assert resp.status == 201, await resp.text()
    return {"business": business, "creator": creator, "campaign": campaign, "link": await resp.json()}


async def share(api, user, code: str, ip: str = SUPPORTER_IP):
    return await api.post(f"/v1/links/{code}/shares", headers={**user.headers, "X-Forwarded-For": ip})


async def test_a_supporter_shares_a_link_once_and_earns_on_its_clicks(api, linked, make_user, pg, settings, redis):
    supporter = make_user("supporter")
    resp = await share(api, supporter, linked["link"]["code"])
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["url"] == f"{settings.tracker_url}/{body['code']}"
    assert {k: body[k] for k in ("campaign_id", "creator_id", "supporter_id", "shared_from", "share_pct",
                                 "destination_url")} == {
        "campaign_id": linked["campaign"]["id"], "creator_id": linked["creator"].id, "supporter_id": supporter.id,
        "shared_from": linked["link"]["id"], "share_pct": "10.00", "destination_url": linked["link"]["destination_url"]}
    # Asked again, or through the share link itself: the same link.
    for code in (linked["link"]["code"], body["code"]):
        again = await share(api, supporter, code, ip="203.0.113.9")
        assert again.status == 200 and await again.json() == body
    # Where the supporter asked from is kept as its keyed hash (and address), never shown.
    row = pg.execute("SELECT share_ip_hash, share_ip_key, host(share_ip) AS ip FROM tracking_links WHERE code = %s",
                     (body["code"],)).fetchone()
    key = ip_hash_key(settings.ip_hash_key)
    assert row == {"share_ip_hash": ip_hash(SUPPORTER_IP, key), "share_ip_key": ip_hash_key_id(key),
                   "ip": SUPPORTER_IP}
    # Published for the trackers with its supporter.
    info = LinkInfo.decode(await redis.get(settings.keys.link(body["code"])))
    assert (info.supporter_id, info.creator_id, info.link_id) == (supporter.id, linked["creator"].id, body["id"])

    # Clicks through it: one from where the supporter asked, one from elsewhere.
    world = World(pg, settings)
    creator = (linked["creator"].id, body["id"])
    world.put([world.click(linked["campaign"]["id"], creator, ip=SUPPORTER_IP, supporter_id=supporter.id),
               world.click(linked["campaign"]["id"], creator, supporter_id=supporter.id)])
    assert settle_once(settings)["events_paid"] == 2
    resp = await api.get("/v1/me/rewards?source=share", headers=supporter.headers)
    [reward] = (await resp.json())["items"]
    # 0.50 a click: fee 0.05, reward 0.05 (the second click only), the creator 0.40 + 0.45.
    assert {k: reward[k] for k in ("source", "status", "amount", "campaign_id", "tracking_link_id", "boost_id")} == {
        "source": "share", "status": "paid", "amount": "0.05", "campaign_id": linked["campaign"]["id"],
        "tracking_link_id": body["id"], "boost_id": None}
    wallet = await (await api.get("/v1/wallet", headers=supporter.headers)).json()
    assert wallet["pending_balance"] == "0.05"
    wallet = await (await api.get("/v1/wallet", headers=linked["creator"].headers)).json()
    assert wallet["pending_balance"] == "0.85"
    world.assert_books()


async def test_two_requests_at_once_make_one_share_link(api, linked, make_user, pg):
    supporter = make_user("supporter")
    answers = await asyncio.gather(*(share(api, supporter, linked["link"]["code"]) for _ in range(4)))
    bodies = [await r.json() for r in answers]
    assert sorted(r.status for r in answers) == [200, 200, 200, 201]
    assert len({b["code"] for b in bodies}) == 1
    assert pg.execute("SELECT count(*) AS n FROM tracking_links WHERE supporter_id = %s",
                      (supporter.id,)).fetchone()["n"] == 1


async def test_who_may_not_share_what(api, linked, make_user, pg):
    code = linked["link"]["code"]
    before = pg.execute("SELECT count(*) AS n FROM tracking_links").fetchone()["n"]
    for user, status, error in [
        (make_user("creator"), 403, "forbidden"),  # not a supporter
        (make_user("business"), 403, "forbidden"),
    ]:
        resp = await share(api, user, code)
        assert resp.status == status
        assert_error(await resp.json(), error)
    # The link's own creator, the campaign's business, another creator of the campaign (also supporters).
    own_creator = linked["creator"]
    pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'supporter'), (%s, 'supporter')",
               (own_creator.id, linked["business"].id))
    colleague = make_user("creator", "supporter")
    await accepted_creator(api, linked["business"], colleague, linked["campaign"]["id"])
    refused = [(own_creator, "own_link"), (linked["business"], "own_campaign"), (colleague, "campaign_member")]
    for user, error in refused:
        resp = await share(api, user, code)
        assert resp.status == 409
        assert_error(await resp.json(), error)
    supporter = make_user("supporter")
    for path in ("/v1/links/nosuchcode/shares", "/v1/links/a%FF%FEbc/shares", "/v1/links/ab/shares",
                 "/v1/links/%2e%2e/shares"):
        resp = await api.post(path, headers=supporter.headers)
        assert resp.status == 404, path
        assert_error(await resp.json(), "not_found")
    resp = await api.post(f"/v1/links/{code}/shares")
    assert resp.status == 401
    # A paused campaign's link is not shared.
    resp = await api.post(f"/v1/campaigns/{linked['campaign']['id']}/pause", headers=linked["business"].headers)
    assert resp.status == 200, await resp.text()
    resp = await share(api, supporter, code)
    assert resp.status == 409
    assert_error(await resp.json(), "campaign_not_active", "status")
    assert pg.execute("SELECT count(*) AS n FROM tracking_links").fetchone()["n"] == before  # nothing half-written


async def test_where_the_supporter_was_is_not_readable_through_the_api_role(api, linked, make_user, pg):
    supporter = make_user("supporter")
    assert (await share(api, supporter, linked["link"]["code"])).status == 201
    for user in (linked["creator"].id, linked["business"].id, supporter.id):
        with pytest.raises(Exception, match="permission denied"), pg.transaction():
            pg.execute("SET LOCAL ROLE oros_app")
            pg.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (user,))
            pg.execute("SELECT share_ip_hash FROM tracking_links")
    with pg.transaction():
        pg.execute("SET LOCAL ROLE oros_app")
        pg.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (linked["creator"].id,))
        seen = pg.execute("SELECT supporter_id::text AS s FROM tracking_links WHERE supporter_id IS NOT NULL"
                          ).fetchall()
        # Nor can the request role write a share link of its own making.
        with pytest.raises(Exception, match="permission denied"), pg.transaction():
            pg.execute("INSERT INTO tracking_links (campaign_id, creator_id, supporter_id, code, url, destination_url)"
                       " VALUES (%s, %s, %s, 'forged01', 'x', 'https://shop.example/sneakers')",
                       (linked["campaign"]["id"], linked["creator"].id, linked["creator"].id))
    assert seen == [{"s": supporter.id}]


async def test_a_share_reward_is_withdrawable_like_earnings_once_released(api, make_user, admin, pg, settings):
    business, creator = make_user("business"), make_user("creator")
    campaign = await active_campaign(api, business, admin, payout_per_action="100.00", total_budget="100.00")
    await accepted_creator(api, business, creator, campaign["id"])
    link = await (await api.post(f"/v1/campaigns/{campaign['id']}/links", headers=creator.headers)).json()
    supporter = make_user("supporter", kyc="approved")
    shared = await (await share(api, supporter, link["code"])).json()
    world = World(pg, settings)
    world.put([world.click(campaign["id"], (creator.id, shared["id"]), supporter_id=supporter.id)])
    # 100.00: fee 10.00, reward 10.00, creator 80.00; the budget spent, the settler completes the campaign (and
    # tells the trackers, on an event loop of its own: off this test's loop).
    assert (await asyncio.to_thread(settle_once, settings))["events_paid"] == 1

    async def withdraw():
        resp = await api.post("/v1/withdrawals", json={"amount": "10.00", "method": "ach"}, headers=supporter.headers)
        return resp.status, await resp.json()

    put = await api.put("/v1/me/payout-account", json={"stripe_account_id": "acct_share"}, headers=supporter.headers)
    assert put.status == 200, await put.text()
    status, body = await withdraw()
    assert (status, body["error"]["field"]) == (422, "amount"), body  # still held: nothing available yet
    pg.execute("SELECT oros_release_holds(now() + interval '100 days')")
    status, body = await withdraw()
    assert (status, body["amount"], body["status"]) == (201, "10.00", "requested")
    wallet = await (await api.get("/v1/wallet", headers=supporter.headers)).json()
    assert (wallet["available_balance"], wallet["pending_balance"]) == ("0.00", "0.00")
    world.assert_books()


async def test_a_live_events_link_cannot_be_shared(api, linked, make_user, pg):
    resp = await api.post("/v1/live-events", json={"campaign_id": linked["campaign"]["id"], "title": "Live",
                                                   "starts_at": "2026-12-08T10:00:00Z"},
                          headers=linked["creator"].headers)
    assert resp.status == 201, await resp.text()
    live_code = (await resp.json())["link"]["code"]
    before = pg.execute("SELECT count(*) AS n FROM tracking_links").fetchone()["n"]
    resp = await share(api, make_user("supporter"), live_code)
    assert resp.status == 409
    assert_error(await resp.json(), "live_link")
    assert "live event's link cannot be shared" in (await resp.json())["error"]["message"]
    assert pg.execute("SELECT count(*) AS n FROM tracking_links").fetchone()["n"] == before


async def test_a_share_of_a_share_is_the_sharers_own_share_of_the_creators_link(api, linked, make_user, pg, settings):
    first, second = make_user("supporter"), make_user("supporter")
    one = await (await share(api, first, linked["link"]["code"])).json()
    resp = await share(api, second, one["code"], ip="198.51.100.8")  # the second shares the first's share link
    assert resp.status == 201, await resp.text()
    two = await resp.json()
    assert (two["shared_from"], two["creator_id"], two["supporter_id"]) == (
        linked["link"]["id"], linked["creator"].id, second.id)  # no chain: the first earns nothing on it
    again = await share(api, first, two["code"])  # the first, through the second's: its own link again
    assert again.status == 200 and (await again.json())["code"] == one["code"]

    world = World(pg, settings)
    campaign, creator = linked["campaign"]["id"], linked["creator"].id
    world.put([
        world.click(campaign, (creator, two["id"]), ip="198.51.100.8", supporter_id=second.id),  # its own click
        world.click(campaign, (creator, two["id"]), ip=SUPPORTER_IP, supporter_id=second.id),  # the first's click
        world.click(campaign, (creator, one["id"]), ip=SUPPORTER_IP, supporter_id=first.id),  # the first's own
    ])
    report = await asyncio.to_thread(settle_once, settings)
    # Three clicks paid (0.50 each): one reward of 0.05, the second's, on the first's click through its link.
    assert (report["events_paid"], report["share_rewards"]) == (3, {"events": 1, "rewards": 1, "amount": "0.05"})
    rewards = pg.execute("SELECT user_id::text AS u, amount FROM rewards WHERE source = 'share'").fetchall()
    assert rewards == [{"u": second.id, "amount": D("0.05")}]
    world.assert_books()


async def test_a_supporter_lists_its_own_share_links_with_what_they_earned(api, linked, make_user, pg, settings):
    pg.execute("UPDATE users SET username = 'ada' WHERE id = %s", (linked["creator"].id,))
    second = make_user("creator")
    await accepted_creator(api, linked["business"], second, linked["campaign"]["id"])
    other_link = await (await api.post(f"/v1/campaigns/{linked['campaign']['id']}/links",
                                       headers=second.headers)).json()
    supporter, stranger = make_user("supporter"), make_user("supporter")
    first = await (await share(api, supporter, linked["link"]["code"])).json()
    assert first["creator_name"] == "ada"
    later = await (await share(api, supporter, other_link["code"])).json()
    await share(api, stranger, linked["link"]["code"])
    world = World(pg, settings)
    world.put([world.click(linked["campaign"]["id"], (linked["creator"].id, first["id"]), supporter_id=supporter.id)])
    assert settle_once(settings)["events_paid"] == 1

    page = await (await api.get("/v1/me/shares?limit=1", headers=supporter.headers)).json()
    assert [s["id"] for s in page["items"]] == [later["id"]] and page["next_cursor"]
    assert page["items"][0]["creator_name"] is None  # no display name nor username: the page shows the id
    rest = await (await api.get(f"/v1/me/shares?cursor={page['next_cursor']}", headers=supporter.headers)).json()
    [mine] = rest["items"]
    assert rest["next_cursor"] is None
    assert {k: mine[k] for k in ("id", "code", "url", "creator_name", "campaign_title", "click_count", "rewards",
                                 "rewards_amount", "share_pct")} == {
        "id": first["id"], "code": first["code"], "url": first["url"], "creator_name": "ada",
        "campaign_title": linked["campaign"]["title"], "click_count": 1, "rewards": 1, "rewards_amount": "0.05",
        "share_pct": "10.00"}

    # Another supporter lists only its own; the creator and the business are not supporters; a bad cursor is a 4xx.
    theirs = await (await api.get("/v1/me/shares", headers=stranger.headers)).json()
    assert [(s["supporter_id"], s["click_count"], s["rewards"]) for s in theirs["items"]] == [(stranger.id, 0, 0)]
    for user in (linked["creator"], linked["business"]):
        assert (await api.get("/v1/me/shares", headers=user.headers)).status == 403
    for bad in ("cursor=nope", "limit=0", "limit=x"):
        resp = await api.get(f"/v1/me/shares?{bad}", headers=supporter.headers)
        assert (resp.status, (await resp.json())["error"]["field"]) == (422, bad.split("=")[0]), bad
    world.assert_books()

    # A refund that takes a share reward back whole leaves its row at 0.00 (0111): it is no longer counted.
    pg.execute("UPDATE rewards SET amount = 0 WHERE tracking_link_id = %s AND source = 'share'", (first["id"],))
    after = await (await api.get(f"/v1/me/shares?cursor={page['next_cursor']}", headers=supporter.headers)).json()
    assert [(s["rewards"], s["rewards_amount"]) for s in after["items"]] == [(0, "0.00")]
