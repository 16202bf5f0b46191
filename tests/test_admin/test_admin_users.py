"""Identity over HTTP: signup, login, tokens, roles, profiles, API keys."""

from __future__ import annotations

import time

from admin_api.auth import issue_token
from oros import apikeys

from admin_flows import assert_error

SIGNUP = {"email": "Ana@Example.com", "password": "correct horse", "username": "ana", "roles": ["creator"]}


async def test_signup_login_and_me(api):
    resp = await api.post("/v1/auth/signup", json=SIGNUP)
    assert resp.status == 201
    body = await resp.json()
    assert body["user"]["email"] == "ana@example.com"
    assert body["user"]["roles"] == ["creator"]
    assert body["user"]["kyc_status"] == "pending"
    assert "password_hash" not in body["user"]

    resp = await api.post("/v1/auth/login", json={"email": "ana@example.com", "password": "correct horse"})
    assert resp.status == 200
    token = (await resp.json())["token"]
    me = await (await api.get("/v1/me", headers={"Authorization": f"Bearer {token}"})).json()
    assert me["id"] == body["user"]["id"]
    assert me["creator_profile"]["user_id"] == me["id"]
    assert me["business_profile"] is None


async def test_signup_refuses_duplicates_and_bad_fields(api):
    assert (await api.post("/v1/auth/signup", json=SIGNUP)).status == 201
    resp = await api.post("/v1/auth/signup", json={**SIGNUP, "username": "other"})
    assert resp.status == 409
    assert_error(await resp.json(), "email_taken", "email")
    resp = await api.post("/v1/auth/signup", json={**SIGNUP, "email": "b@example.com"})
    assert resp.status == 409
    assert_error(await resp.json(), "username_taken", "username")
    for field, value in [("email", "nope"), ("password", "short"), ("roles", ["admin"]), ("roles", []),
                         ("username", "a b"), ("password", 12345678)]:
        resp = await api.post("/v1/auth/signup", json={**SIGNUP, "email": "c@example.com", field: value})
        assert resp.status == 422, (field, value)
        assert_error(await resp.json(), "invalid", field)


async def test_login_failures_are_indistinguishable(api):
    await api.post("/v1/auth/signup", json=SIGNUP)
    wrong = await api.post("/v1/auth/login", json={"email": "ana@example.com", "password": "wrong password"})
    unknown = await api.post("/v1/auth/login", json={"email": "nobody@example.com", "password": "whatever1"})
    assert wrong.status == unknown.status == 401
    assert (await wrong.json()) == (await unknown.json())


async def test_bad_expired_and_missing_tokens_are_401(api, settings, make_user):
    user = make_user("creator")
    expired = issue_token(settings, user.id, now=time.time() - settings.jwt_ttl_s - 5)
    forged = issue_token(settings.__class__(jwt_secret="another secret of at least thirty-two bytes"), user.id)
    for header in [None, "Bearer", "Basic abc", "Bearer garbage", f"Bearer {expired}", f"Bearer {forged}",
                   "Bearer oros_live_not-a-real-key"]:
        resp = await api.get("/v1/me", headers={"Authorization": header} if header else {})
        assert resp.status == 401, header
        assert_error(await resp.json(), "unauthorized")
    assert (await api.get("/v1/me", headers=user.headers)).status == 200


async def test_token_of_deleted_user_stops_working(api, pg, make_user):
    user = make_user("creator")
    pg.execute("DELETE FROM wallets WHERE user_id = %s", (user.id,))
    pg.execute("DELETE FROM users WHERE id = %s", (user.id,))
    assert (await api.get("/v1/me", headers=user.headers)).status == 401


async def test_patch_me_roles_and_profiles(api, make_user):
    user = make_user("supporter")
    resp = await api.patch("/v1/me", json={"display_name": "Ana B", "bio": "hi"}, headers=user.headers)
    assert resp.status == 200
    assert (await resp.json())["display_name"] == "Ana B"
    resp = await api.patch("/v1/me", json={"profile_image_url": "https://i.example/" + "a" * 500},
                           headers=user.headers)
    assert_error(await resp.json(), "invalid", "profile_image_url")

    resp = await api.put("/v1/me/creator-profile", json={"stripe_account_id": "acct_123"}, headers=user.headers)
    assert resp.status == 403
    resp = await api.post("/v1/me/roles", json={"role": "creator"}, headers=user.headers)
    assert (await resp.json())["roles"] == ["creator", "supporter"]
    resp = await api.post("/v1/me/roles", json={"role": "admin"}, headers=user.headers)
    assert resp.status == 422

    resp = await api.put("/v1/me/creator-profile", json={"stripe_account_id": "acct_123", "hashtags": ["#Run"]},
                         headers=user.headers)
    assert resp.status == 200
    profile = await resp.json()
    assert profile["stripe_account_id"] == "acct_123" and profile["hashtags"] == ["run"]
    assert profile["min_tip_amount"] == "1.00"
    resp = await api.put("/v1/me/creator-profile", json={"stripe_account_id": "not-an-account"},
                         headers=user.headers)
    assert_error(await resp.json(), "invalid", "stripe_account_id")

    resp = await api.put("/v1/me/business-profile", json={"company_name": "Acme"}, headers=user.headers)
    assert resp.status == 403


async def test_api_keys_are_shown_once_hashed_and_revocable(api, pg, redis, settings, make_user):
    business = make_user("business")
    resp = await api.post("/v1/api-keys", json={"name": "shop"}, headers=business.headers)
    assert resp.status == 201
    created = await resp.json()
    secret = created["key"]
    assert secret.startswith(apikeys.KEY_PREFIX)
    stored = pg.execute("SELECT key_hash FROM api_keys WHERE id = %s", (created["id"],)).fetchone()
    assert stored["key_hash"] == apikeys.hash_key(secret)

    listed = await (await api.get("/v1/api-keys", headers=business.headers)).json()
    assert [k["id"] for k in listed["items"]] == [created["id"]]
    assert "key" not in listed["items"][0] and "key_hash" not in listed["items"][0]

    # The key authenticates as its business, but cannot manage keys.
    key_headers = {"Authorization": f"Bearer {secret}"}
    assert (await (await api.get("/v1/me", headers=key_headers)).json())["id"] == business.id
    assert (await api.get("/v1/api-keys", headers=key_headers)).status == 403

    await redis.set(settings.keys.api_key(apikeys.hash_key(secret)), business.id)
    other = make_user("business")
    assert (await api.delete(f"/v1/api-keys/{created['id']}", headers=other.headers)).status == 404
    resp = await api.delete(f"/v1/api-keys/{created['id']}", headers=business.headers)
    assert resp.status == 200
    assert (await resp.json())["revoked_at"] is not None
    assert await redis.get(settings.keys.api_key(apikeys.hash_key(secret))) == apikeys.NEGATIVE
    assert (await api.get("/v1/me", headers=key_headers)).status == 401


async def test_api_keys_need_business_role(api, make_user):
    creator = make_user("creator")
    resp = await api.post("/v1/api-keys", json={"name": "x"}, headers=creator.headers)
    assert resp.status == 403
    assert_error(await resp.json(), "forbidden")
