"""/v1/webhook-endpoints over HTTP: subscribing, what each caller may see and change, and what is refused.

Deliveries here come from real facts (an admin adjustment crediting a creator
writes earning.credited into the outbox, sql/postgres/0066); delivering them
is tests/test_webhooks.py's.
"""

from __future__ import annotations

from dataclasses import replace

import psycopg
import pytest

from admin_api.app import create_app
from oros import apikeys
from oros.connections import as_user, pg_pool
from oros.webhooks import MAX_ENDPOINTS, SECRET_PREFIX, allowed_address
from settler.jobs import OWNER_JOBS

from admin_flows import User, assert_error

HOOK = "https://hooks.example.com/oros"


async def subscribe(api, user: User, url: str = HOOK, events=("earning.credited",), expect: int = 201) -> dict:
    resp = await api.post("/v1/webhook-endpoints", json={"url": url, "events": list(events)}, headers=user.headers)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def credit(api, admin: User, user: User, amount: str = "5.00") -> None:
    """A real fact with a webhook: money credited to the user's wallet (earning.credited)."""
    resp = await api.post("/v1/admin/adjustments", headers=admin.headers, json={
        "reason": "bonus", "legs": [{"platform": "clearing", "direction": "debit", "amount": amount},
                                    {"user_id": user.id, "direction": "credit", "amount": amount}]})
    assert resp.status == 201, await resp.text()


async def deliveries(api, user: User, endpoint_id: str, **params) -> list[dict]:
    resp = await api.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", params=params, headers=user.headers)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["items"]


