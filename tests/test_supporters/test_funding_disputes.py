"""Card fundings taken back: a dispute freezes the campaign, recovers unspent escrow and bills the rest to the
business; a refund recovers escrow; a funding that would overflow its budget is refused with a 2xx, not a 500."""

from __future__ import annotations

from decimal import Decimal

from settler.run import settle_once

from supporter_flows import D, join


async def funded(flows, world, business, amount: str, *, payout: str = "10.00") -> tuple[str, str]:
    """A campaign of ``business`` funded by card through the API and Stripe's webhook: (campaign, PaymentIntent)."""
    campaign = world.campaign(business.id, payout=payout, fund=None, status="draft")
    resp = await flows.api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": amount}, headers=business.headers)
    assert resp.status == 201, await resp.text()
    pi = (await resp.json())["payment_intent_id"]
    status, body = await flows.send(*flows.succeeded(pi, int(Decimal(amount) * 100)))
    assert (status, body["status"]) == (200, "applied"), body
    return campaign, pi


def budget(flows, campaign: str) -> tuple[Decimal, Decimal, str]:
    row = flows.pg.execute("SELECT funded_budget, remaining_budget, status FROM campaigns WHERE id = %s",
                           (campaign,)).fetchone()
    return row["funded_budget"], row["remaining_budget"], row["status"]


async def test_a_disputed_funding_freezes_the_campaign_recovers_escrow_and_bills_the_rest(flows, world):
    business = flows.user("business")
    campaign, pi = await funded(flows, world, business, "100.00")
    assert (await flows.api.post(f"/v1/campaigns/{campaign}/activate", headers=business.headers)).status == 200
    creator = join(world, campaign, flows.user("creator").id)
    world.put([world.click(campaign, creator) for _ in range(7)])
    settle_once(flows.settings)  # 70.00 spent
    assert budget(flows, campaign) == (D("100.00"), D("30.00"), "active")

    status, body = await flows.send(*flows.disputed("charge.dispute.created", pi, "100.00", "needs_response",
                                                    "dp_fund"))

    assert (status, body["kind"], body["outcome"]) == (200, "funding", "receivable")
    assert budget(flows, campaign) == (D("70.00"), D("0.00"), "paused")  # frozen, unspent escrow recovered
    assert flows.owed(business) == D("70.00")  # what the creators earned stays theirs
    assert flows.wallet(creator[0])[1] == D("63.00")
    flows.assert_books()
    refused = await flows.api.post(f"/v1/campaigns/{campaign}/activate", headers=business.headers)
    assert (refused.status, (await refused.json())["error"]["code"]) == (409, "campaign_frozen")

    await flows.send(*flows.disputed("charge.dispute.closed", pi, "100.00", "won", "dp_fund"))

    assert budget(flows, campaign) == (D("100.00"), D("30.00"), "paused") and flows.owed(business) == D("0.00")
    flows.assert_books()
    assert (await flows.api.post(f"/v1/campaigns/{campaign}/activate", headers=business.headers)).status == 200


async def test_a_lost_dispute_leaves_the_business_owing_and_unable_to_activate(flows, world):
    business = flows.user("business")
    campaign, pi = await funded(flows, world, business, "50.00")
    other, _ = await funded(flows, world, business, "20.00")
    await flows.api.post(f"/v1/campaigns/{campaign}/activate", headers=business.headers)
    creator = join(world, campaign, flows.user("creator").id)
    world.put([world.click(campaign, creator) for _ in range(4)])
    settle_once(flows.settings)  # 40.00 spent

    for kind, status in (("charge.dispute.created", "needs_response"), ("charge.dispute.closed", "lost")):
        await flows.send(*flows.disputed(kind, pi, "50.00", status, "dp_lost"))

    assert budget(flows, campaign)[:2] == (D("40.00"), D("0.00")) and flows.owed(business) == D("40.00")
    resp = await flows.api.post(f"/v1/campaigns/{other}/activate", headers=business.headers)
    assert (resp.status, (await resp.json())["error"]["code"]) == (409, "business_owes")
    # The database refuses it too, whoever asks.
    try:
        flows.pg.execute("UPDATE campaigns SET status = 'active' WHERE id = %s", (other,))
        raise AssertionError("activated a campaign of a business that owes")
    except Exception as exc:  # noqa: BLE001 - psycopg's CheckViolation, named in the message
        assert "business_owes" in str(exc)
    flows.assert_books()


async def test_a_refunded_funding_gives_back_its_unspent_escrow(flows, world):
    business = flows.user("business")
    campaign, pi = await funded(flows, world, business, "80.00")

    status, body = await flows.send(*flows.refunded(pi, "80.00", "30.00"))

    assert (status, body["outcome"]) == (200, "recovered_from_escrow")
    assert budget(flows, campaign) == (D("50.00"), D("50.00"), "draft")  # a refund freezes nothing
    assert flows.platform("clearing")[0] == D("50.00") and flows.owed(business) == D("0.00")
    flows.assert_books()


async def test_a_funding_that_would_overflow_the_budget_is_refused_with_a_2xx(flows, world, caplog):
    business = flows.user("business")
    campaign = world.campaign(business.id, fund="9999999990.00", status="draft")
    resp = await flows.api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": "20.00"}, headers=business.headers)
    body = await resp.json()

    status, answer = await flows.send(*flows.succeeded(body["payment_intent_id"], 2000))
    again = await flows.send(*flows.succeeded(body["payment_intent_id"], 2000))

    assert (status, answer["status"]) == (200, "ignored") and "overflow" in answer["reason"]
    assert again[0] == 200
    row = flows.pg.execute("SELECT status, refusal_reason FROM campaign_fundings WHERE id = %s",
                           (body["id"],)).fetchone()
    assert row["status"] == "refused" and "overflow" in row["refusal_reason"]
    assert budget(flows, campaign)[0] == D("9999999990.00")
    assert any(r.levelname == "ERROR" for r in caplog.records)
    flows.assert_books()
