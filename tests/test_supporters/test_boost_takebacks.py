"""A boost's payment taken back (refund, dispute): its unspent part leaves the budget, its spent part is owed by the
supporter; a business's card funding taken back never takes the boosters' money; settlers and a boost at once."""

from __future__ import annotations

import asyncio

import pytest

from oros.connections import pg_connect

from boost_flows import (
    activate,
    boost,
    budget,
    card_funded,
    cents,
    clicks,
    complete,
    creator_on,
    held,
    open_boost,
    reward,
    settle,
)
from interleave import until, waiting
from supporter_flows import D


async def test_a_boost_refunded_then_disputed_then_won(flows, world):
    business, supporter = flows.user("business"), flows.user("supporter")
    campaign = world.campaign(business.id, payout="1.00", fund="50.00")
    b, pi = await boost(flows, supporter, campaign, "50.00")
    await clicks(flows, world, campaign, creator_on(flows, world, campaign), 20)  # the boost paid 10.00 of 20.00
    assert held(flows, b) == D("40.00")

    status, body = await flows.send(*flows.refunded(pi, "50.00", "20.00"))

    assert (status, body["kind"], body["outcome"], body["taken_back"]) == (200, "boost", "recovered_from_escrow",
                                                                          "20.00")
    assert budget(flows, campaign)[1:] == (D("80.00"), D("60.00"), "active") and held(flows, b) == D("20.00")
    flows.assert_books()

    # The rest disputed: 20.00 still unspent comes back out of the budget, the 10.00 spent on clicks is owed.
    status, body = await flows.send(*flows.disputed("charge.dispute.created", pi, "30.00", "needs_response", "dp_b"))

    assert (status, body["outcome"]) == (200, "receivable")
    assert budget(flows, campaign)[1:] == (D("60.00"), D("40.00"), "active")  # not frozen: the business did nothing
    assert held(flows, b) == D("0.00") and flows.owed(supporter) == D("10.00")
    assert flows.wallet(supporter) == (D("0.00"), D("0.00"))  # never negative
    flows.assert_books()

    await flows.send(*flows.disputed("charge.dispute.closed", pi, "30.00", "won", "dp_b"))

    assert flows.owed(supporter) == D("0.00") and held(flows, b) == D("20.00")  # the debt first, the rest back in
    assert budget(flows, campaign)[1:3] == (D("80.00"), D("60.00"))
    flows.assert_books()
    await complete(flows, business, campaign)
    assert reward(flows, b)["amount"] == D("0.50")  # 5 % of 50 - 20 taken back - 20 unspent
    flows.assert_books()


async def test_a_business_card_taken_back_recovers_only_the_business_s_unspent_money(flows, world):
    business, supporter = flows.user("business"), flows.user("supporter")
    campaign, (pi,) = await card_funded(flows, world, business, "40.00")
    await activate(flows, business, campaign)
    b, boost_pi = await boost(flows, supporter, campaign, "60.00")
    await clicks(flows, world, campaign, creator_on(flows, world, campaign), 50)  # business 20 and boost 30 left

    status, body = await flows.send(*flows.disputed("charge.dispute.created", pi, "40.00", "needs_response", "dp_f"))

    assert (status, body["kind"], body["outcome"]) == (200, "funding", "receivable")
    assert budget(flows, campaign)[1:] == (D("80.00"), D("30.00"), "paused")
    assert held(flows, b) == D("30.00") and flows.owed(business) == D("20.00")  # the boost keeps its 30.00
    flows.assert_books()

    # The boost, now all the escrow holds, refunded whole: the pool empties.
    status, body = await flows.send(*flows.refunded(boost_pi, "60.00", "60.00"))
    assert (status, body["outcome"]) == (200, "receivable")  # 30.00 back from escrow, the 30.00 spent owed
    assert budget(flows, campaign)[1:3] == (D("50.00"), D("0.00")) and flows.owed(supporter) == D("30.00")
    flows.assert_books()


async def _until_waiting(flows, n: int) -> None:
    """Until ``n`` backends wait on a lock (polled in a thread: the webhook's request runs on this loop)."""
    await asyncio.to_thread(until, lambda: waiting(flows.pg) == n)