async def test_subscribe_shows_the_secret_once_and_no_request_can_read_it(api, pg, settings, make_user):
    creator = make_user("creator")
    created = await subscribe(api, creator, events=["withdrawal.failed", "earning.credited", "earning.credited"])
    assert created["secret"].startswith(SECRET_PREFIX) and len(created["secret"]) >= 40
    assert created["events"] == ["earning.credited", "withdrawal.failed"] and created["url"] == HOOK
    listed = await (await api.get("/v1/webhook-endpoints", headers=creator.headers)).json()
    assert [e["id"] for e in listed["items"]] == [created["id"]] and "secret" not in listed["items"][0]
    one = await (await api.get(f"/v1/webhook-endpoints/{created['id']}", headers=creator.headers)).json()
    assert one == {k: v for k, v in created.items() if k != "secret"}
    assert pg.execute("SELECT secret FROM webhook_endpoint_secrets").fetchall() == [{"secret": created["secret"]}]

    pool = pg_pool(settings, max_size=1)
    await pool.open(wait=True)
    try:
        for statement in (
            "SELECT secret FROM webhook_endpoint_secrets",
            "SELECT lease_token FROM webhook_deliveries",
            "INSERT INTO webhook_endpoints (owner_id, url, events) VALUES (auth.uid(), 'https://x', '{}')",
            "UPDATE webhook_endpoints SET url = 'https://evil.example'",
            "INSERT INTO webhook_deliveries (event_id, endpoint_id, owner_id, event_type, payload)"
            " SELECT gen_random_uuid(), id, owner_id, 'earning.credited', '{}' FROM webhook_endpoints",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                async with as_user(pool, creator.id) as conn:  # the role every request runs as
                    await conn.execute(statement)
    finally:
        await pool.close()


async def test_who_may_subscribe_to_what(api, pg, make_user, admin):
    creator, business, supporter = make_user("creator"), make_user("business"), make_user("supporter")
    assert (await api.post("/v1/webhook-endpoints", json={"url": HOOK, "events": ["earning.credited"]})).status == 401
    assert_error(await subscribe(api, supporter, expect=403), "forbidden")
    assert_error(await subscribe(api, creator, events=["earning.credited", "conversion.recorded"], expect=422),
                 "invalid", "events[1]")
    assert_error(await subscribe(api, business, events=["withdrawal.paid"], expect=422), "invalid", "events[0]")
    # An admin passes the API's role checks, but no event reaches an admin as such.
    assert_error(await subscribe(api, admin, events=["settlement.completed"], expect=422), "invalid", "events[0]")
    assert (await subscribe(api, business, events=["conversion.recorded", "event.rejected",
                                                   "settlement.completed"]))["events"] == [
        "conversion.recorded", "event.rejected", "settlement.completed"]
    both = make_user("creator", "business")
    assert len((await subscribe(api, both, events=["earning.credited", "conversion.recorded"]))["events"]) == 2

    # A leaked API key may read a business's endpoints but not add, delete or re-key one.
    secret, prefix, key_hash = apikeys.generate()
    pg.execute("INSERT INTO api_keys (user_id, name, key_prefix, key_hash) VALUES (%s, 'k', %s, %s)",
               (business.id, prefix, key_hash))
    by_key = User(business.id, {"Authorization": f"Bearer {secret}"})
    assert_error(await subscribe(api, by_key, events=["conversion.recorded"], expect=403), "forbidden")
    mine = await (await api.get("/v1/webhook-endpoints", headers=by_key.headers)).json()
    assert len(mine["items"]) == 1
    endpoint = mine["items"][0]["id"]
    assert (await api.delete(f"/v1/webhook-endpoints/{endpoint}", headers=by_key.headers)).status == 403
    assert (await api.post(f"/v1/webhook-endpoints/{endpoint}/rotate-secret", headers=by_key.headers)).status == 403


BAD_BODIES = [
    ({"events": ["earning.credited"]}, "url"),
    ({"url": 42, "events": ["earning.credited"]}, "url"),
    ({"url": "", "events": ["earning.credited"]}, "url"),
    ({"url": "https://" + "a" * 2048 + ".example", "events": ["earning.credited"]}, "url"),
    ({"url": "http://hooks.example.com/", "events": ["earning.credited"]}, "url"),  # https only
    ({"url": "hooks.example.com/x", "events": ["earning.credited"]}, "url"),
    ({"url": "https://hooks.example.com/\x00", "events": ["earning.credited"]}, "url"),
    ({"url": "https://hooks.example.com/a b", "events": ["earning.credited"]}, "url"),
    ({"url": "https://hooks.example.com/\u202e", "events": ["earning.credited"]}, "url"),
    ({"url": "https://[::1", "events": ["earning.credited"]}, "url"),
    ({"url": HOOK}, "events"),
    ({"url": HOOK, "events": []}, "events"),
    ({"url": HOOK, "events": "earning.credited"}, "events"),
    ({"url": HOOK, "events": ["earning.credited"] * 7}, "events"),
    ({"url": HOOK, "events": ["earning.credited", None]}, "events[1]"),
    ({"url": HOOK, "events": ["earning.*"]}, "events[0]"),
    ({"url": HOOK, "events": [{"type": "earning.credited"}]}, "events[0]"),
    # events before url, and each type wholly (known, then reaching the caller's roles) before the next.
    ({"url": "http://127.0.0.1/", "events": ["conversion.recorded"]}, "events[0]"),
    ({"url": HOOK, "events": ["conversion.recorded", "earning.*"]}, "events[0]"),
]


async def test_bad_input_is_422_naming_the_field(api, pg, make_user):
    creator = make_user("creator")
    for body, field in BAD_BODIES:
        resp = await api.post("/v1/webhook-endpoints", json=body, headers=creator.headers)
        assert resp.status == 422, (body, await resp.text())
        assert_error(await resp.json(), "invalid", field)
    assert pg.execute("SELECT count(*) AS n FROM webhook_endpoints").fetchone()["n"] == 0


async def test_bytes_that_are_not_json_or_not_utf8_are_refused_cleanly(api, pg, make_user):
    creator = make_user("creator")
    headers = {**creator.headers, "Content-Type": "application/json"}
    for raw in (b'{"url": "https://hooks.example.com/\xff\xfe", "events": ["earning.credited"]}', b"\xc3\x28",
                b"[1, 2]", b"null"):
        resp = await api.post("/v1/webhook-endpoints", data=raw, headers=headers)
        assert resp.status in (400, 422), (raw, resp.status)
        assert set(await resp.json()) == {"error"}
    created = await subscribe(api, creator)
    base = f"/v1/webhook-endpoints/{created['id']}"
    for path, field in ((f"{base}/deliveries?status=%FF", "status"), (f"{base}/deliveries?status=sent", "status"),
                        (f"{base}/deliveries?cursor=%FF%FE", "cursor"), (f"{base}/deliveries?limit=0", "limit"),
                        ("/v1/webhook-endpoints?cursor=bm9wZQ", "cursor")):
        resp = await api.get(path, headers=creator.headers)
        assert resp.status == 422, (path, await resp.text())
        assert_error(await resp.json(), "invalid", field)
    for grace in (-1, 86401, "60", 1.5, True):
        resp = await api.post(f"{base}/rotate-secret", json={"grace_s": grace}, headers=creator.headers)
        assert resp.status == 422 and (await resp.json())["error"]["field"] == "grace_s", grace
    for path in ("/v1/webhook-endpoints/not-a-uuid", "/v1/webhook-endpoints/%FF/deliveries",
                 f"{base}/deliveries/x/retry"):
        resp = await (api.post if path.endswith("retry") else api.get)(path, headers=creator.headers)
        assert resp.status == 404, path


REFUSED_URLS = [
    "https://127.0.0.1/hook", "https://127.1/", "https://2130706433/", "https://0x7f.1/", "https://0/",
    "https://[::1]/", "https://[::ffff:127.0.0.1]/", "https://[::ffff:a9fe:a9fe]/", "https://[64:ff9b::a00:1]/",
    "https://10.0.0.5/", "https://172.16.3.4/", "https://192.168.1.1/", "https://100.64.0.1/",
    "https://169.254.169.254/latest/meta-data/", "https://[fe80::1]/", "https://[fd00::1]/", "https://224.0.0.1/",
    "https://[::7f00:1]/", "https://[::a9fe:a9fe]/", "https://[::808:808]/", "https://[64:ff9b:1::a00:1]/",
    "https://[64:ff9b:1::808:808]/", "https://[64:ff9b::7f00:1]/",
    "https://localhost/", "https://LOCALHOST./", "https://api.localhost/", "https://user:pw@hooks.example.com/",
    "https://hooks.example.com/#frag",
]


def test_ipv6_forms_of_ipv4_are_judged_by_what_they_reach():
    """The well-known NAT64 prefix reaches its embedded IPv4; IPv4-compatible and local-use NAT64 are refused."""
    assert allowed_address("64:ff9b::808:808", allow_private=False)
    assert allowed_address("2606:4700:4700::1111", allow_private=False)
    for refused in ("64:ff9b::7f00:1", "::7f00:1", "::808:808", "64:ff9b:1::808:808", "64:ff9b:1::a00:1"):
        assert not allowed_address(refused, allow_private=False), refused


async def test_private_and_local_targets_are_refused_when_subscribing(api, pg, make_user):
    creator = make_user("creator")
    for url in REFUSED_URLS:
        assert_error(await subscribe(api, creator, url=url, expect=422), "invalid", "url")
    assert pg.execute("SELECT count(*) AS n FROM webhook_endpoints").fetchone()["n"] == 0


async def test_local_receivers_only_when_allowed(aiohttp_client, settings, make_user):
    creator = make_user("creator")
    local = await aiohttp_client(create_app(replace(settings, webhooks_allow_private=True), OWNER_JOBS))
    created = await subscribe(local, creator, url="http://127.0.0.1:9/hook")
    assert created["url"] == "http://127.0.0.1:9/hook"
    strict = await aiohttp_client(create_app(replace(settings, webhooks_allow_private=False), OWNER_JOBS))
    assert_error(await subscribe(strict, creator, url="http://127.0.0.1:9/hook", expect=422), "invalid", "url")


async def test_each_user_sees_and_changes_only_their_own(api, pg, settings, make_user, admin):
    alice, bob = make_user("creator"), make_user("creator")
    mine = await subscribe(api, alice)
    await credit(api, admin, alice)
    assert len(await deliveries(api, alice, mine["id"])) == 1
    base = f"/v1/webhook-endpoints/{mine['id']}"
    assert (await (await api.get("/v1/webhook-endpoints", headers=bob.headers)).json())["items"] == []
    for method, path in (("get", base), ("get", f"{base}/deliveries"), ("delete", base),
                         ("post", f"{base}/rotate-secret")):
        resp = await getattr(api, method)(path, headers=bob.headers)
        assert resp.status == 404, (method, path)
    assert (await api.get(base, headers=admin.headers)).status == 404  # payloads are the owner's business

    # The database says the same to a request that asks it directly.
    pool = pg_pool(settings, max_size=1)
    await pool.open(wait=True)
    try:
        async with as_user(pool, bob.id) as conn:
            for table in ("webhook_endpoints", "webhook_deliveries", "webhook_attempts"):
                assert (await (await conn.execute(f"SELECT count(*) AS n FROM {table}")).fetchone())["n"] == 0
            assert (await (await conn.execute("SELECT * FROM oros_disable_webhook_endpoint(%s)",
                                              (mine["id"],))).fetchall()) == []
            assert (await (await conn.execute("SELECT * FROM oros_rotate_webhook_secret(%s, %s, 0)",
                                              (mine["id"], "whsec_" + "x" * 40))).fetchall()) == []
        async with as_user(pool, alice.id) as conn:
            assert (await (await conn.execute("SELECT count(*) AS n FROM webhook_deliveries")).fetchone())["n"] == 1
    finally:
        await pool.close()
    assert pg.execute("SELECT count(*) AS n FROM webhook_endpoint_secrets").fetchone()["n"] == 1
    assert pg.execute("SELECT disabled_at FROM webhook_endpoints").fetchone()["disabled_at"] is None


async def test_delete_cancels_pending_deliveries_and_stops_new_ones(api, pg, make_user, admin):
    creator = make_user("creator")
    endpoint = await subscribe(api, creator)
    other = await subscribe(api, creator, url="https://other.example.com/hook")
    await credit(api, admin, creator)
    resp = await api.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=creator.headers)
    assert resp.status == 200 and (await resp.json())["disabled_at"] is not None
    assert (await api.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=creator.headers)).status == 404
    assert (await api.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=creator.headers)).status == 404
    listed = await (await api.get("/v1/webhook-endpoints", headers=creator.headers)).json()
    assert [e["id"] for e in listed["items"]] == [other["id"]]
    await credit(api, admin, creator)
    rows = pg.execute("SELECT endpoint_id::text AS e, status FROM webhook_deliveries ORDER BY created_at").fetchall()
    assert sorted((r["e"] == endpoint["id"], r["status"]) for r in rows) == [
        (False, "pending"), (False, "pending"), (True, "canceled")]


