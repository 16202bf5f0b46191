"""Campaign lifecycle, listing and search, creator applications, links and their Redis entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from oros.links import CODE_RE, LinkInfo

from admin_flows import CAMPAIGN, accepted_creator, active_campaign, assert_error, create_campaign, fund


async def test_create_starts_as_unfunded_draft(api, make_user):
    business = make_user("business")
    campaign = await create_campaign(api, business)
    assert campaign["status"] == "draft"
    assert campaign["remaining_budget"] == "0.00" and campaign["funded_budget"] == "0.00"
    assert campaign["payout_per_action"] == "0.50" and campaign["total_budget"] == "100.00"
    assert campaign["hashtags"] == ["sneakers", "summer"]
    assert campaign["business_id"] == business.id


async def test_create_validates_each_field(api, make_user):
    business = make_user("business")
    cases = [
        ("title", None), ("title", ""), ("objective", "view"), ("payout_per_action", 0.5),
        ("payout_per_action", "0.001"), ("payout_per_action", "-1.00"), ("total_budget", "abc"),
        ("destination_url", "javascript:alert(1)"), ("destination_url", "https://x.example/" + "a" * 2048),
        ("hashtags", "notalist"), ("start_date", "yesterday"), ("payout_per_action", "200.00"),
    ]
    for field, value in cases:
        resp = await api.post("/v1/campaigns", json={**CAMPAIGN, field: value}, headers=business.headers)
        assert resp.status == 422, (field, value, await resp.text())
        assert_error(await resp.json(), "invalid", field)
    resp = await api.post("/v1/campaigns", json={**CAMPAIGN, "start_date": "2030-01-02T00:00:00Z",
                                                 "end_date": "2030-01-01T00:00:00Z"}, headers=business.headers)
    assert_error(await resp.json(), "invalid", "end_date")
    creator = make_user("creator")
    assert (await api.post("/v1/campaigns", json=CAMPAIGN, headers=creator.headers)).status == 403


async def test_activation_needs_funding_and_future_end(api, make_user, admin, pg):
    business = make_user("business")
    campaign = await create_campaign(api, business)
    resp = await api.post(f"/v1/campaigns/{campaign['id']}/activate", headers=business.headers)
    assert resp.status == 409
    assert_error(await resp.json(), "insufficient_budget", "remaining_budget")

    funding = await fund(api, admin, campaign["id"], "40.00")
    assert funding["amount"] == "40.00" and funding["method"] == "manual" and funding["status"] == "succeeded"
    resp = await api.post(f"/v1/campaigns/{campaign['id']}/activate", headers=business.headers)
    assert resp.status == 200
    active = await resp.json()
    assert active["status"] == "active" and active["remaining_budget"] == "40.00"

    resp = await api.post(f"/v1/campaigns/{campaign['id']}/pause", headers=business.headers)
    assert (await resp.json())["status"] == "paused"
    assert (await api.post(f"/v1/campaigns/{campaign['id']}/pause", headers=business.headers)).status == 200
    pg.execute("UPDATE campaigns SET end_date = now() - interval '1 day', start_date = NULL WHERE id = %s",
               (campaign["id"],))
    resp = await api.post(f"/v1/campaigns/{campaign['id']}/activate", headers=business.headers)
    assert_error(await resp.json(), "campaign_ended", "end_date")
    history = [r["status"] for r in pg.execute(
        "SELECT status FROM campaign_status_history WHERE campaign_id = %s ORDER BY id", (campaign["id"],))]
    assert history == ["draft", "active", "paused"]

    resp = await api.post(f"/v1/campaigns/{campaign['id']}/complete", headers=business.headers)
    ended = await resp.json()
    assert ended["status"] == "completed" and ended["remaining_budget"] == "40.00"  # unspent, still in escrow
    for action in ("activate", "pause"):
        resp = await api.post(f"/v1/campaigns/{campaign['id']}/{action}", headers=business.headers)
        assert_error(await resp.json(), "invalid_transition", "status")
    assert (await api.post(f"/v1/campaigns/{campaign['id']}/complete", headers=business.headers)).status == 200


async def test_only_the_owner_ends_a_campaign(api, make_user, admin):
    business, other = make_user("business"), make_user("business")
    campaign = await active_campaign(api, business, admin)
    resp = await api.post(f"/v1/campaigns/{campaign['id']}/complete", headers=other.headers)
    assert resp.status == 404
    resp = await api.get(f"/v1/campaigns/{campaign['id']}", headers=business.headers)
    assert (await resp.json())["status"] == "active"


async def test_what_may_change_once_active(api, make_user, admin):
    business = make_user("business")
    campaign = await active_campaign(api, business, admin)
    url = f"/v1/campaigns/{campaign['id']}"
    resp = await api.patch(url, json={"payout_per_action": "5.00"}, headers=business.headers)
    assert resp.status == 409
    assert_error(await resp.json(), "not_editable", "payout_per_action")
    resp = await api.patch(url, json={"objective": "sale"}, headers=business.headers)
    assert resp.status == 409
    resp = await api.patch(url, json={"title": "New title", "total_budget": "500.00"}, headers=business.headers)
    assert resp.status == 200
    assert (await resp.json())["title"] == "New title"
    resp = await api.patch(url, json={"total_budget": "50.00"}, headers=business.headers)
    assert_error(await resp.json(), "invalid", "total_budget")
    # Another business may see the active campaign but not lock it for change (RLS): not found.
    other = make_user("business")
    assert (await api.patch(url, json={"title": "mine"}, headers=other.headers)).status == 404


async def test_drafts_are_invisible_to_others_and_listing_searches_hashtags(api, make_user, admin):
    business, other = make_user("business"), make_user("business")
    draft = await create_campaign(api, business, title="secret draft")
    live = await active_campaign(api, business, admin, hashtags=["running", "shoes"])
    await active_campaign(api, business, admin, hashtags=["cooking"])

    assert (await api.get(f"/v1/campaigns/{draft['id']}", headers=other.headers)).status == 404
    assert (await api.get(f"/v1/campaigns/{draft['id']}")).status == 404
    assert (await api.get(f"/v1/campaigns/{draft['id']}", headers=business.headers)).status == 200
    assert (await api.get(f"/v1/campaigns/{live['id']}")).status == 200

    public = await (await api.get("/v1/campaigns")).json()
    assert draft["id"] not in {c["id"] for c in public["items"]} and len(public["items"]) == 2
    found = await (await api.get("/v1/campaigns", params=[("hashtag", "#Running"), ("hashtag", "shoes")])).json()
    assert [c["id"] for c in found["items"]] == [live["id"]]
    # Another business asking for drafts sees none of ours (RLS), the owner sees theirs.
    theirs = await (await api.get("/v1/campaigns", params={"status": "draft"}, headers=other.headers)).json()
    assert theirs["items"] == []
    mine = await (await api.get("/v1/campaigns", params={"mine": "true"}, headers=business.headers)).json()
    assert len(mine["items"]) == 3


async def test_listing_paginates_with_cursor(api, make_user):
    business = make_user("business")
    made = [(await create_campaign(api, business, title=f"c{i}"))["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        params = {"mine": "true", "limit": "2", **({"cursor": cursor} if cursor else {})}
        body = await (await api.get("/v1/campaigns", params=params, headers=business.headers)).json()
        seen += [c["id"] for c in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made) and len(seen) == 5
    resp = await api.get("/v1/campaigns", params={"cursor": "!!!"})
    assert_error(await resp.json(), "invalid", "cursor")
    resp = await api.get("/v1/campaigns", params={"limit": "0"})
    assert_error(await resp.json(), "invalid", "limit")


async def test_creator_applies_and_business_decides(api, make_user, admin):
    business, creator, stranger = make_user("business"), make_user("creator"), make_user("business")
    campaign = await active_campaign(api, business, admin)
    base = f"/v1/campaigns/{campaign['id']}/creators"
    resp = await api.post(base, headers=creator.headers)
    assert resp.status == 201
    assert (await resp.json())["status"] == "pending"
    resp = await api.post(base, headers=creator.headers)
    assert_error(await resp.json(), "already_applied")

    assert (await api.post(f"{base}/{creator.id}/accept", headers=stranger.headers)).status == 403
    assert (await api.post(f"{base}/{creator.id}/accept", headers=creator.headers)).status == 403
    resp = await api.post(f"{base}/{creator.id}/reject", headers=business.headers)
    assert (await resp.json())["status"] == "rejected"
    resp = await api.post(f"{base}/{creator.id}/accept", headers=business.headers)
    accepted = await resp.json()
    assert accepted["status"] == "accepted" and accepted["accepted_at"] is not None
    resp = await api.post(f"{base}/{stranger.id}/accept", headers=business.headers)
    assert resp.status == 404

    listed = await (await api.get(base, headers=business.headers)).json()
    assert [m["creator_id"] for m in listed["items"]] == [creator.id]


async def test_creator_cannot_join_a_draft(api, make_user):
    business, creator = make_user("business"), make_user("creator")
    draft = await create_campaign(api, business)
    assert (await api.post(f"/v1/campaigns/{draft['id']}/creators", headers=creator.headers)).status == 404


async def test_links_for_accepted_creators_reach_redis(api, make_user, admin, redis, settings):
    business, creator, outsider = make_user("business"), make_user("creator"), make_user("creator")
    campaign = await active_campaign(api, business, admin)
    await accepted_creator(api, business, creator, campaign["id"])
    await api.post(f"/v1/campaigns/{campaign['id']}/creators", headers=outsider.headers)  # pending only

    url = f"/v1/campaigns/{campaign['id']}/links"
    assert (await api.post(url, headers=outsider.headers)).status == 403
    resp = await api.post(url, headers=creator.headers)
    assert resp.status == 201
    link = await resp.json()
    assert CODE_RE.match(link["code"])
    assert link["url"] == f"{settings.tracker_url}/{link['code']}"
    assert link["destination_url"] == campaign["destination_url"]
    cached = LinkInfo.decode(await redis.get(settings.keys.link(link["code"])))
    assert cached.campaign_status == "active" and cached.creator_id == creator.id
    assert cached.business_id == business.id

    resp = await api.post(url, json={"destination_url": "https://shop.example/other"}, headers=creator.headers)
    other = await resp.json()
    assert other["destination_url"] == "https://shop.example/other" and other["code"] != link["code"]
    for bad in ["ftp://x.example/", "https://x.example/" + "a" * 2048, "not a url"]:
        resp = await api.post(url, json={"destination_url": bad}, headers=creator.headers)
        assert_error(await resp.json(), "invalid", "destination_url")

    # Pausing refreshes every link's entry; the paused campaign stays visible to its creator.
    await api.post(f"/v1/campaigns/{campaign['id']}/pause", headers=business.headers)
    cached = LinkInfo.decode(await redis.get(settings.keys.link(link["code"])))
    assert cached.campaign_status == "paused"
    assert (await api.get(f"/v1/campaigns/{campaign['id']}", headers=creator.headers)).status == 200
    mine = await (await api.get(url, headers=creator.headers)).json()
    assert {item["code"] for item in mine["items"]} == {link["code"], other["code"]}


async def test_dates_are_checked_on_activation_and_patch(api, make_user, admin):
    business = make_user("business")
    soon = datetime.now(UTC) + timedelta(days=1)
    campaign = await active_campaign(api, business, admin, start_date=(soon + timedelta(days=1)).isoformat(),
                                     end_date=(soon + timedelta(days=30)).isoformat())
    assert campaign["status"] == "active"  # a future start is allowed: earlier events are rejected
    resp = await api.patch(f"/v1/campaigns/{campaign['id']}", json={"end_date": "2001-01-01T00:00:00Z"},
                           headers=business.headers)
    assert resp.status == 422
