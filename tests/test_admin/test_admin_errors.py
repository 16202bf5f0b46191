"""Every failure answers in the contract's error shape; bad input is never a 500."""

from __future__ import annotations

from admin_api.app import MAX_BODY_BYTES

from admin_flows import assert_error


async def test_bad_json_is_400_and_non_objects_422(api, make_user):
    business = make_user("business")
    headers = {**business.headers, "Content-Type": "application/json"}
    resp = await api.post("/v1/campaigns", data=b"{not json", headers=headers)
    assert resp.status == 400
    assert_error(await resp.json(), "bad_json")
    resp = await api.post("/v1/campaigns", data=b"[1, 2]", headers=headers)
    assert resp.status == 422
    assert_error(await resp.json(), "invalid", "body")
    resp = await api.post("/v1/auth/signup", data=b"\xff\xfe", headers={"Content-Type": "application/json"})
    assert resp.status == 400


async def test_oversized_body_is_413(api):
    resp = await api.post("/v1/auth/login", data=b"x" * (MAX_BODY_BYTES + 1),
                          headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert_error(await resp.json(), "payload_too_large")


async def test_unknown_route_method_and_ids(api, make_user):
    user = make_user("business")
    resp = await api.get("/v1/nope", headers=user.headers)
    assert resp.status == 404
    assert_error(await resp.json(), "not_found")
    resp = await api.put("/v1/wallet", headers=user.headers)
    assert resp.status == 405
    assert_error(await resp.json(), "method_not_allowed")
    for path in ["/v1/campaigns/not-a-uuid", "/v1/campaigns/%00", "/v1/withdrawals/123"]:
        resp = await api.get(path, headers=user.headers)
        assert resp.status == 404, path
        assert_error(await resp.json(), "not_found")


async def test_hostile_values_are_refused_not_crashed(api, make_user):
    business = make_user("business")
    base = {"title": "t", "objective": "click", "payout_per_action": "1.00", "total_budget": "10.00",
            "destination_url": "https://x.example/"}
    hostile = [("title", "a\x00b"), ("total_budget", "99999999999.00"), ("total_budget", "NaN"),
               ("total_budget", "Infinity"), ("payout_per_action", True), ("hashtags", [1, 2]),
               ("hashtags", ["x" * 51]), ("start_date", "99999-01-01"), ("end_date", 12), ("title", {"a": 1}),
               ("destination_url", "http://"), ("destination_url", "https://a.example/\r\nX: y")]
    for field, value in hostile:
        resp = await api.post("/v1/campaigns", json={**base, field: value}, headers=business.headers)
        assert resp.status == 422, (field, value, await resp.text())
        assert_error(await resp.json(), "invalid", field)
    resp = await api.get("/v1/campaigns", params={"hashtag": "a\x00b"})
    assert_error(await resp.json(), "invalid", "hashtag")
    resp = await api.post("/v1/auth/signup", json={"email": "a\x00@example.com", "password": "long enough",
                                                   "roles": ["creator"]})
    assert_error(await resp.json(), "invalid", "email")
    resp = await api.get("/v1/campaigns", params={"status": "weird"})
    assert_error(await resp.json(), "invalid", "status")
    resp = await api.get("/v1/campaigns", params={"mine": "true"})
    assert resp.status == 401
