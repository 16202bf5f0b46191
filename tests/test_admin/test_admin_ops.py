"""Admin endpoints: KYC, off-Stripe funding, adjustments, and the settler's jobs on demand."""

from __future__ import annotations

import uuid

from admin_api.app import create_app
from settler.reconcile import reconcile_and_record

from admin_flows import assert_error, create_campaign, fund


async def test_admin_endpoints_refuse_non_admins(api, make_user):
    user = make_user("business", "creator", "supporter")
    some_id = str(uuid.uuid4())
    for method, path in [("POST", f"/v1/admin/users/{some_id}/kyc"), ("POST", f"/v1/admin/campaigns/{some_id}/funding"),
                         ("POST", "/v1/admin/adjustments"), ("GET", "/v1/admin/reconcile"),
                         ("POST", "/v1/admin/settlements"), ("GET", "/v1/admin/settlements"),
                         ("POST", "/v1/admin/holds/release"), ("POST", "/v1/admin/payouts")]:
        resp = await api.request(method, path, json={}, headers=user.headers)
        assert resp.status == 403, path
        assert_error(await resp.json(), "forbidden")
        assert (await api.request(method, path, json={})).status == 401


async def test_kyc(api, make_user, admin):
    user = make_user("creator")
    resp = await api.post(f"/v1/admin/users/{user.id}/kyc", json={"status": "approved"}, headers=admin.headers)
    assert resp.status == 200
    assert (await resp.json())["kyc_status"] == "approved"
    resp = await api.post(f"/v1/admin/users/{user.id}/kyc", json={"status": "maybe"}, headers=admin.headers)
    assert_error(await resp.json(), "invalid", "status")
    resp = await api.post(f"/v1/admin/users/{uuid.uuid4()}/kyc", json={"status": "approved"}, headers=admin.headers)
    assert resp.status == 404
    resp = await api.post("/v1/admin/users/00000000-0000-0000-0000-000000000001/kyc", json={"status": "rejected"},
                          headers=admin.headers)
    assert resp.status == 404  # the system user is not a user to manage


async def test_funding_credits_escrow_and_budget(api, make_user, admin, pg):
    business = make_user("business")
    campaign = await create_campaign(api, business, total_budget="50.00")
    funding = await fund(api, admin, campaign["id"], "80.00")
    assert funding["created_by"] == admin.id and funding["reference"] == "wire 42"
    row = pg.execute("SELECT remaining_budget, funded_budget, total_budget FROM campaigns WHERE id = %s",
                     (campaign["id"],)).fetchone()
    assert [str(v) for v in row.values()] == ["80.00", "80.00", "80.00"]
    escrow = pg.execute("SELECT available_balance FROM wallets WHERE id = oros_platform_wallet('escrow')").fetchone()
    assert str(escrow["available_balance"]) == "80.00"

    url = f"/v1/admin/campaigns/{campaign['id']}/funding"
    for body, field in [({"amount": "0.00", "reference": "x"}, "amount"), ({"amount": "5.00"}, "reference"),
                        ({"amount": 5.5, "reference": "x"}, "amount")]:
        resp = await api.post(url, json=body, headers=admin.headers)
        assert_error(await resp.json(), "invalid", field)
    resp = await api.post(f"/v1/admin/campaigns/{uuid.uuid4()}/funding", json={"amount": "5.00", "reference": "x"},
                          headers=admin.headers)
    assert resp.status == 404
    # A retried funding with the same Idempotency-Key is recorded once.
    headers = {**admin.headers, "Idempotency-Key": "wire-7"}
    first = await api.post(url, json={"amount": "5.00", "reference": "wire 7"}, headers=headers)
    again = await api.post(url, json={"amount": "5.00", "reference": "wire 7"}, headers=headers)
    assert first.status == again.status == 201 and (await first.json()) == (await again.json())
    row = pg.execute("SELECT remaining_budget FROM campaigns WHERE id = %s", (campaign["id"],)).fetchone()
    assert str(row["remaining_budget"]) == "85.00"
    # The business sees its fundings' effect through the campaign.
    seen = await (await api.get(f"/v1/campaigns/{campaign['id']}", headers=business.headers)).json()
    assert seen["remaining_budget"] == "85.00"


