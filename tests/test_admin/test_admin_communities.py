"""Communities, membership and posts through the API, and the attacks on them.

Who may read a locked post is checked here through every read path (the post,
the feed, another community's feed) for each kind of caller. Tips, unlocks and
memberships are facts of the money side, inserted as the owner
(tests/supporter_facts.py); the same rule is attacked in SQL in
tests/test_community_access.py.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from admin_api.app import create_app
from admin_api.pages import encode_cursor
from settler.jobs import OWNER_JOBS

from admin_flows import assert_error
from supporter_facts import membership, tip

SECRET_URL = "https://cdn.example/secret.mp4"
SECRET_BODY = "only for those who unlocked it"
LOCKED = {"content_type": "video", "content_url": SECRET_URL, "body": SECRET_BODY, "is_locked": True,
          "min_tip_to_unlock": "5.00", "unlock_tier": "supporter_plus"}
OPEN = {"content_type": "text", "body": "hello everyone"}


async def community(api, creator, name: str = "Studio notes") -> dict:
    resp = await api.post("/v1/communities", json={"name": name, "description": "behind the scenes"},
                          headers=creator.headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def post(api, creator, community_id: str, body: dict) -> dict:
    resp = await api.post(f"/v1/communities/{community_id}/posts", json=body, headers=creator.headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def join(api, user, community_id: str, status: int = 201) -> dict:
    resp = await api.post(f"/v1/communities/{community_id}/join", headers=user.headers)
    assert resp.status == status, await resp.text()
    return await resp.json()


def reads_content(item: dict) -> bool:
    """True when the post came with its content; else it must carry no content key at all."""
    if item["unlocked"]:
        assert item["content_url"] == SECRET_URL and item["body"] == SECRET_BODY, item
        return True
    assert "content_url" not in item and "body" not in item, item
    assert item["min_tip_to_unlock"] == "5.00" and item["content_type"] == "video", item
    return False


async def test_a_creator_creates_and_anyone_lists_and_reads_communities(api, make_user):
    creator, supporter = make_user("creator"), make_user("supporter")
    made = await community(api, creator)
    assert made["creator_id"] == creator.id and made["member_count"] == 0 and made["membership"] is None
    resp = await api.post("/v1/communities", json={"name": "mine"}, headers=supporter.headers)
    assert resp.status == 403
    for bad in ({"name": ""}, {"name": "x" * 101}, {"name": 5}, {"name": "ok", "description": "d" * 5001},
                {"name": "a\x00b"}, {}):
        resp = await api.post("/v1/communities", json=bad, headers=creator.headers)
        assert resp.status == 422, bad
        assert_error(await resp.json(), "invalid")
    other = await community(api, make_user("creator"), "Other")

    resp = await api.get("/v1/communities", params={"limit": "1"})  # anonymous: the listing is public
    first = await resp.json()
    assert [c["id"] for c in first["items"]] == [other["id"]]
    second = await (await api.get("/v1/communities", params={"limit": "1", "cursor": first["next_cursor"]})).json()
    assert [c["id"] for c in second["items"]] == [made["id"]] and second["next_cursor"] is None
    mine = await (await api.get("/v1/communities", params={"creator_id": creator.id})).json()
    assert [c["id"] for c in mine["items"]] == [made["id"]]
    assert (await api.get(f"/v1/communities/{made['id']}")).status == 200
    assert (await api.get(f"/v1/communities/{uuid.uuid4()}")).status == 404
    assert (await api.get("/v1/communities/not-a-uuid")).status == 404
    resp = await api.get("/v1/communities", params={"creator_id": "x"})
    assert_error(await resp.json(), "invalid", "creator_id")
    assert (await api.get("/v1/communities", params={"joined": "true"})).status == 401


async def test_join_is_idempotent_leave_is_too_and_the_count_stays_true(api, make_user):
    creator, member = make_user("creator"), make_user("supporter")
    made = await community(api, creator)
    joined = await join(api, member, made["id"])
    assert joined["member_count"] == 1 and joined["membership"]["role"] == "member"
    again = await join(api, member, made["id"], status=200)
    assert again["member_count"] == 1 and again["membership"] == joined["membership"]
    # Racing joins of one user: one row, one count.
    racer = make_user()
    statuses = sorted([r.status for r in await asyncio.gather(
        *(api.post(f"/v1/communities/{made['id']}/join", headers=racer.headers) for _ in range(5)))])
    assert statuses == [200, 200, 200, 200, 201]
    listed = await (await api.get("/v1/communities", params={"joined": "true"}, headers=member.headers)).json()
    assert [c["id"] for c in listed["items"]] == [made["id"]]

    resp = await api.post(f"/v1/communities/{made['id']}/join", headers=creator.headers)
    assert resp.status == 409
    assert_error(await resp.json(), "own_community")
    stranger = make_user()
    for _ in range(2):  # leaving a community one is not in changes nothing
        resp = await api.post(f"/v1/communities/{made['id']}/leave", headers=stranger.headers)
        assert resp.status == 200 and (await resp.json())["member_count"] == 2
    left = await (await api.post(f"/v1/communities/{made['id']}/leave", headers=member.headers)).json()
    assert left["member_count"] == 1 and left["membership"] is None
    assert (await api.post(f"/v1/communities/{made['id']}/join")).status == 401
    assert (await api.post(f"/v1/communities/{uuid.uuid4()}/join", headers=member.headers)).status == 404


async def test_a_tip_to_the_creator_makes_a_member_a_supporter(api, make_user, pg):
    creator, fan, late = make_user("creator"), make_user("supporter"), make_user("supporter")
    made = await community(api, creator)
    await join(api, fan, made["id"])
    tip(pg, fan.id, creator.id)
    tip(pg, late.id, make_user("creator").id)  # a tip to someone else makes no supporter here
    assert (await join(api, late, made["id"]))["membership"]["role"] == "member"
    await api.post(f"/v1/communities/{made['id']}/leave", headers=late.headers)
    tip(pg, late.id, creator.id)
    assert (await join(api, late, made["id"]))["membership"]["role"] == "supporter"  # role set on joining
    resp = await api.get(f"/v1/communities/{made['id']}/members", params={"limit": "1"}, headers=creator.headers)
    page = await resp.json()
    assert [(m["user_id"], m["role"]) for m in page["items"]] == [(late.id, "supporter")]
    rest = await (await api.get(f"/v1/communities/{made['id']}/members",
                                params={"cursor": page["next_cursor"]}, headers=creator.headers)).json()
    assert [(m["user_id"], m["role"]) for m in rest["items"]] == [(fan.id, "supporter")]
    assert (await api.get(f"/v1/communities/{made['id']}/members", headers=fan.headers)).status == 403


async def test_only_the_community_creator_posts(api, make_user, admin):
    creator, rival = make_user("creator"), make_user("creator")
    made = await community(api, creator)
    await community(api, rival)
    for intruder in (rival, make_user("supporter"), admin):
        resp = await api.post(f"/v1/communities/{made['id']}/posts", json=OPEN, headers=intruder.headers)
        assert resp.status == 403, await resp.text()
    assert (await api.post(f"/v1/communities/{made['id']}/posts", json=OPEN)).status == 401
    created = await post(api, creator, made["id"], OPEN)
    assert created["creator_id"] == creator.id and created["unlocked"] and created["body"] == "hello everyone"
    assert created["content_url"] is None and created["is_locked"] is False and created["min_tip_to_unlock"] is None


async def test_post_input_is_checked_field_by_field(api, make_user):
    creator = make_user("creator")
    made = await community(api, creator)
    cases = [
        ({"content_type": "audio", "content_url": SECRET_URL}, "content_type"),
        ({"content_type": "image"}, "content_url"),
        ({"content_type": "text"}, "body"),
        # The first offending field in the order checked: a missing content_url before a bad is_locked.
        ({"content_type": "image", "is_locked": "yes"}, "content_url"),
        ({"content_type": "text", "content_url": None, "unlock_tier": "creator_pro"}, "body"),
        ({"content_type": "text", "body": "   "}, "body"),
        ({"content_type": "text", "body": "x" * 20001}, "body"),
        ({"content_type": "text", "body": "nul\x00byte"}, "body"),
        ({"content_type": "link", "content_url": "javascript:alert(1)"}, "content_url"),
        ({"content_type": "link", "content_url": "ftp://files.example/a"}, "content_url"),
        ({"content_type": "link", "content_url": "https://x.example/a b"}, "content_url"),
        ({"content_type": "link", "content_url": "https://x.example/" + "a" * 2048}, "content_url"),
        ({"content_type": "link", "content_url": ["https://x.example/"]}, "content_url"),
        ({**LOCKED, "min_tip_to_unlock": "-1.00"}, "min_tip_to_unlock"),
        ({**LOCKED, "min_tip_to_unlock": "0"}, "min_tip_to_unlock"),
        ({**LOCKED, "min_tip_to_unlock": "0.001"}, "min_tip_to_unlock"),
        ({**LOCKED, "min_tip_to_unlock": 1.5}, "min_tip_to_unlock"),
        ({**LOCKED, "min_tip_to_unlock": "NaN"}, "min_tip_to_unlock"),
        ({**LOCKED, "min_tip_to_unlock": "100000000.00"}, "min_tip_to_unlock"),
        ({**LOCKED, "min_tip_to_unlock": None, "unlock_tier": None}, "min_tip_to_unlock"),
        ({**LOCKED, "unlock_tier": "creator_pro"}, "unlock_tier"),
        ({**LOCKED, "is_locked": "true"}, "is_locked"),
        ({**LOCKED, "is_locked": False}, "min_tip_to_unlock"),
        ({**OPEN, "unlock_tier": "supporter_plus"}, "unlock_tier"),
    ]
    for body, field in cases:
        resp = await api.post(f"/v1/communities/{made['id']}/posts", json=body, headers=creator.headers)
        assert resp.status == 422, (body, await resp.text())
        assert_error(await resp.json(), "invalid", field)
    resp = await api.post(f"/v1/communities/{made['id']}/posts", data=b'{"content_type": "text", "body": "\xff\xfe"}',
                          headers={**creator.headers, "Content-Type": "application/json"})
    assert resp.status == 400
    assert_error(await resp.json(), "bad_json")
    resp = await api.post(f"/v1/communities/{made['id']}/posts", data=b'{"content_type": "text", "body": "\\ud800"}',
                          headers={**creator.headers, "Content-Type": "application/json"})
    assert resp.status == 400
    # DEL passes the shared URL check; the database's check (0070) refuses it, still a 422.
    resp = await api.post(f"/v1/communities/{made['id']}/posts", json={"content_type": "link",
                          "content_url": "https://x.example/\x7f"}, headers=creator.headers)
    assert resp.status == 422
    assert_error(await resp.json(), "invalid")
    feed = await (await api.get(f"/v1/communities/{made['id']}/posts")).json()
    assert feed == {"items": [], "next_cursor": None}  # nothing was half-written
    # Either way in: a price alone, a tier alone; upper-case scheme and the largest price are fine.
    priced = await post(api, creator, made["id"], {**LOCKED, "unlock_tier": None,
                                                  "content_url": "HTTPS://cdn.example/a.png", "content_type": "image",
                                                  "min_tip_to_unlock": "99999999.99"})
    assert priced["min_tip_to_unlock"] == "99999999.99" and priced["unlock_tier"] is None
    tiered = await post(api, creator, made["id"], {**LOCKED, "min_tip_to_unlock": None})
    assert tiered["min_tip_to_unlock"] is None and tiered["unlock_tier"] == "supporter_plus"


async def test_locked_content_reaches_exactly_those_who_may_read_it(api, make_user, admin, pg):
    creator = make_user("creator")
    made = await community(api, creator)
    other = await community(api, make_user("creator"), "Elsewhere")
    locked = await post(api, creator, made["id"], LOCKED)
    priced_only = await post(api, creator, made["id"], {**LOCKED, "unlock_tier": None})
    assert reads_content(locked) and reads_content(priced_only)  # the creator reads what they just posted

    member, unlocker, tier_member = make_user("supporter"), make_user("supporter"), make_user("supporter")
    tier_outsider, expired, canceled = make_user("supporter"), make_user("supporter"), make_user("supporter")
    other_unlocker, stranger = make_user("supporter"), make_user()
    for user in (member, unlocker, tier_member, expired, canceled):
        await join(api, user, made["id"])
    tip(pg, unlocker.id, creator.id, "5.00", unlocks=locked["id"])
    tip(pg, other_unlocker.id, creator.id, "5.00", unlocks=priced_only["id"])
    tip(pg, member.id, creator.id, "50.00")  # a big tip that names no post unlocks nothing
    for user in (tier_member, tier_outsider):
        membership(pg, user.id)
    membership(pg, expired.id, ends_at=datetime.now(UTC) - timedelta(seconds=1))
    membership(pg, canceled.id, status="canceled")
    membership(pg, member.id, "creator_pro")

    expected = {  # (reads locked, reads priced_only)
        "anonymous": (None, False, False), "stranger": (stranger, False, False), "member": (member, False, False),
        "unlocker": (unlocker, True, False), "other unlocker": (other_unlocker, False, True),
        "tier member": (tier_member, True, False), "tier outsider": (tier_outsider, False, False),
        "expired tier": (expired, False, False), "canceled tier": (canceled, False, False),
        "creator": (creator, True, True), "admin": (admin, True, True),
    }
    for name, (user, reads_locked, reads_priced) in expected.items():
        headers = user.headers if user else {}
        one = await (await api.get(f"/v1/posts/{locked['id']}", headers=headers)).json()
        assert reads_content(one) is reads_locked, name
        feed = await (await api.get(f"/v1/communities/{made['id']}/posts", headers=headers)).json()
        by_id = {item["id"]: item for item in feed["items"]}
        assert reads_content(by_id[locked["id"]]) is reads_locked, name
        assert reads_content(by_id[priced_only["id"]]) is reads_priced, name
        # Another community's feed never carries this community's posts.
        elsewhere = await (await api.get(f"/v1/communities/{other['id']}/posts", headers=headers)).json()
        assert elsewhere["items"] == [], name

    # The tier member who leaves the community loses the tier's way in; an unlock by tip stays.
    await api.post(f"/v1/communities/{made['id']}/leave", headers=tier_member.headers)
    await api.post(f"/v1/communities/{made['id']}/leave", headers=unlocker.headers)
    assert not reads_content(await (await api.get(f"/v1/posts/{locked['id']}", headers=tier_member.headers)).json())
    assert reads_content(await (await api.get(f"/v1/posts/{locked['id']}", headers=unlocker.headers)).json())


async def test_the_feed_pages_by_cursor_and_a_forged_cursor_reveals_nothing(api, make_user):
    creator, stranger = make_user("creator"), make_user()
    made = await community(api, creator)
    posts = [await post(api, creator, made["id"], LOCKED) for _ in range(3)]
    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await (await api.get(f"/v1/communities/{made['id']}/posts", params=params,
                                    headers=stranger.headers)).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [p["id"] for p in seen] == [p["id"] for p in reversed(posts)]
    assert not any(reads_content(p) for p in seen)
    for bad in ("garbage", "%%%", encode_cursor(datetime.now(UTC), "x")[:-3] + "!!!"):
        resp = await api.get(f"/v1/communities/{made['id']}/posts", params={"cursor": bad})
        assert resp.status == 422, bad
        assert_error(await resp.json(), "invalid", "cursor")
    # A well-formed cursor from anywhere (the future, another post's id) only moves the start.
    forged = encode_cursor(datetime.now(UTC) + timedelta(days=1), str(uuid.uuid4()))
    page = await (await api.get(f"/v1/communities/{made['id']}/posts", params={"cursor": forged},
                                headers=stranger.headers)).json()
    assert len(page["items"]) == 3 and not any(reads_content(p) for p in page["items"])
    assert (await api.get(f"/v1/posts/{uuid.uuid4()}")).status == 404
    assert (await api.get("/v1/posts/1%20OR%201=1")).status == 404
    assert (await api.get(f"/v1/communities/{uuid.uuid4()}/posts")).status == 404


async def test_the_flow_works_with_the_api_connected_as_its_own_role(aiohttp_client, api_settings, make_user, pg):
    """Compose's topology: the API logs in with only oros_api and runs requests as oros_app."""
    api = await aiohttp_client(create_app(api_settings, OWNER_JOBS))
    creator, fan, stranger = make_user("creator"), make_user("supporter"), make_user()
    made = await community(api, creator)
    locked = await post(api, creator, made["id"], LOCKED)
    await join(api, fan, made["id"])
    membership(pg, fan.id)
    assert reads_content(await (await api.get(f"/v1/posts/{locked['id']}", headers=fan.headers)).json())
    feed = await (await api.get(f"/v1/communities/{made['id']}/posts", headers=stranger.headers)).json()
    assert not reads_content(feed["items"][0])
    left = await (await api.post(f"/v1/communities/{made['id']}/leave", headers=fan.headers)).json()
    assert left["member_count"] == 0
