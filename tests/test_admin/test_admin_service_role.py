"""The admin API connected as a login that holds only ``oros_api`` (compose's topology): every main flow works.

Seeding still uses the owner (``pg``, ``make_user``, ``admin``); every request goes through the restricted API.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import replace

import orjson
import pytest

from admin_api.app import create_app
from settler.jobs import OWNER_JOBS
from settler.reconcile import reconcile

from admin_flows import User, accepted_creator, assert_error, create_campaign

WEBHOOK_SECRET = "whsec_test_" + secrets.token_hex(16)


@pytest.fixture
def restricted_settings(api_settings, localstripe_url):
    return replace(api_settings, stripe_api_base=localstripe_url, stripe_webhook_secret=WEBHOOK_SECRET,
                   stripe_api_key="sk_test_oros")


@pytest.fixture
async def restricted(aiohttp_client, restricted_settings):
    return await aiohttp_client(create_app(restricted_settings, OWNER_JOBS))


def assert_books_balance(settings) -> None:
    failed = [check for check in reconcile(settings) if not check.ok]
    assert not failed, failed


async def webhook(api, event: dict):
    payload = orjson.dumps({"created": int(time.time()), **event})
    stamp = int(time.time())
    signature = hmac.new(WEBHOOK_SECRET.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    resp = await api.post("/v1/webhooks/stripe", data=payload,
                          headers={"Stripe-Signature": f"t={stamp},v1={signature}"})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def sign_up(api, email: str, *roles: str) -> User:
    resp = await api.post("/v1/auth/signup", json={"email": email, "password": "correct horse", "roles": list(roles)})
    assert resp.status == 201, await resp.text()
    resp = await api.post("/v1/auth/login", json={"email": email, "password": "correct horse"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert sorted(body["user"]["roles"]) == sorted(roles)
    return User(body["user"]["id"], {"Authorization": f"Bearer {body['token']}"})


async def test_main_flows_work_as_the_api_role(restricted, admin, pg, settings):
    business = await sign_up(restricted, "biz@example.com", "business")
    creator = await sign_up(restricted, "maker@example.com", "creator")
    resp = await restricted.post("/v1/auth/signup", json={"email": "x@example.com", "password": "correct horse",
                                                          "roles": ["admin"]})
    assert_error(await resp.json(), "invalid", "roles")
    me = await (await restricted.get("/v1/me", headers=creator.headers)).json()
    assert me["creator_profile"]["user_id"] == creator.id

    campaign = await create_campaign(restricted, business)
    fund = f"/v1/admin/campaigns/{campaign['id']}/funding"
    headers = {**admin.headers, "Idempotency-Key": "wire-1"}
    for _ in range(2):
        resp = await restricted.post(fund, json={"amount": "100.00", "reference": "wire 1"}, headers=headers)
        assert resp.status == 201, await resp.text()
    assert (await restricted.post(f"/v1/campaigns/{campaign['id']}/activate", headers=business.headers)).status == 200
    await accepted_creator(restricted, business, creator, campaign["id"])
    resp = await restricted.post(f"/v1/campaigns/{campaign['id']}/links", json={}, headers=creator.headers)
    assert resp.status == 201, await resp.text()

    # A business API key authenticates against Postgres (the caller lookup by hash).
    resp = await restricted.post("/v1/api-keys", json={"name": "shop"}, headers=business.headers)
    key = {"Authorization": f"Bearer {(await resp.json())['key']}"}
    assert (await (await restricted.get("/v1/me", headers=key)).json())["id"] == business.id

    resp = await restricted.post(f"/v1/admin/users/{creator.id}/kyc", json={"status": "approved"},
                                 headers=admin.headers)
    assert (await resp.json())["kyc_status"] == "approved"
    resp = await restricted.put("/v1/me/creator-profile", json={"stripe_account_id": "acct_maker"},
                                headers=creator.headers)
    assert resp.status == 200
    resp = await restricted.post("/v1/admin/adjustments", headers=admin.headers, json={
        "reason": "goodwill", "legs": [{"platform": "clearing", "direction": "debit", "amount": "20.00"},
                                       {"user_id": creator.id, "direction": "credit", "amount": "20.00"}]})
    assert resp.status == 201, await resp.text()
    resp = await restricted.post("/v1/withdrawals", json={"amount": "15.00", "method": "ach"}, headers=creator.headers)
    assert resp.status == 201, await resp.text()
    wallet = await (await restricted.get("/v1/wallet", headers=creator.headers)).json()
    assert wallet["available_balance"] == "5.00"
    seen = await (await restricted.get(f"/v1/campaigns/{campaign['id']}", headers=business.headers)).json()
    assert seen["remaining_budget"] == "100.00"
    assert_books_balance(settings)


async def test_stripe_funding_and_webhooks_work_as_the_api_role(restricted, make_user, pg, settings):
    business = make_user("business")
    campaign = await create_campaign(restricted, business)
    resp = await restricted.post(f"/v1/campaigns/{campaign['id']}/fund", json={"amount": "40.00"},
                                 headers=business.headers)
    assert resp.status == 201, await resp.text()
    pi = (await resp.json())["payment_intent_id"]
    paid = {"id": "evt_paid", "type": "payment_intent.succeeded",
            "data": {"object": {"id": pi, "amount": 4000, "amount_received": 4000, "currency": "usd"}}}
    assert (await webhook(restricted, paid))["status"] == "applied"
    assert (await webhook(restricted, paid))["status"] == "duplicate"
    stranger = {"id": "evt_stranger", "type": "payment_intent.succeeded",
                "data": {"object": {"id": "pi_not_ours", "amount": 500_000_000, "currency": "usd",
                                    "metadata": {"oros_campaign_id": campaign["id"]}}}}
    assert (await webhook(restricted, stranger))["status"] == "ignored"
    row = pg.execute("SELECT remaining_budget FROM campaigns WHERE id = %s", (campaign["id"],)).fetchone()
    assert str(row["remaining_budget"]) == "40.00"

    resp = await restricted.post(f"/v1/campaigns/{campaign['id']}/fund", json={"amount": "9.00"},
                                 headers=business.headers)
    failed = {"id": "evt_failed", "type": "payment_intent.payment_failed",
              "data": {"object": {"id": (await resp.json())["payment_intent_id"], "amount": 900}}}
    assert (await webhook(restricted, failed))["fundings_failed"] == 1

    # A refund names the sale the settler recorded (a read of events as the API role).
    creator = make_user("creator")
    pg.execute("INSERT INTO events (campaign_id, creator_id, event_type, value, order_id, status, rejection_reason)"
               " VALUES (%s, %s, 'sale', 49.99, 'pi_sale_9', 'rejected', 'campaign_inactive')",
               (campaign["id"], creator.id))
    refund = {"id": "evt_refund", "type": "charge.refunded",
              "data": {"object": {"id": "ch_9", "payment_intent": "pi_sale_9", "amount_refunded": 4999,
                                  "refunded": True, "currency": "usd"}}}
    assert (await webhook(restricted, refund))["campaign_id"] == campaign["id"]
    assert_books_balance(settings)


async def test_settler_jobs_need_the_owner_and_say_so(restricted, admin, api):
    for method, path in [("GET", "/v1/admin/reconcile"), ("POST", "/v1/admin/settlements"),
                         ("POST", "/v1/admin/holds/release")]:
        resp = await restricted.request(method, path, headers=admin.headers)
        assert resp.status == 503, path
        assert_error(await resp.json(), "runs_in_settler")
        # The same API connected as the owner (embedded `oros dev`) runs them.
        assert (await api.request(method, path, headers=admin.headers)).status == 200, path