async def test_adjustments_are_balanced_and_reasoned(api, make_user, admin, pg):
    user = make_user("creator")
    url = "/v1/admin/adjustments"
    ok = {"reason": "goodwill", "legs": [{"platform": "clearing", "direction": "debit", "amount": "7.00"},
                                         {"user_id": user.id, "direction": "credit", "amount": "7.00"}]}
    resp = await api.post(url, json=ok, headers=admin.headers)
    assert resp.status == 201
    body = await resp.json()
    assert len(body["entries"]) == 2 and {e["transfer_id"] for e in body["entries"]} == {body["transfer_id"]}
    assert body["entries"][0]["metadata"] == {"reason": "goodwill", "admin_id": admin.id}
    before = pg.execute("SELECT count(*) AS n FROM ledger_entries").fetchone()["n"]

    unbalanced = {**ok, "legs": [ok["legs"][0], {**ok["legs"][1], "amount": "6.00"}]}
    assert_error(await (await api.post(url, json=unbalanced, headers=admin.headers)).json(), "invalid", "legs")
    assert_error(await (await api.post(url, json={"legs": ok["legs"]}, headers=admin.headers)).json(),
                 "invalid", "reason")
    escrow = {**ok, "legs": [{"platform": "escrow", "direction": "debit", "amount": "7.00"}, ok["legs"][1]]}
    assert_error(await (await api.post(url, json=escrow, headers=admin.headers)).json(),
                 "invalid", "legs[0].platform")
    unknown = {**ok, "legs": [ok["legs"][0], {"user_id": str(uuid.uuid4()), "direction": "credit", "amount": "7.00"}]}
    assert_error(await (await api.post(url, json=unknown, headers=admin.headers)).json(), "invalid", "legs[1]")
    overdraw = {"reason": "claw back", "legs": [{"user_id": user.id, "direction": "debit", "amount": "8.00"},
                                                {"platform": "fees", "direction": "credit", "amount": "8.00"}]}
    resp = await api.post(url, json=overdraw, headers=admin.headers)
    assert resp.status == 422
    assert_error(await resp.json(), "insufficient_funds", "legs")
    bad_amount = {**ok, "legs": [{**ok["legs"][0], "amount": "-1"}, ok["legs"][1]]}
    assert_error(await (await api.post(url, json=bad_amount, headers=admin.headers)).json(),
                 "invalid", "legs[0].amount")
    assert pg.execute("SELECT count(*) AS n FROM ledger_entries").fetchone()["n"] == before


async def test_settlement_reconcile_and_holds_on_demand(api, make_user, admin):
    business = make_user("business")
    campaign = await create_campaign(api, business)
    await fund(api, admin, campaign["id"], "30.00")

    resp = await api.get("/v1/admin/reconcile", headers=admin.headers)
    assert resp.status == 200
    report = await resp.json()
    assert report["ok"] is True, report
    assert {c["name"] for c in report["checks"]} >= {"paid_events_match_clickhouse"}

    resp = await api.post("/v1/admin/settlements", headers=admin.headers)
    assert resp.status == 200, await resp.text()
    resp = await api.post("/v1/admin/holds/release", headers=admin.headers)
    assert (await resp.json()) == {"released": 0}
    runs = await (await api.get("/v1/admin/settlements", params={"limit": "1"}, headers=admin.headers)).json()
    assert len(runs["items"]) == 1 and runs["next_cursor"] is not None
    rest = await (await api.get("/v1/admin/settlements", params={"cursor": runs["next_cursor"]},
                                headers=admin.headers)).json()
    assert {r["kind"] for r in runs["items"] + rest["items"]} == {"settle", "release_holds"}


async def test_an_api_given_no_jobs_leaves_them_to_the_settler(aiohttp_client, settings, admin):
    """Only an entrypoint hands the API the settler's jobs; without them, even as the owner, they are refused."""
    bare = await aiohttp_client(create_app(settings))
    for method, path in [("GET", "/v1/admin/reconcile"), ("POST", "/v1/admin/settlements"),
                         ("POST", "/v1/admin/holds/release")]:
        resp = await bare.request(method, path, headers=admin.headers)
        assert resp.status == 503, path
        assert_error(await resp.json(), "runs_in_settler")


async def test_the_schedulers_reconcile_is_kept_for_finance(api, admin, settings, pg):
    """The scheduler's reconcile job keeps its result as a run; finance reads the last one by kind."""
    assert [c.name for c in reconcile_and_record(settings) if not c.ok] == []
    await api.post("/v1/admin/holds/release", headers=admin.headers)  # a run of another kind, left out below
    pg.execute("UPDATE wallets SET available_balance = available_balance + 1"
               " WHERE id = (SELECT id FROM wallets ORDER BY id LIMIT 1)")
    failing = [c.name for c in reconcile_and_record(settings) if not c.ok]
    assert failing
    resp = await api.get("/v1/admin/settlements", params={"kind": "reconcile"}, headers=admin.headers)
    runs = (await resp.json())["items"]
    assert [r["kind"] for r in runs] == ["reconcile", "reconcile"]
    last, first = runs
    assert (last["status"], last["report"]["ok"], last["error"]) == ("failed", False, f"failing: {', '.join(failing)}")
    assert [c["name"] for c in last["report"]["checks"] if not c["ok"]] == failing
    assert (first["status"], first["report"]["ok"], first["error"]) == ("succeeded", True, None)
    for bad in ("settles", "", "%FF"):
        resp = await api.get("/v1/admin/settlements", params={"kind": bad}, headers=admin.headers)
        assert resp.status == 422 and (await resp.json())["error"]["field"] == "kind", bad
