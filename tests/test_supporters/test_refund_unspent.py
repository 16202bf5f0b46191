"""A completed campaign's unspent budget given back: boosters pro rata, the business to its cards newest first."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from settler.reconcile import reconcile
from settler.run import settle_once
from settler.unspent import refund_unspent as refund_unspent_job

from boost_flows import (
    activate,
    boost,
    budget,
    card_funded,
    cents,
    clicks,
    complete,
    creator_on,
    send_pending_refunds,
    settle,
)
from factories import now_ms
from supporter_flows import D


async def refund_unspent(flows, user, campaign: str, **headers) -> tuple[int, dict]:
    resp = await flows.api.post(f"/v1/campaigns/{campaign}/refund-unspent", headers={**user.headers, **headers})
    return resp.status, await resp.json()


async def test_unspent_money_goes_back_to_each_payer_to_the_cent(flows, world):
    business = flows.user("business")
    # 20.00 off-Stripe, then 60.00 and 40.00 by card; three boosts of 10.00: 150.00 in all.
    campaign, (older, newer) = await card_funded(flows, world, business, "60.00", "40.00", manual="20.00")
    await activate(flows, business, campaign)
    boosters = [flows.user("supporter") for _ in range(3)]
    boosts = [await boost(flows, s, campaign, "10.00") for s in boosters]
    await clicks(flows, world, campaign, creator_on(flows, world, campaign), 1)  # 149.00 left
    await complete(flows, business, campaign)

    status, early = await refund_unspent(flows, business, campaign)
    assert (status, early["error"]["code"]) == (409, "settlement_pending")  # its last events may be in flight
    await settle(flows)
    flows.billing.refund_faults = ["outage"]  # the first refund sent meets a Stripe outage
    status, body = await refund_unspent(flows, business, campaign, **{"Idempotency-Key": "refund-1"})

    # Each boost holds 10 x 149/150 = 9.9333…: 9.93 each and the cent left over to one, 29.80 in all. The
    # business's 119.20 to its newest funding first: 40.00, 60.00, then 19.20 of the off-Stripe one, by hand.
    assert status == 200, body
    assert (body["refunded"], body["to_boosters"], body["to_business"]) == ("149.00", "29.80", "119.20")
    by_boost = {r["boost_id"]: r["amount"] for r in body["refunds"] if r["boost_id"]}
    assert sorted(by_boost.values()) == ["9.93", "9.93", "9.94"] and set(by_boost) == {b for b, _ in boosts}
    business_refunds = [(r["payment_intent_id"], r["amount"], r["status"]) for r in body["refunds"]
                        if not r["boost_id"]]
    assert business_refunds == [(newer, "40.00", "pending"), (older, "60.00", "pending"), (None, "19.20", "manual")]
    assert budget(flows, campaign)[1:] == (D("1.00"), D("0.00"), "completed")  # funded - remaining = paid
    assert flows.platform("escrow")[0] == D("0.00")
    flows.assert_books()

    # The outage left one refund pending; the settler's refunds job sends it. Stripe made each exactly once.
    assert send_pending_refunds(flows) == {"succeeded": 1, "manual": 0, "deferred": 0, "skipped": 0}
    assert flows.billing.refunded(newer) == 4000 and flows.billing.refunded(older) == 6000
    assert all(flows.billing.refunded(pi) == cents(by_boost[boost_id]) for boost_id, pi in boosts)
    listed = await flows.api.get(f"/v1/campaigns/{campaign}/refunds", headers=business.headers)
    assert sorted(r["status"] for r in (await listed.json())["items"]) == ["manual"] + ["succeeded"] * 5

    # A retry gets the first answer; a new request finds nothing left to give back.
    assert await refund_unspent(flows, business, campaign, **{"Idempotency-Key": "refund-1"}) == (200, body)
    status, again = await refund_unspent(flows, business, campaign)
    assert (status, again["refunded"], again["refunds"]) == (200, "0.00", [])

    # Stripe reports each refund it made: ours, so nothing is taken back of any payment.
    for pi, amount in ((newer, "40.00"), (older, "60.00"), *((pi, "10.00") for _, pi in boosts)):
        refunded = f"{flows.billing.refunded(pi) / 100:.2f}"
        status, echo = await flows.send(*flows.refunded(pi, amount, refunded))
        assert (status, echo["outcome"]) == (200, "unchanged"), echo
    assert budget(flows, campaign)[1:3] == (D("1.00"), D("0.00"))
    flows.assert_books()


async def test_a_lost_answer_is_found_not_repeated_and_a_refused_refund_goes_to_finance(flows, world):
    business, supporter = flows.user("business"), flows.user("supporter")
    campaign, (pi,) = await card_funded(flows, world, business, "30.00")
    await activate(flows, business, campaign)
    _, boost_pi = await boost(flows, supporter, campaign, "10.00")
    await complete(flows, business, campaign)
    await settle(flows)
    # Stripe makes the first refund but its answer is lost, and refuses the second (a disputed charge, say).
    flows.billing.refund_faults = ["lost", "refused"]

    status, body = await refund_unspent(flows, business, campaign)

    assert status == 200 and [r["amount"] for r in body["refunds"]] == ["10.00", "30.00"]
    flows.billing.forget_idempotency_keys()  # the retry comes more than a day later
    assert send_pending_refunds(flows)["succeeded"] == 1  # found by its metadata, not made again
    assert flows.billing.refunded(boost_pi) == 1000 and len(flows.billing.refunds) == 1
    rows = flows.pg.execute("SELECT payment_intent_id, status, note, attempts FROM issued_refunds"
                            " ORDER BY amount").fetchall()
    assert [(r["payment_intent_id"], r["status"], r["attempts"]) for r in rows] == [
        (boost_pi, "succeeded", 2), (pi, "manual", 1)]
    assert "by hand" in rows[1]["note"]
    assert send_pending_refunds(flows) == {"succeeded": 0, "manual": 0, "deferred": 0, "skipped": 0}
    flows.assert_books()


async def test_refund_unspent_answers_4xx_to_the_wrong_caller_or_campaign(flows, world):
    business = flows.user("business")
    campaign = world.campaign(business.id, payout="1.00", fund="10.00")
    other = world.campaign(payout="1.00", fund="10.00")

    assert (await refund_unspent(flows, business, campaign))[1]["error"]["code"] == "campaign_not_completed"
    assert (await refund_unspent(flows, business, other))[0] == 404  # someone else's: not found
    assert (await refund_unspent(flows, flows.user("supporter"), campaign))[0] == 403
    resp = await flows.api.post("/v1/campaigns/nope/refund-unspent", headers=business.headers)
    assert resp.status == 404
    assert flows.pg.execute("SELECT count(*) AS n FROM issued_refunds").fetchone()["n"] == 0
    assert budget(flows, campaign)[2] == D("10.00")


async def test_reconcile_names_a_boost_reward_or_refund_the_ledger_disagrees_with(flows, world):
    business, supporter = flows.user("business"), flows.user("supporter")
    campaign = world.campaign(business.id, payout="1.00", fund="10.00")
    b, _ = await boost(flows, supporter, campaign, "10.00")
    await clicks(flows, world, campaign, creator_on(flows, world, campaign), 4)
    await complete(flows, business, campaign)
    await settle(flows)
    assert (await refund_unspent(flows, business, campaign))[0] == 200
    flows.assert_books()

    for table, column, check in (("rewards", "amount", "boost_rewards_match_ledger"),
                                 ("boosts", "amount", "boosts_raise_escrow"),
                                 ("issued_refunds", "amount", "issued_refunds_within_payments")):
        key = "boost_id" if table != "boosts" else "id"
        flows.pg.execute(f"UPDATE {table} SET {column} = {column} + 0.01 WHERE {key} = %s", (b,))
        failed = {c.name for c in reconcile(flows.settings) if not c.ok}
        flows.pg.execute(f"UPDATE {table} SET {column} = {column} - 0.01 WHERE {key} = %s", (b,))
        assert check in failed, (table, failed)
    flows.assert_books()


async def test_the_settler_gives_the_boosters_unspent_money_back_after_the_last_settlement_once(flows, world):
    """Nobody calls refund-unspent: the settler's job gives a completed campaign's unspent money back, the
    boosters' pro rata and the business's to its card, once its last events were paid and their holds are
    over; only once."""
    business, supporter = flows.user("business"), flows.user("supporter")
    campaign, (funding,) = await card_funded(flows, world, business, "30.00")
    await activate(flows, business, campaign)
    b, boost_pi = await boost(flows, supporter, campaign, "10.00")
    await clicks(flows, world, campaign, creator_on(flows, world, campaign), 4)  # 36.00 left, 9.00 the boost's
    # A completed campaign whose boosters hold nothing is not the job's: its business decides.
    unboosted, _ = await card_funded(flows, world, business, "5.00")
    await activate(flows, business, unboosted)
    await complete(flows, business, unboosted)
    await complete(flows, business, campaign)
    job_settings = replace(flows.settings, stripe_api_base=flows.billing.url, unspent_grace_s=0)
    completed_ago(flows, campaign, minutes=5)
    world.put([world.click(unboosted, creator_on(flows, world, unboosted))])  # the watermark moves past it

    nothing = {"campaigns": 0, "refunds": 0, "failed": 0}
    assert refund_unspent_job(job_settings) == nothing  # its last events may be in flight
    await settle(flows)
    assert refund_unspent_job(job_settings) == nothing  # its payouts are held
    flows.release_holds()
    done = refund_unspent_job(job_settings)

    assert done == {"campaigns": 1, "refunds": 2, "failed": 0,
                    "succeeded": 2, "manual": 0, "deferred": 0, "skipped": 0}
    assert flows.billing.refunded(boost_pi) == 900 and flows.billing.refunded(funding) == 2700
    assert budget(flows, campaign)[1:] == (D("4.00"), D("0.00"), "completed")
    assert budget(flows, unboosted)[1:] == (D("5.00"), D("5.00"), "completed")
    assert refund_unspent_job(job_settings) == nothing  # nothing left to give
    status, body = await refund_unspent(flows, business, campaign)
    assert (status, body["refunded"], body["refunds"]) == (200, "0.00", [])
    assert flows.platform("escrow")[0] == D("5.00")  # the unboosted campaign's, until its business asks
    flows.assert_books()


def completed_ago(flows, campaign: str, *, minutes: int) -> None:
    """The campaign completed ``minutes`` ago, active an hour before that (its status history moved back)."""
    flows.pg.execute("UPDATE campaign_status_history SET changed_at = changed_at - CASE WHEN status = 'completed'"
                     " THEN make_interval(mins => %s) ELSE make_interval(mins => %s + 60) END"
                     " WHERE campaign_id = %s", (minutes, minutes, campaign))


async def test_an_event_from_before_completion_that_arrives_late_is_paid_before_the_job_gives_back(flows, world):
    """The settler pays an event timestamped before the completion whenever it arrives. A settlement that ran
    after the completion but before that event was ingested gives the job nothing: it waits until a settlement
    read OROS_UNSPENT_GRACE_S (plus the overlap) past the completion and every payout's hold is over."""
    business, supporter = flows.user("business"), flows.user("supporter")
    campaign, (funding,) = await card_funded(flows, world, business, "30.00")
    await activate(flows, business, campaign)
    b, boost_pi = await boost(flows, supporter, campaign, "10.00")
    late = world.click(campaign, creator_on(flows, world, campaign), ts_ms=now_ms() - 10 * 60_000)
    await complete(flows, business, campaign)
    completed_ago(flows, campaign, minutes=5)  # after the click, before it reaches ClickHouse
    job_settings = replace(flows.settings, stripe_api_base=flows.billing.url, unspent_grace_s=0)
    nothing = {"campaigns": 0, "refunds": 0, "failed": 0}

    await settle(flows)  # a settlement after the completion, before the click is in
    assert refund_unspent_job(job_settings) == nothing
    world.put([late])  # a lagging ingest
    await asyncio.to_thread(settle_once, replace(flows.settings, hold_days=0))  # a hold over at once
    assert world.decision(late)["status"] == "paid"  # the creator is paid
    # Its hold is over but the release job has not run: a refund of it would still be reversed into the budget.
    assert refund_unspent_job(job_settings) == nothing
    flows.release_holds()
    # The watermark (the late click's ingestion) is not 10 minutes plus the overlap past the completion.
    assert refund_unspent_job(replace(job_settings, unspent_grace_s=600)) == nothing
    done = refund_unspent_job(job_settings)

    # 39.00 left of 40.00: the boost's 10/40 of it, 9.75, the business 29.25.
    assert done == {"campaigns": 1, "refunds": 2, "failed": 0,
                    "succeeded": 2, "manual": 0, "deferred": 0, "skipped": 0}
    assert flows.billing.refunded(boost_pi) == 975 and flows.billing.refunded(funding) == 2925
    assert budget(flows, campaign)[1:] == (D("1.00"), D("0.00"), "completed")
    flows.assert_books()


