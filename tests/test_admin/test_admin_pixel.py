"""POST /v1/pixel-secret (a business's pixel secret, shown once, rotatable) and campaigns' pixel_billable."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest

from oros import apikeys
from oros.connections import as_user, pg_pool
from oros.pixel import SECRET_PREFIX

from admin_flows import User, active_campaign, assert_error, create_campaign


def secrets_of(pg, business: str) -> list[dict]:
    return pg.execute("SELECT secret, created_at, expires_at FROM pixel_secrets WHERE business_id = %s"
                      " ORDER BY created_at, id", (business,)).fetchall()


async def rotate(api, user, body: dict | None = None, expect: int = 201) -> dict:
    resp = await api.post("/v1/pixel-secret", json=body, headers=user.headers)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def test_only_a_logged_in_business_gets_a_pixel_secret(api, pg, make_user, admin):
    creator, business = make_user("creator"), make_user("business")
    assert (await api.post("/v1/pixel-secret")).status == 401
    assert_error(await rotate(api, creator, expect=403), "forbidden")
    # An admin passes the API's role checks; the database still wants a business.
    assert_error(await rotate(api, admin, expect=403), "forbidden")
    secret, prefix, key_hash = apikeys.generate()
    pg.execute("INSERT INTO api_keys (user_id, name, key_prefix, key_hash) VALUES (%s, 'k', %s, %s)",
               (business.id, prefix, key_hash))
    # A leaked API key must not be able to mint pixel secrets (nor API keys).
    by_key = User(business.id, {"Authorization": f"Bearer {secret}"})
    assert_error(await rotate(api, by_key, expect=403), "forbidden")
    assert pg.execute("SELECT count(*) AS n FROM pixel_secrets").fetchone()["n"] == 0


async def test_the_secret_is_shown_once_and_no_request_can_read_it(api, pg, settings, make_user):
    business = make_user("business")
    created = await rotate(api, business)
    assert created["secret"].startswith(SECRET_PREFIX) and len(created["secret"]) >= 40
    assert created["previous_valid_until"] is None
    assert [r["secret"] for r in secrets_of(pg, business.id)] == [created["secret"]]
    assert (await api.get("/v1/pixel-secret", headers=business.headers)).status == 405
    me = await (await api.get("/v1/me", headers=business.headers)).json()
    assert created["secret"] not in str(me)

    pool = pg_pool(settings, max_size=1)
    await pool.open(wait=True)
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with as_user(pool, business.id) as conn:  # the role every request runs as
                await conn.execute("SELECT secret FROM pixel_secrets")
    finally:
        await pool.close()


async def test_rotation_keeps_the_previous_secret_for_its_grace_only(api, pg, make_user):
    business = make_user("business")
    first = await rotate(api, business)
    second = await rotate(api, business)
    assert second["secret"] != first["secret"]
    until = datetime.fromisoformat(second["previous_valid_until"])
    assert until - datetime.fromisoformat(second["created_at"]) == timedelta(hours=1)  # the default grace
    rows = secrets_of(pg, business.id)
    assert [(r["secret"], r["expires_at"]) for r in rows] == [(first["secret"], until), (second["secret"], None)]

    # Rotating again at once (a leak): grace 0 ends the second now, and the first ends too.
    third = await rotate(api, business, {"grace_s": 0})
    rows = secrets_of(pg, business.id)
    assert rows[2]["secret"] == third["secret"] and rows[2]["expires_at"] is None
    assert rows[0]["expires_at"] == rows[1]["expires_at"] == datetime.fromisoformat(third["previous_valid_until"])
    assert rows[0]["expires_at"] <= rows[2]["created_at"] + timedelta(seconds=1)
    other = make_user("business")
    await rotate(api, other)
    assert len(secrets_of(pg, business.id)) == 3  # another business's rotation touches none of these


@pytest.mark.parametrize("grace_s", [-1, 86401, "60", 1.5, True, None])
async def test_grace_must_be_whole_seconds_up_to_a_day(api, pg, make_user, grace_s):
    business = make_user("business")
    assert_error(await rotate(api, business, {"grace_s": grace_s}, expect=422), "invalid", "grace_s")
    assert secrets_of(pg, business.id) == []


async def test_campaigns_opt_into_unsigned_pixels_explicitly(api, pg, make_user, admin):
    business = make_user("business")
    assert (await create_campaign(api, business))["pixel_billable"] is False
    opted = await create_campaign(api, business, pixel_billable=True)
    assert opted["pixel_billable"] is True
    for bad in ("true", 1, None):
        resp = await api.post("/v1/campaigns", json={"title": "x", "objective": "conversion",
                                                     "payout_per_action": "1.00", "total_budget": "10.00",
                                                     "destination_url": "https://shop.example",
                                                     "pixel_billable": bad}, headers=business.headers)
        assert_error(await resp.json(), "invalid", "pixel_billable")

    live = await active_campaign(api, business, admin)
    path = f"/v1/campaigns/{live['id']}"
    resp = await api.patch(path, json={"pixel_billable": True}, headers=business.headers)
    assert resp.status == 200 and (await resp.json())["pixel_billable"] is True
    other = make_user("business")
    assert (await api.patch(path, json={"pixel_billable": False}, headers=other.headers)).status == 404
    await api.post(f"{path}/complete", headers=business.headers)
    resp = await api.patch(path, json={"pixel_billable": False}, headers=business.headers)
    assert_error(await resp.json(), "not_editable", "pixel_billable")
    assert pg.execute("SELECT pixel_billable FROM campaigns WHERE id = %s", (live["id"],)).fetchone()["pixel_billable"]