async def test_at_most_sixteen_endpoints(api, pg, make_user):
    creator = make_user("creator")
    for i in range(MAX_ENDPOINTS):
        await subscribe(api, creator, url=f"{HOOK}/{i}")
    assert_error(await subscribe(api, creator, url=f"{HOOK}/x", expect=409), "too_many_endpoints")
    first = (await (await api.get("/v1/webhook-endpoints", headers=creator.headers)).json())["items"][0]
    assert (await api.delete(f"/v1/webhook-endpoints/{first['id']}", headers=creator.headers)).status == 200
    await subscribe(api, creator, url=f"{HOOK}/x")
    assert pg.execute("SELECT count(*) AS n FROM webhook_endpoints WHERE disabled_at IS NULL").fetchone()["n"] == 16


async def test_rotation_keeps_the_old_secret_for_its_grace(api, pg, make_user):
    creator = make_user("creator")
    endpoint = await subscribe(api, creator)
    resp = await api.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", json={"grace_s": 600},
                          headers=creator.headers)
    assert resp.status == 201, await resp.text()
    rotated = await resp.json()
    assert rotated["secret"].startswith(SECRET_PREFIX) and rotated["secret"] != endpoint["secret"]
    assert rotated["previous_valid_until"] is not None
    rows = pg.execute("SELECT secret, expires_at - created_at AS left FROM webhook_endpoint_secrets"
                      " ORDER BY created_at").fetchall()
    assert [r["secret"] for r in rows] == [endpoint["secret"], rotated["secret"]]
    assert rows[1]["left"] is None and 599 <= rows[0]["left"].total_seconds() <= 601 + 60
    # Rotating again at once ends the first secret now: one previous secret at most.
    await api.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", json={"grace_s": 0},
                   headers=creator.headers)
    valid = pg.execute("SELECT count(*) AS n FROM webhook_endpoint_secrets WHERE expires_at IS NULL"
                       " OR expires_at > now()").fetchone()["n"]
    assert valid == 1


