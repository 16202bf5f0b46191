"""``POST /v1/admin/payouts``: finance pays the due withdrawals now, through the payout job, each at most once."""

from __future__ import annotations

from dataclasses import replace

import pytest

from admin_api.app import create_app
from oros.connections import pg_connect
from oros.locks import PAYOUTS_LOCK
from settler.jobs import OWNER_JOBS

from admin_flows import assert_error, credit
from stripe_double import StripeDouble


@pytest.fixture
def double():
    server = StripeDouble().start()
    yield server
    server.stop()


@pytest.fixture
async def paying_api(aiohttp_client, settings, double):
    return await aiohttp_client(create_app(replace(settings, stripe_api_base=double.url), OWNER_JOBS))


async def test_pay_due_withdrawals_now_pays_each_once(paying_api, make_user, admin, double, pg):
    api = paying_api
    double.accounts.add("acct_maya")
    maya = make_user("creator", kyc="approved", stripe_account="acct_maya")
    nobody = make_user("creator", kyc="approved", stripe_account="acct_gone")  # Stripe does not know it
    for creator in (maya, nobody):
        await credit(api, admin, creator, "50.00")
        resp = await api.post("/v1/withdrawals", json={"amount": "20.00", "method": "ach"}, headers=creator.headers)
        assert resp.status == 201, await resp.text()

    assert (await api.post("/v1/admin/payouts", headers=maya.headers)).status == 403
    resp = await api.post("/v1/admin/payouts", headers=admin.headers)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"paid": 1, "failed": 1, "deferred": 0, "amount_paid": "20.00"}
    assert [t["destination"] for t in double.transfers] == ["acct_maya"]
    # Pressed again: nothing is due, nothing is paid twice.
    assert await (await api.post("/v1/admin/payouts", headers=admin.headers)).json() == {
        "paid": 0, "failed": 0, "deferred": 0, "amount_paid": "0.00"}
    assert len(double.transfers) == 1
    listed = await (await api.get("/v1/admin/withdrawals", params={"status": "completed"},
                                  headers=admin.headers)).json()
    assert [w["amount"] for w in listed["items"]] == ["20.00"]


async def test_a_run_in_progress_is_a_conflict(paying_api, admin, settings):
    with pg_connect(settings, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (PAYOUTS_LOCK,))  # the scheduled run, mid-way
        resp = await paying_api.post("/v1/admin/payouts", headers=admin.headers)
        conn.execute("SELECT pg_advisory_unlock(%s)", (PAYOUTS_LOCK,))
    assert resp.status == 409
    assert_error(await resp.json(), "payouts_running")


async def test_only_an_api_running_the_settler_jobs_pays(aiohttp_client, settings, admin):
    bare = await aiohttp_client(create_app(settings))
    resp = await bare.post("/v1/admin/payouts", headers=admin.headers)
    assert resp.status == 503
    assert_error(await resp.json(), "runs_in_settler")
    no_stripe = await aiohttp_client(create_app(replace(settings, stripe_api_key=None), OWNER_JOBS))
    resp = await no_stripe.post("/v1/admin/payouts", headers=admin.headers)
    assert resp.status == 503
    assert_error(await resp.json(), "stripe_not_configured")