async def test_a_campaign_the_database_refuses_does_not_stop_the_others(flows, world, caplog):
    """One campaign the give-back raises on (oldest first) is logged and counted; the next is given back."""
    business = flows.user("business")
    job_settings = replace(flows.settings, stripe_api_base=flows.billing.url, unspent_grace_s=0)
    campaigns = []
    for _ in range(2):
        campaign, _ = await card_funded(flows, world, business, "10.00")
        await activate(flows, business, campaign)
        await boost(flows, flows.user("supporter"), campaign, "10.00")
        await complete(flows, business, campaign)
        campaigns.append(campaign)
    for minutes, campaign in zip((10, 5), campaigns, strict=True):
        completed_ago(flows, campaign, minutes=minutes)
    world.put([world.click(campaigns[0], creator_on(flows, world, campaigns[0]))])  # moves the watermark
    await settle(flows)
    # The older campaign's boost row is broken: its refund cannot be booked.
    flows.pg.execute("ALTER TABLE issued_refunds ADD CONSTRAINT test_broken CHECK (campaign_id <> %s::uuid)"
                     .replace("%s", f"'{campaigns[0]}'"))
    try:
        done = refund_unspent_job(job_settings)
    finally:
        flows.pg.execute("ALTER TABLE issued_refunds DROP CONSTRAINT test_broken")

    assert (done["campaigns"], done["failed"]) == (1, 1)
    assert budget(flows, campaigns[1])[1:] == (D("0.00"), D("0.00"), "completed")
    assert budget(flows, campaigns[0])[2] == D("20.00")
    assert "unspent budget not given back" in caplog.text
    flows.assert_books()