async def test_deliveries_list_their_attempts_and_a_failed_one_can_be_retried(api, pg, make_user, admin):
    creator = make_user("creator")
    endpoint = await subscribe(api, creator)
    await credit(api, admin, creator, "7.50")
    [delivery] = await deliveries(api, creator, endpoint["id"])
    assert delivery["event_type"] == "earning.credited" and delivery["status"] == "pending"
    assert delivery["payload"]["amount"] == "7.50" and delivery["attempts"] == []
    # What the delivery process records (tests/test_webhooks.py makes these for real).
    pg.execute("UPDATE webhook_deliveries SET status = 'failed', attempt_count = 2, finished_at = now()")
    pg.execute("INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error)"
               " VALUES (%s, 1, now(), 12, 500, 'HTTP 500'), (%s, 2, now(), 10000, NULL, 'timed out after 10 s')",
               (delivery["id"], delivery["id"]))
    [failed] = await deliveries(api, creator, endpoint["id"], status="failed")
    assert [(a["attempt"], a["status_code"], a["error"]) for a in failed["attempts"]] == [
        (1, 500, "HTTP 500"), (2, None, "timed out after 10 s")]
    assert await deliveries(api, creator, endpoint["id"], status="pending") == []

    retry = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{delivery['id']}/retry"
    resp = await api.post(retry, headers=creator.headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "pending"
    assert_error(await (await api.post(retry, headers=creator.headers)).json(), "not_failed")
    row = pg.execute("SELECT status, event_id, give_up_at - now() AS left FROM webhook_deliveries").fetchone()
    assert row["status"] == "pending" and str(row["event_id"]) == delivery["event_id"]
    assert row["left"].total_seconds() > 23 * 3600
