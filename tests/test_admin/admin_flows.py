"""Steps the admin API tests share: a user handle, campaign set-up, and the error-shape check."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class User:
    id: str
    headers: dict


CAMPAIGN = {
    "title": "Summer sneakers",
    "description": "Pay per click",
    "hashtags": ["#Sneakers", "summer"],
    "objective": "click",
    "payout_per_action": "0.50",
    "total_budget": "100.00",
    "destination_url": "https://shop.example/sneakers",
}


async def create_campaign(api, business: User, **overrides) -> dict:
    resp = await api.post("/v1/campaigns", json={**CAMPAIGN, **overrides}, headers=business.headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def fund(api, admin: User, campaign_id: str, amount: str = "100.00") -> dict:
    resp = await api.post(f"/v1/admin/campaigns/{campaign_id}/funding",
                          json={"amount": amount, "reference": "wire 42"}, headers=admin.headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def active_campaign(api, business: User, admin: User, **overrides) -> dict:
    campaign = await create_campaign(api, business, **overrides)
    await fund(api, admin, campaign["id"])
    resp = await api.post(f"/v1/campaigns/{campaign['id']}/activate", headers=business.headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def accepted_creator(api, business: User, creator: User, campaign_id: str) -> None:
    resp = await api.post(f"/v1/campaigns/{campaign_id}/creators", headers=creator.headers)
    assert resp.status == 201, await resp.text()
    resp = await api.post(f"/v1/campaigns/{campaign_id}/creators/{creator.id}/accept", headers=business.headers)
    assert resp.status == 200, await resp.text()


def assert_error(body: dict, code: str, field: str | None = None) -> None:
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if field is not None:
        assert body["error"].get("field") == field, body


async def credit(api, admin: User, user: User, amount: str) -> dict:
    """Put settled money in a user's wallet: cash received (clearing) owed to the user."""
    resp = await api.post("/v1/admin/adjustments", headers=admin.headers, json={
        "reason": "test credit",
        "legs": [{"platform": "clearing", "direction": "debit", "amount": amount},
                 {"user_id": user.id, "direction": "credit", "amount": amount}],
    })
    assert resp.status == 201, await resp.text()
    return await resp.json()
