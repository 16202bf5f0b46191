"""Ids come in one spelling: canonical lower-case 8-4-4-4-12, everywhere an id enters (``canonical_uuid``)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from urllib.parse import quote

import orjson
import pytest
from yarl import URL

from admin_api.app import create_app
from admin_api.auth import issue_token
from oros.accounts import create_admin
from oros.events import STREAM_FIELD, Event, canonical_uuid, uuid7_str
from oros.reasons import UNKNOWN_CAMPAIGN

from factories import odd_spellings
from stripe_events import SECRET, checkout, post

PASSWORD = "correct horse battery"


def test_canonical_uuid():
    value = str(uuid.uuid4())
    assert canonical_uuid(value) == value and canonical_uuid(value.upper()) == value
    for odd in odd_spellings(value):
        assert canonical_uuid(odd) is None, odd
    for other in (None, 7, uuid.UUID(value), value.encode(), "", "g" + value[1:], "\uff10" * 36):
        assert canonical_uuid(other) is None, other


@pytest.fixture
async def api(aiohttp_client, settings):
    return await aiohttp_client(create_app(settings))


async def test_admin_api_path_ids_and_uuid_fields(api, settings):
    signup = await api.post("/v1/auth/signup",
                            json={"email": "ids@example.com", "password": PASSWORD, "roles": ["business"]})
    business = await signup.json()
    auth = {"Authorization": f"Bearer {business['token']}"}
    created = await api.post("/v1/campaigns", headers=auth, json={
        "title": "Ids", "objective": "click", "payout_per_action": "0.50", "total_budget": "10.00",
        "destination_url": "https://shop.example.com/",
    })
    assert created.status == 201, await created.text()
    campaign = (await created.json())["id"]
    for odd in odd_spellings(campaign):
        response = await api.get(URL(f"/v1/campaigns/{quote(odd, safe='')}", encoded=True), headers=auth)
        assert response.status == 404, odd
    shouted = await api.get(f"/v1/campaigns/{campaign.upper()}", headers=auth)
    assert shouted.status == 200 and (await shouted.json())["id"] == campaign

    admin_id = create_admin(settings, "ids-admin@example.com", PASSWORD)
    admin = {"Authorization": f"Bearer {issue_token(settings, admin_id)}"}
    user = business["user"]["id"]
    for odd in odd_spellings(user):
        legs = [{"user_id": odd, "direction": "credit", "amount": "1.00"},
                {"platform": "fees", "direction": "debit", "amount": "1.00"}]
        response = await api.post("/v1/admin/adjustments", headers=admin, json={"reason": "ids", "legs": legs})
        assert (response.status, (await response.json())["error"]["field"]) == (422, "legs[0].user_id"), odd
    kyc = await api.post(f"/v1/admin/users/{user.upper()}/kyc", headers=admin, json={"status": "approved"})
    assert kyc.status == 200 and (await kyc.json())["id"] == user


async def test_webhook_click_ids(aiohttp_client, settings, redis):
    api = await aiohttp_client(create_app(replace(settings, stripe_webhook_secret=SECRET)))
    cid = uuid7_str()
    index = {"link_id": str(uuid.uuid4()), "campaign_id": str(uuid.uuid4()), "creator_id": str(uuid.uuid4()),
             "supporter_id": None, "business_id": str(uuid.uuid4())}
    await redis.hset(settings.keys.clicks_of(cid), cid, orjson.dumps(index))
    odd = await post(api, checkout("evt_odd",
                                   {"client_reference_id": odd_spellings(cid)[0], "payment_intent": "pi_odd"}))
    assert (await odd.json())["status"] == "ignored"
    shouted = await post(api, checkout("evt_upper", {"client_reference_id": cid.upper(), "payment_intent": "pi_upper"}))
    assert (await shouted.json())["status"] == "applied"
    [(_, fields)] = await redis.xrange(settings.keys.stream)
    sale = Event.decode(fields[STREAM_FIELD])
    assert (sale.click_id, sale.campaign_id) == (cid, index["campaign_id"]) and sale.campaign_id != UNKNOWN_CAMPAIGN