@pytest.mark.parametrize("first", ["boost", "settlement"])
async def test_two_settlers_and_a_boost_webhook_at_once_keep_budget_and_escrow_consistent(flows, world, first):
    """The boost's credit and the settlement both lock the campaign's row; a gate holds it while both queue up
    behind it in the order under test (the second settler waits on the settle lock), then lets them go."""
    supporter = flows.user("supporter")
    campaign = world.campaign(payout="1.00", fund="10.00")
    creator = creator_on(flows, world, campaign)
    world.put([world.click(campaign, creator) for _ in range(15)])
    intent = await open_boost(flows, supporter, campaign, "5.00")

    def webhook():
        return asyncio.ensure_future(flows.send(*flows.succeeded(intent["stripe_payment_intent_id"], cents("5.00"))))

    with pg_connect(flows.settings) as gate:
        gate.execute("SELECT 1 FROM campaigns WHERE id = %s FOR UPDATE", (campaign,))
        if first == "boost":
            credit = webhook()
            await _until_waiting(flows, 1)
            settlers = asyncio.gather(settle(flows), settle(flows))
        else:
            settlers = asyncio.gather(settle(flows), settle(flows))
            await _until_waiting(flows, 2)  # one settler on the campaign's row, the other on the settle lock
            credit = webhook()
        await _until_waiting(flows, 3)
        gate.rollback()
        reports, (status, body) = await settlers, await credit

    paid = flows.pg.execute("SELECT count(*) AS n FROM events WHERE status = 'paid'").fetchone()["n"]
    assert status == 200 and sum(r["events_paid"] for r in reports) == paid
    assert budget(flows, campaign)[2:] == (D("0.00"), "completed")
    if first == "boost":  # it paid 5 of the 15 clicks, its reward 0.25 paid at completion
        assert paid == 15 and reward(flows, body["boost_id"])["amount"] == D("0.25")
        assert flows.platform("escrow")[0] == D("0.00")
    else:  # the settlement exhausted the budget: the boost arrived at a completed campaign, refunded at once
        assert paid == 10 and body["outcome"] == "refunded"
        assert flows.billing.refunded(intent["stripe_payment_intent_id"]) == 500
    flows.assert_books()


async def withdraw_all(flows, user) -> None:
    put = await flows.api.put("/v1/me/payout-account", json={"stripe_account_id": "acct_b"}, headers=user.headers)
    assert put.status == 200, await put.text()
    available = flows.wallet(user)[0]
    resp = await flows.api.post("/v1/withdrawals", json={"amount": str(available), "method": "ach"},
                                headers=user.headers)
    assert resp.status == 201, await resp.text()


async def test_a_boost_disputed_after_its_reward_was_withdrawn_owes_the_reward_too(flows, world):
    """The attack: boost, the campaign completes, the reward is released and withdrawn, then the card payment is
    disputed. The spent boost is owed, and so is the reward earned on it."""
    business, supporter = flows.user("business"), flows.user("supporter")
    campaign = world.campaign(business.id, payout="10.00", fund="100.00")
    b, pi = await boost(flows, supporter, campaign, "300.00")
    await clicks(flows, world, campaign, creator_on(flows, world, campaign), 40)  # the boost paid 300.00 of 400.00
    assert budget(flows, campaign)[2:] == (D("0.00"), "completed")
    assert (reward(flows, b)["status"], reward(flows, b)["amount"]) == ("paid", D("15.00"))
    flows.release_holds()
    await withdraw_all(flows, supporter)
    assert flows.wallet(supporter) == (D("0.00"), D("0.00"))

    status, body = await flows.send(*flows.disputed("charge.dispute.created", pi, "300.00", "needs_response", "dp_w"))

    assert (status, body["kind"], body["outcome"]) == (200, "boost", "receivable")
    assert flows.owed(supporter) == D("300.00") + D("15.00")  # the spent boost, and the reward it earned
    assert reward(flows, b)["amount"] == D("0.00")
    flows.assert_books()


async def test_a_boost_refunded_in_part_while_its_reward_is_held_lowers_the_reward(flows, world):
    business, supporter = flows.user("business"), flows.user("supporter")
    campaign = world.campaign(business.id, payout="1.00", fund="10.00")
    b, pi = await boost(flows, supporter, campaign, "10.00")
    await clicks(flows, world, campaign, creator_on(flows, world, campaign), 20)  # the boost paid 10.00 of 20.00
    assert (reward(flows, b)["status"], reward(flows, b)["amount"]) == ("paid", D("0.50"))
    assert flows.wallet(supporter) == (D("0.00"), D("0.50"))  # held

    status, body = await flows.send(*flows.refunded(pi, "10.00", "4.00"))

    assert (status, body["outcome"]) == (200, "receivable")
    # 4.00 of what it paid for taken back and owed: the reward, on 6.00 now, is booked again at 0.30, which
    # repays the debt first (as every credit of a supporter that owes); never a negative balance.
    assert reward(flows, b)["amount"] == D("0.30")
    assert flows.wallet(supporter) == (D("0.00"), D("0.00")) and flows.owed(supporter) == D("3.70")
    flows.assert_books()
