"""Wallets, ledgers and withdrawals over HTTP, with RLS deciding who sees what."""

from __future__ import annotations

import asyncio

from admin_flows import assert_error, credit


async def test_wallet_and_ledger_are_the_callers_own(api, make_user, admin):
    alice, bob = make_user("creator"), make_user("creator")
    await credit(api, admin, alice, "25.00")
    wallet = await (await api.get("/v1/wallet", headers=alice.headers)).json()
    assert wallet["available_balance"] == "25.00" and wallet["pending_balance"] == "0.00"
    assert wallet["user_id"] == alice.id
    ledger = await (await api.get("/v1/wallet/ledger", headers=alice.headers)).json()
    assert [(e["amount"], e["direction"], e["status"]) for e in ledger["items"]] == [("25.00", "credit", "settled")]

    bobs = await (await api.get("/v1/wallet", headers=bob.headers)).json()
    assert bobs["id"] != wallet["id"] and bobs["available_balance"] == "0.00"
    assert (await (await api.get("/v1/wallet/ledger", headers=bob.headers)).json())["items"] == []


async def test_withdrawal_reserves_at_once_and_is_private(api, make_user, admin, pg):
    alice = make_user("creator", kyc="approved", stripe_account="acct_alice")
    bob = make_user("creator", kyc="approved", stripe_account="acct_bob")
    await credit(api, admin, alice, "100.00")
    resp = await api.post("/v1/withdrawals", json={"amount": "60.00", "method": "ach"}, headers=alice.headers)
    assert resp.status == 201, await resp.text()
    withdrawal = await resp.json()
    assert withdrawal["status"] == "requested" and withdrawal["amount"] == "60.00"
    wallet = await (await api.get("/v1/wallet", headers=alice.headers)).json()
    assert wallet["available_balance"] == "40.00"

    resp = await api.post("/v1/withdrawals", json={"amount": "60.00", "method": "ach"}, headers=alice.headers)
    assert resp.status == 422
    assert_error(await resp.json(), "insufficient_funds", "amount")

    mine = await (await api.get("/v1/withdrawals", headers=alice.headers)).json()
    assert [w["id"] for w in mine["items"]] == [withdrawal["id"]]
    assert (await (await api.get("/v1/withdrawals", headers=bob.headers)).json())["items"] == []
    assert (await api.get(f"/v1/withdrawals/{withdrawal['id']}", headers=bob.headers)).status == 404
    assert (await api.get(f"/v1/withdrawals/{withdrawal['id']}", headers=alice.headers)).status == 200
    legs = pg.execute("SELECT direction, status FROM ledger_entries WHERE source_id = %s ORDER BY direction",
                      (withdrawal["id"],)).fetchall()
    assert legs == [{"direction": "credit", "status": "pending"}, {"direction": "debit", "status": "pending"}]


async def test_concurrent_withdrawals_cannot_double_spend(api, make_user, admin):
    alice = make_user("creator", kyc="approved", stripe_account="acct_alice")
    await credit(api, admin, alice, "100.00")
    responses = await asyncio.gather(*[
        api.post("/v1/withdrawals", json={"amount": "30.00", "method": "instant"}, headers=alice.headers)
        for _ in range(5)
    ])
    assert sorted(r.status for r in responses) == [201, 201, 201, 422, 422]
    wallet = await (await api.get("/v1/wallet", headers=alice.headers)).json()
    assert wallet["available_balance"] == "10.00"


async def test_withdrawal_preconditions(api, make_user, admin, settings):
    pending_kyc = make_user("creator", stripe_account="acct_x")
    no_account = make_user("creator", kyc="approved")
    ready = make_user("creator", kyc="approved", stripe_account="acct_ready")
    supporter = make_user("supporter", kyc="approved")
    for user in (pending_kyc, no_account, ready):
        await credit(api, admin, user, "50.00")
    body = {"amount": "20.00", "method": "card"}
    resp = await api.post("/v1/withdrawals", json=body, headers=pending_kyc.headers)
    assert resp.status == 403
    assert_error(await resp.json(), "kyc_required")
    resp = await api.post("/v1/withdrawals", json=body, headers=no_account.headers)
    assert resp.status == 409
    assert_error(await resp.json(), "payout_account_required", "stripe_account_id")
    # A supporter withdraws its rewards like earnings, to its payout account (PUT /v1/me/payout-account).
    resp = await api.post("/v1/withdrawals", json=body, headers=supporter.headers)
    assert_error(await resp.json(), "payout_account_required", "stripe_account_id")
    assert (await api.post("/v1/withdrawals", json=body, headers=make_user("business").headers)).status == 403
    below = str(settings.min_withdrawal - 1)
    for field, value in [("amount", below), ("amount", "ten"), ("amount", 20.0), ("amount", None),
                         ("method", "wire"), ("method", None)]:
        resp = await api.post("/v1/withdrawals", json={**body, field: value}, headers=ready.headers)
        assert resp.status == 422, (field, value)
        assert_error(await resp.json(), "invalid", field)
    wallet = await (await api.get("/v1/wallet", headers=ready.headers)).json()
    assert wallet["available_balance"] == "50.00"  # nothing half-written by the refusals


async def test_idempotency_key_makes_a_retry_return_the_first_withdrawal(api, make_user, admin):
    alice = make_user("creator", kyc="approved", stripe_account="acct_alice")
    await credit(api, admin, alice, "100.00")
    headers = {**alice.headers, "Idempotency-Key": "wd-1"}
    first = await api.post("/v1/withdrawals", json={"amount": "30.00", "method": "ach"}, headers=headers)
    again = await api.post("/v1/withdrawals", json={"amount": "30.00", "method": "ach"}, headers=headers)
    assert first.status == again.status == 201
    assert (await first.json()) == (await again.json())
    wallet = await (await api.get("/v1/wallet", headers=alice.headers)).json()
    assert wallet["available_balance"] == "70.00"

    resp = await api.post("/v1/withdrawals", json={"amount": "31.00", "method": "ach"}, headers=headers)
    assert resp.status == 422
    assert_error(await resp.json(), "idempotency_key_reused", "Idempotency-Key")
    resp = await api.post("/v1/withdrawals", json={"amount": "30.00", "method": "ach"},
                          headers={**alice.headers, "Idempotency-Key": "bad key!"})
    assert_error(await resp.json(), "invalid", "Idempotency-Key")

    # Concurrent requests with one key move the money once.
    headers = {**alice.headers, "Idempotency-Key": "wd-2"}
    responses = await asyncio.gather(*[
        api.post("/v1/withdrawals", json={"amount": "20.00", "method": "ach"}, headers=headers) for _ in range(4)
    ])
    assert {r.status for r in responses} <= {201, 409} and 201 in {r.status for r in responses}
    assert len({(await r.json())["id"] for r in responses if r.status == 201}) == 1
    wallet = await (await api.get("/v1/wallet", headers=alice.headers)).json()
    assert wallet["available_balance"] == "50.00"
    # Keys are per caller: bob's "wd-1" is his own.
    bob = make_user("creator", kyc="approved", stripe_account="acct_bob")
    await credit(api, admin, bob, "50.00")
    resp = await api.post("/v1/withdrawals", json={"amount": "30.00", "method": "ach"},
                          headers={**bob.headers, "Idempotency-Key": "wd-1"})
    assert resp.status == 201 and (await resp.json())["id"] != (await first.json())["id"]
