"""Boost rewards: a share of what each boost paid for, pending until the campaign completes, then paid exactly."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import psycopg
import pytest

from oros.connections import pg_connect
from oros.events import Event, uuid7
from oros.reasons import UNKNOWN_CAMPAIGN
from settler.reconcile import reconcile
from settler.refunds import apply_refund
from settler.run import settle_once
from settler.unspent import refund_unspent
from settler.verify import Candidate

from boost_flows import boost, budget, clicks, complete, creator_on, held, reward
from boost_flows import settle as settle_boosted
from factories import now_ms
from interleave import Writer, lay_out, main_wallet_first, quick_deadlocks, until, waiting
from live_flows import open_event, refund, sell, settle, shop
from supporter_flows import D


async def rewards_of(flows, user, query: str = "") -> list[dict]:
    resp = await flows.api.get(f"/v1/me/rewards{query}", headers=user.headers)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["items"]


async def test_each_boost_earns_on_what_it_paid_for_while_it_was_in_and_is_paid_at_completion(flows, world):
    business = flows.user("business")
    first, second = flows.user("supporter"), flows.user("supporter")
    campaign = world.campaign(business.id, payout="10.00", fund="1000.00")
    creator = creator_on(flows, world, campaign)
    a, _ = await boost(flows, first, campaign, "500.00")
    await clicks(flows, world, campaign, creator, 30)  # 300.00 paid by 1,500.00: the boost paid a third, 100.00

    assert held(flows, a) == D("400.00")
    pending = await rewards_of(flows, first)
    assert [(r["status"], r["amount"], r["unspent"]) for r in pending] == [("pending", "5.00", "400.00")]

    b, _ = await boost(flows, second, campaign, "300.00")  # the pool: business 800, first 400, second 300
    await clicks(flows, world, campaign, creator, 45)  # 450.00 paid by 1,500.00: each pays 30 % of what it holds

    assert (held(flows, a), held(flows, b), budget(flows, campaign)[2]) == (D("280.00"), D("210.00"), D("1050.00"))
    await complete(flows, business, campaign)

    # first: 500 - 280 = 220 paid for, 5 % = 11.00; second: 300 - 210 = 90, 4.50. Of 750.00 paid while boosts
    # were in, 15.50 (2.07 %), paid by the platform, held as long as the campaign's payouts are.
    assert (reward(flows, a)["status"], reward(flows, a)["amount"]) == ("paid", D("11.00"))
    assert (reward(flows, b)["status"], reward(flows, b)["amount"]) == ("paid", D("4.50"))
    assert flows.wallet(first) == (D("0.00"), D("11.00")) and flows.wallet(second) == (D("0.00"), D("4.50"))
    assert flows.platform("rewards") == (D("0.00"), D("15.50"))
    paid = await rewards_of(flows, first, "?source=boost&status=paid")
    assert [(r["amount"], r["campaign_id"], r["boost_id"]) for r in paid] == [("11.00", campaign, a)]
    assert await rewards_of(flows, first, "?status=pending") == []
    assert await rewards_of(flows, second, "?source=share") == []
    flows.assert_books()

    # Withdrawable like any earning once released: KYC, the minimum, a payout account.
    flows.release_holds()
    assert flows.wallet(first) == (D("11.00"), D("0.00"))

    async def withdraw(user, amount: str):
        resp = await flows.api.post("/v1/withdrawals", json={"amount": amount, "method": "ach"}, headers=user.headers)
        return resp.status, await resp.json()

    status, body = await withdraw(first, "11.00")
    assert (status, body["error"]["code"]) == (409, "payout_account_required")
    put = await flows.api.put("/v1/me/payout-account", json={"stripe_account_id": "acct_first"}, headers=first.headers)
    assert (put.status, (await put.json())["stripe_account_id"]) == (200, "acct_first")
    status, body = await withdraw(first, "11.00")
    assert (status, body["amount"], body["status"]) == (201, "11.00", "requested")
    assert flows.wallet(first) == (D("0.00"), D("0.00"))  # reserved
    assert (await withdraw(second, "4.50"))[1]["error"]["field"] == "amount"  # under the minimum
    flows.assert_books()


async def test_the_settler_completing_an_exhausted_campaign_pays_its_rewards_in_that_transaction(flows, world):
    supporter = flows.user("supporter")
    campaign = world.campaign(payout="1.00", fund="10.00")
    creator = creator_on(flows, world, campaign)
    b, _ = await boost(flows, supporter, campaign, "10.00")

    report = await clicks(flows, world, campaign, creator, 23)

    assert report["events_paid"] == 20 and budget(flows, campaign)[2:] == (D("0.00"), "completed")
    assert (reward(flows, b)["status"], reward(flows, b)["amount"]) == ("paid", D("0.50"))
    assert flows.wallet(supporter) == (D("0.00"), D("0.50"))
    flows.assert_books()


async def test_a_reward_that_comes_to_nothing_is_paid_as_zero_and_a_lister_sees_only_its_own(flows, world):
    business, supporter = flows.user("business"), flows.user("supporter")
    campaign = world.campaign(business.id, payout="1.00", fund="10.00")
    b, _ = await boost(flows, supporter, campaign, "5.00")

    await complete(flows, business, campaign)  # nothing spent

    row = reward(flows, b)
    assert (row["status"], row["amount"], row["transfer_id"], row["spent"]) == ("paid", D("0.00"), None, 0)
    # A paid boost reward cannot lose its base: its refunds are computed from it.
    with pg_connect(world.settings, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="reward_boost_paid_has_base"):
            conn.execute("UPDATE rewards SET spent = NULL WHERE boost_id = %s", (b,))
    assert await rewards_of(flows, business) == []
    assert await rewards_of(flows, flows.user("admin")) == []  # /me: an admin's own, none
    bad = await flows.api.get("/v1/me/rewards?status=owed", headers=supporter.headers)
    assert (bad.status, (await bad.json())["error"]["field"]) == (422, "status")
    flows.assert_books()


async def test_live_sales_count_in_a_boost_reward_refunds_lower_it_and_it_is_held_as_long_as_they_are(
        flows, world, redis):
    s = shop(world, payout="5.00", fund="100.00")
    supporter = flows.user("supporter")
    b, _ = await boost(flows, supporter, s.campaign, "100.00")  # the pool: business 100, boost 100
    event = await open_event(flows.api, s, pct="50")
    for order, amount in (("l-1", "40.00"), ("l-2", "20.00")):
        assert (await sell(flows.api, s, event, order, amount)).status == 202
    report = await settle(world, redis)

    # 30.00 of live commissions paid by 200.00: the boost paid half, 15.00; 5 % of it.
    assert (report["events_paid"], report["amount_paid"]) == (2, "30.00")
    assert [(r["status"], r["amount"]) for r in await rewards_of(flows, supporter)] == [("pending", "0.75")]

    world.put([refund(s, "l-1", None)])  # the 20.00 commission comes back to the pool
    await settle(world, redis)
    assert held(flows, b) == D("95.00")
    assert [(r["status"], r["amount"]) for r in await rewards_of(flows, supporter)] == [("pending", "0.25")]

    await complete(flows, s.business, s.campaign)
    # No ordinary payout is held, but the live sale is: the reward is not payable before the sale's hold ends.
    assert (reward(flows, b)["status"], reward(flows, b)["amount"]) == ("paid", D("0.25"))
    assert flows.wallet(supporter) == (D("0.00"), D("0.25"))
    holds = flows.pg.execute(
        "SELECT e.source_type, max(e.hold_until) AS until FROM ledger_entries e"
        " WHERE e.status = 'pending' AND e.direction = 'credit' AND e.wallet_id IN"
        " (SELECT id FROM wallets WHERE user_id IN (%s, %s)) GROUP BY e.source_type",
        (supporter.id, s.creator.id)).fetchall()
    until = {r["source_type"]: r["until"] for r in holds}
    assert until["boost"] == until["live_sale"]
    flows.assert_books()
    flows.release_holds()
    assert flows.wallet(supporter) == (D("0.25"), D("0.00"))
    flows.assert_books()


async def two_boosted_sales_completed(flows, world, redis, *late: tuple[str, str]):
    """A sale campaign (business 100.00) boosted by two supporters (100.00, 300.00), two live sales paying 20.00 and
    33.00 of commission, completed (``late`` sales made before and not settled yet): (shop, event, (first, its
    boost), (second, its boost))."""
    s = shop(world, payout="5.00", fund="100.00")
    first, second = flows.user("supporter"), flows.user("supporter")
    a, _ = await boost(flows, first, s.campaign, "100.00")
    b, _ = await boost(flows, second, s.campaign, "300.00")
    event = await open_event(flows.api, s, pct="50")
    for order, amount in (("l-1", "40.00"), ("l-2", "66.00")):
        assert (await sell(flows.api, s, event, order, amount)).status == 202
    await settle(world, redis)
    for order, amount in late:
        assert (await sell(flows.api, s, event, order, amount)).status == 202
    await complete(flows, s.business, s.campaign)
    # 53.00 paid by 500.00: each paid 10.6 % of what it held. first: 10.60 paid for, 5 % = 0.53; second: 31.80, 1.59.
    assert (reward(flows, a)["amount"], reward(flows, b)["amount"]) == (D("0.53"), D("1.59"))
    assert flows.wallet(first) == (D("0.00"), D("0.53")) and flows.wallet(second) == (D("0.00"), D("1.59"))
    assert flows.platform("rewards") == (D("0.00"), D("2.12"))
    return s, event, (first, a), (second, b)


def lowered_rewards(flows, campaign: str) -> dict:
    """What the ledger says refunds took back of a campaign's boost rewards since it completed: (rewards, amount),
    from the rewards wallet's legs, each reward's first transfer (paid at completion) against what its live legs pay."""
    row = flows.pg.execute(
        "SELECT count(*) FILTER (WHERE fixed > paid) AS n, coalesce(sum(fixed - paid), 0) AS amount FROM ("
        " SELECT e.source_id, sum(e.amount) FILTER (WHERE e.direction = 'debit' AND NOT e.metadata ? 'rebooked_from')"
        "        AS fixed,"
        "        coalesce(sum(CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END)"
        "                 FILTER (WHERE e.status NOT IN ('failed', 'reversed')), 0) AS paid"
        "   FROM ledger_entries e JOIN wallets w ON w.id = e.wallet_id"
        "  WHERE e.source_type = 'boost' AND w.purpose = 'rewards' AND e.metadata->>'campaign_id' = %s"
        "  GROUP BY e.source_id) r", (campaign,)).fetchone()
    return {"count": row["n"], "amount": f"{row['amount']:.2f}"}


async def test_a_sale_refunded_after_completion_inside_the_hold_lowers_each_held_reward_by_the_formula(
        flows, world, redis):
    s, _, (first, a), (second, b) = await two_boosted_sales_completed(flows, world, redis)
    half = refund(s, "l-2", "33.00")
    world.put([half])  # half of the 66.00 order: 16.50 of its commission back to the pool
    report = await settle(world, redis)

    # The pool got 16.50 back, each in proportion to what it holds: first holds 92.70, so it paid for 7.30 (5 %:
    # 0.365, truncated 0.36); second 278.10, 21.90 (1.095: 1.09). Still held, as the sales are.
    assert (reward(flows, a)["amount"], reward(flows, b)["amount"]) == (D("0.36"), D("1.09"))
    assert (held(flows, a), held(flows, b)) == (D("92.70"), D("278.10"))
    assert flows.wallet(first) == (D("0.00"), D("0.36")) and flows.wallet(second) == (D("0.00"), D("1.09"))
    assert flows.platform("rewards") == (D("0.00"), D("1.45"))
    assert report["refunds"]["boost_rewards"] == {"count": 2, "amount": "0.67"} == lowered_rewards(flows, s.campaign)
    assert report["refunds"]["share_rewards"] == {"count": 0, "amount": "0.00"}
    assert [(r["status"], r["amount"]) for r in await rewards_of(flows, first)] == [("paid", "0.36")]
    flows.assert_books()
    # Reconcile holds the row to its live legs: a reward put back to what it was fixed at fails it.
    flows.pg.execute("UPDATE rewards SET amount = 0.53 WHERE boost_id = %s", (a,))
    assert [c.name for c in reconcile(flows.settings) if not c.ok] == ["boost_rewards_match_ledger"]
    flows.pg.execute("UPDATE rewards SET amount = 0.36 WHERE boost_id = %s", (a,))

    # The same refund again (its event replayed, and Stripe's total sent twice): nothing is taken twice.
    world.put([half, refund(s, "l-2", "33.00")])
    again = await settle(world, redis)
    assert again["refunds"]["boost_rewards"] == {"count": 0, "amount": "0.00"}
    assert (reward(flows, a)["amount"], reward(flows, b)["amount"]) == (D("0.36"), D("1.09"))
    assert flows.platform("rewards") == (D("0.00"), D("1.45"))

    # The rest of the order: 16.50 more back. first holds 96.00 (4.00: 0.20), second 288.00 (12.00: 0.60).
    world.put([refund(s, "l-2", None)])
    report = await settle(world, redis)
    assert (reward(flows, a)["amount"], reward(flows, b)["amount"]) == (D("0.20"), D("0.60"))
    assert report["refunds"]["boost_rewards"] == {"count": 2, "amount": "0.65"}
    assert lowered_rewards(flows, s.campaign) == {"count": 2, "amount": "1.32"}
    flows.assert_books()
    flows.release_holds()
    assert flows.wallet(first) == (D("0.20"), D("0.00")) and flows.wallet(second) == (D("0.60"), D("0.00"))
    assert flows.platform("rewards") == (D("0.80"), D("0.00"))
    flows.assert_books()


async def test_two_settlers_at_once_take_a_refunded_sale_back_from_the_rewards_once(flows, world, redis):
    s, _, (_, a), (_, b) = await two_boosted_sales_completed(flows, world, redis)
    world.put([refund(s, "l-2", "33.00")])

    reports = await asyncio.gather(*(asyncio.to_thread(settle_once, world.settings) for _ in range(2)))

    assert (reward(flows, a)["amount"], reward(flows, b)["amount"]) == (D("0.36"), D("1.09"))
    assert sorted(r["refunds"]["boost_rewards"]["count"] for r in reports) == [0, 2]
    assert lowered_rewards(flows, s.campaign) == {"count": 2, "amount": "0.67"}
    flows.assert_books()


async def test_a_payout_settled_after_completion_and_refunded_leaves_the_rewards_alone(flows, world, redis):
    s, _, (_, a), (_, b) = await two_boosted_sales_completed(flows, world, redis, ("l-3", "20.00"))
    paid = await settle(world, redis)  # sold while live, settled after the completion
    assert paid["live_sales"] == {"paid": 1, "amount": "10.00"}
    world.put([refund(s, "l-3", None)])
    report = await settle(world, redis)

    # The reward never counted it (it goes to the refund of unspent money), so its refund takes nothing back.
    assert report["refunds"]["reversed"] == 1 and report["refunds"]["boost_rewards"]["count"] == 0
    assert (reward(flows, a)["amount"], reward(flows, b)["amount"]) == (D("0.53"), D("1.59"))
    flows.assert_books()


async def test_a_reward_released_before_its_sale_is_refunded_becomes_what_the_supporter_owes(flows, world, redis):
    s = shop(world, payout="5.00", fund="1000.00")
    supporter = flows.user("supporter")
    b, _ = await boost(flows, supporter, s.campaign, "1000.00")
    event = await open_event(flows.api, s, pct="50")
    assert (await sell(flows.api, s, event, "l-1", "800.00")).status == 202
    # A hold already over when the campaign completes (the release job not run yet): the reward is released at once.
    await settle(world, redis, replace(flows.settings, hold_days=0))
    await complete(flows, s.business, s.campaign)
    assert (reward(flows, b)["amount"], flows.wallet(supporter)) == (D("10.00"), (D("10.00"), D("0.00")))
    put = await flows.api.put("/v1/me/payout-account", json={"stripe_account_id": "acct_b"},
                              headers=supporter.headers)
    assert put.status == 200
    resp = await flows.api.post("/v1/withdrawals", json={"amount": "10.00", "method": "ach"},
                                headers=supporter.headers)
    assert resp.status == 201, await resp.text()

    world.put([refund(s, "l-1", None)])  # the sale's credit is still pending: reversed, 400.00 back to the pool
    report = await settle(world, redis)

    # The boost paid for nothing in the end: its reward is 0.00, and the 10.00 it withdrew is owed.
    assert reward(flows, b)["amount"] == D("0.00") and held(flows, b) == D("1000.00")
    assert flows.owed(supporter) == D("10.00") and flows.wallet(supporter) == (D("0.00"), D("0.00"))
    assert flows.platform("rewards") == (D("0.00"), D("0.00"))
    assert report["refunds"]["boost_rewards"] == {"count": 1, "amount": "10.00"} == lowered_rewards(flows, s.campaign)
    flows.assert_books()


async def test_an_ordinary_sale_refunded_after_completion_takes_its_share_back_from_the_reward(flows, world):
    business, supporter = flows.user("business"), flows.user("supporter")
    campaign = world.campaign(business.id, objective="sale", payout="10.00", fund="100.00")
    creator = creator_on(flows, world, campaign)
    b, _ = await boost(flows, supporter, campaign, "100.00")  # the pool: business 100, boost 100
    click = world.click(campaign, creator, ts_ms=now_ms() - 60_000)
    world.put([click, world.conversion(click, kind="sale", order_id="O-1", value="50.00")])
    assert (await settle_boosted(flows))["events_paid"] == 1
    await complete(flows, business, campaign)
    assert reward(flows, b)["amount"] == D("0.25")  # 10.00 paid by 200.00: the boost paid 5.00, 5 %

    world.put([Event(event_id=str(uuid7()), event_type="refund", ts_ms=now_ms(), campaign_id=UNKNOWN_CAMPAIGN,
                     order_id="O-1", business_id=business.id, source="api")])
    report = await settle_boosted(flows)

    # The 10.00 is back in the pool: the boost holds its 100.00 again and paid for nothing.
    assert (reward(flows, b)["amount"], held(flows, b)) == (D("0.00"), D("100.00"))
    assert reward(flows, b)["transfer_id"] is None and flows.wallet(supporter) == (D("0.00"), D("0.00"))
    assert report["refunds"]["boost_rewards"] == {"count": 1, "amount": "0.25"} == lowered_rewards(flows, campaign)
    flows.assert_books()


async def test_a_sale_refunded_after_the_unspent_money_went_back_leaves_the_rewards_alone(flows, world, redis):
    s, _, (_, a), (_, b) = await two_boosted_sales_completed(flows, world, redis)
    await settle(world, redis)  # a run that started after the completion: the unspent money may go back
    resp = await flows.api.post(f"/v1/campaigns/{s.campaign}/refund-unspent", headers=s.business.headers)
    assert resp.status == 200, await resp.text()
    assert budget(flows, s.campaign)[2] == D("0.00")

    world.put([refund(s, "l-2", None)])
    report = await settle(world, redis)

    # The boosts got back all they held: what they paid for stands, the 33.00 back is the business's (the pool
    # was empty), and so do the rewards.
    assert report["refunds"]["reversed"] == 1 and report["refunds"]["boost_rewards"]["count"] == 0
    assert (reward(flows, a)["amount"], reward(flows, b)["amount"]) == (D("0.53"), D("1.59"))
    assert budget(flows, s.campaign)[2] == D("33.00") and (held(flows, a), held(flows, b)) == (D("0.00"), D("0.00"))
    flows.assert_books()
    # No boost holds any of it, so the settler's refund_unspent job leaves it to the business's next call
    # (docs/supporters.md, "Giving the unspent budget back"); the job alone would have waited for the holds.
    flows.release_holds()
    flows.pg.execute("UPDATE campaign_status_history SET changed_at = changed_at - interval '10 minutes'"
                     " WHERE campaign_id = %s AND status = 'completed'", (s.campaign,))  # the watermark is past it
    job_settings = replace(flows.settings, stripe_api_base=flows.billing.url, unspent_grace_s=0)
    assert refund_unspent(job_settings) == {"campaigns": 0, "refunds": 0, "failed": 0}
    resp = await flows.api.post(f"/v1/campaigns/{s.campaign}/refund-unspent", headers=s.business.headers)
    assert (resp.status, (await resp.json())["to_business"]) == (200, "33.00")
    flows.assert_books()



async def boosted_sale_completed(flows, world, supporter, hold_days: int | None = None) -> tuple[str, object, str]:
    """A sale campaign (payout 10.00, business 100.00) boosted 100.00 by ``supporter``, its sale (O-1) paid
    (held ``hold_days``, the settings' by default) and the campaign completed: the reward, 0.25, held as long as
    the sale is. (campaign, business, boost)."""
    business = flows.user("business")
    campaign = world.campaign(business.id, objective="sale", payout="10.00", fund="100.00")
    creator = creator_on(flows, world, campaign)
    b, _ = await boost(flows, supporter, campaign, "100.00")
    click = world.click(campaign, creator, ts_ms=now_ms() - 60_000)
    world.put([click, world.conversion(click, kind="sale", order_id="O-1", value="50.00")])
    settings = replace(flows.settings, hold_days=flows.settings.hold_days if hold_days is None else hold_days)
    assert (await asyncio.to_thread(settle_once, settings))["events_paid"] == 1
    await complete(flows, business, campaign)
    assert reward(flows, b)["amount"] == D("0.25")
    return campaign, business, b


def refund_racing_the_release(flows, business, b: str):
    """The settler refunds O-1 in full while the release job runs (at the hold's end): the refund held by a gate
    that locks the boost's reward row (after the sale's money moved, before the reward's does), the release let
    in until it waits too, then the gate opened. (the refund's outcome, what the release released)."""
    quick_deadlocks(flows.pg)
    run = flows.pg.execute("INSERT INTO settlement_runs (status) VALUES ('succeeded') RETURNING id::text AS id"
                           ).fetchone()["id"]
    event = Candidate(event_id=str(uuid7()), event_type="refund", ts_ms=now_ms(), campaign_id=None,
                      business_id=business.id, order_id="O-1", source="api")

    def refund_sale():
        with pg_connect(flows.settings) as conn, conn.transaction():  # the settler's transaction per refund
            return apply_refund(conn, event, run_id=run, now=datetime.now(UTC))

    with pg_connect(flows.settings) as gate:
        gate.execute("SELECT 1 FROM rewards WHERE boost_id = %s FOR UPDATE", (b,))
        refund = Writer(refund_sale)
        refund.start()
        until(lambda: waiting(flows.pg) == 1)  # at the reward's row
        release = Writer(flows.release_holds)
        release.start()
        until(lambda: waiting(flows.pg) == 2)  # at a leg or a wallet the refund holds
        gate.rollback()
        return refund.finish(), release.finish()


async def test_a_sale_refunded_after_completion_while_the_holds_are_released_moves_each_leg_once(flows, world):
    """A sale's refund that lowers a held boost reward (0155), while the release job settles those holds.

    Lock order of the refund (settler/refunds.py, then oros_reverse_sale and oros_take_back_boost_rewards): the
    campaign row, the sale's event row, then every held leg it may move -- the sale's and the campaign's paid
    boost rewards', in one statement, in id order -- then the receivables of the creator, the supporter and the
    boosters, then every wallet it moves, in id order, before its first movement. The release
    (oros_release_holds, 0161) locks the due legs in id order, then its trigger their wallets.

    Before, the refund locked the sale's legs, moved money, and only then, lowering the reward, locked the
    reward's legs; the release locked legs in the order it read them. A release that read the reward's legs
    first held them and waited for the sale's, which the refund held while it waited for the reward's: a
    deadlock. Now both take the legs in id order, the refund all of them before anything else of the release's:
    the first to lock the lowest leg they share goes first, the other waits for its commit and reads those legs
    again (a reversed leg is not released, a released one is not taken back as if held).

    Here the legs are laid out so that a scan reads the reward's before the sale's.
    """
    supporter = flows.user("supporter")
    campaign, business, b = await boosted_sale_completed(flows, world, supporter)
    sale = flows.pg.execute("SELECT transfer_id FROM events WHERE event_type = 'sale' AND campaign_id = %s",
                            (campaign,)).fetchone()["transfer_id"]
    held_legs = "SELECT id::text AS id FROM ledger_entries WHERE transfer_id = %s AND status = 'pending'"
    lay_out(flows.pg, [r["id"] for transfer in (reward(flows, b)["transfer_id"], sale)
                       for r in flows.pg.execute(held_legs, (transfer,))])

    outcome, released = refund_racing_the_release(flows, business, b)

    # The refund went first: the sale and the reward are reversed whole, nothing of them was released.
    assert (outcome.reason, outcome.boost_rewards, outcome.boost_reward_back) == (None, 1, D("0.25"))
    assert released == 0 and flows.release_holds() == 0
    assert (reward(flows, b)["amount"], held(flows, b)) == (D("0.00"), D("100.00"))
    creator = flows.pg.execute("SELECT creator_id FROM campaign_creators WHERE campaign_id = %s",
                               (campaign,)).fetchone()["creator_id"]
    assert flows.wallet(supporter) == (D("0.00"), D("0.00")) and flows.wallet(creator) == (D("0.00"), D("0.00"))
    assert flows.platform("rewards") == (D("0.00"), D("0.00")) and flows.platform("fees") == (D("0.00"), D("0.00"))
    assert lowered_rewards(flows, campaign) == {"count": 1, "amount": "0.25"}
    flows.assert_books()


async def test_a_boosters_wallet_released_while_its_reward_is_refunded_moves_once(flows, world):
    """The same refund, while the release settles something else of the booster's (a tip it got, held less long).

    They share no leg, only wallets: the release's trigger locks the fees wallet and the booster's at once, in id
    order; the refund moved the sale's money (the fees wallet among others), then the reward's (the booster's
    wallet). Before, with the booster's wallet first in id order, the release held it and waited for the fees
    wallet, which the refund held while it waited for the booster's: a deadlock. Now the refund locks every
    wallet it moves at once, in id order, before its first movement (settler/refunds.py), so whichever of the
    two locks the first wallet they share goes first.
    """
    booster = flows.user("supporter", "creator")
    main_wallet_first(flows.pg, booster.id)
    campaign, business, b = await boosted_sale_completed(flows, world, booster, hold_days=30)
    await flows.paid_tip(flows.user("supporter"), booster, "10.00")  # net 9.50, held 14 days: due first

    outcome, released = refund_racing_the_release(flows, business, b)

    assert (outcome.reason, outcome.boost_rewards, outcome.boost_reward_back) == (None, 1, D("0.25"))
    assert released == 2  # the tip's fee and net, once
    assert flows.wallet(booster) == (D("9.50"), D("0.00")) and reward(flows, b)["amount"] == D("0.00")
    assert flows.platform("rewards") == (D("0.00"), D("0.00")) and flows.platform("fees") == (D("0.50"), D("0.00"))
    flows.assert_books()


async def test_a_settlement_completing_a_campaign_while_a_boosters_money_is_released_moves_it_once(flows, world):
    """The settlement that completes a campaign pays its boosters' rewards, while the release settles a booster's
    other held money (a tip it got): they share only wallets.

    The settlement (oros_post_settlement) locks the campaign, the receivables, then books the payouts (escrow,
    fees, the creators' wallets) and completes the campaign, which pays the rewards (the rewards wallet, the
    boosters'), in a statement of its own. The release's trigger locks the fees wallet and the booster's at
    once, in id order. Before, with the booster's wallet first in id order, the release held it and waited for
    the fees wallet, which the settlement held while it waited for the booster's: a deadlock. Now a completing
    settlement locks every wallet it moves at once, in id order, after the receivables (0161).

    Here the settlement is held by a gate that locks the creator's campaign_creators row (after the payouts were
    booked, before the completion), and the release comes in then.
    """
    business, booster = flows.user("business"), flows.user("supporter", "creator")
    main_wallet_first(flows.pg, booster.id)
    campaign = world.campaign(business.id, payout="10.00", fund="100.00")
    creator = creator_on(flows, world, campaign)
    b, _ = await boost(flows, booster, campaign, "100.00")
    await flows.paid_tip(flows.user("supporter"), booster, "10.00")  # net 9.50, held 14 days: due first
    world.put([world.click(campaign, creator) for _ in range(20)])  # 200.00: the whole pool, the campaign completes
    quick_deadlocks(flows.pg)

    with pg_connect(flows.settings) as gate:
        gate.execute("SELECT 1 FROM campaign_creators WHERE campaign_id = %s FOR UPDATE", (campaign,))
        settle = Writer(settle_once, replace(flows.settings, hold_days=30))
        settle.start()
        until(lambda: waiting(flows.pg) == 1)  # at the creator's row, its payouts booked
        release = Writer(flows.release_holds)
        release.start()
        until(lambda: waiting(flows.pg) == 2)  # at a wallet the settlement holds
        gate.rollback()
        report = settle.finish()
        assert release.finish() == 2  # the tip's fee and net, once

    assert report["events_paid"] == 20 and budget(flows, campaign)[3] == "completed"
    assert reward(flows, b)["amount"] == D("5.00")  # 100.00 paid for, 5 %; held as the payouts are
    assert flows.wallet(booster) == (D("9.50"), D("5.00"))
    flows.assert_books()


async def test_no_flow_produces_a_prediction_reward_and_reconcile_names_one(flows, world):
    business, supporter = flows.user("business"), flows.user("supporter")
    campaign = world.campaign(business.id, payout="1.00", fund="10.00")
    await boost(flows, supporter, campaign, "5.00")
    await complete(flows, business, campaign)

    assert [r["source"] for r in await rewards_of(flows, supporter)] == ["boost"]
    assert await rewards_of(flows, supporter, "?source=prediction") == []
    flows.assert_books()
    # The schema still allows the seed's 'prediction'; a row of it was written by something that is not ours.
    flows.pg.execute("INSERT INTO rewards (user_id, source, amount, status, campaign_id)"
                     " VALUES (%s, 'prediction', 1.00, 'pending', %s)", (supporter.id, campaign))
    failed = {c.name: c.detail for c in reconcile(flows.settings) if not c.ok}
    assert list(failed) == ["rewards_have_a_flow"] and "source prediction" in failed["rewards_have_a_flow"]


async def test_a_supporter_without_kyc_cannot_withdraw_its_reward(flows, world):
    supporter = flows.user("supporter", kyc="pending")
    campaign = world.campaign(payout="10.00", fund="100.00")
    b, _ = await boost(flows, supporter, campaign, "300.00")
    await clicks(flows, world, campaign, creator_on(flows, world, campaign), 40)  # completes: the reward 15.00
    assert (reward(flows, b)["status"], reward(flows, b)["amount"]) == ("paid", D("15.00"))
    flows.release_holds()
    put = await flows.api.put("/v1/me/payout-account", json={"stripe_account_id": "acct_k"}, headers=supporter.headers)
    assert put.status == 200, await put.text()

    resp = await flows.api.post("/v1/withdrawals", json={"amount": "15.00", "method": "ach"},
                                headers=supporter.headers)

    assert (resp.status, (await resp.json())["error"]["code"]) == (403, "kyc_required")
    assert flows.wallet(supporter) == (D("15.00"), D("0.00"))  # nothing reserved
    flows.assert_books()


async def test_boost_rewards_never_exceed_the_fees_the_campaigns_payouts_paid(flows, world, redis):
    """Each payout's fee is rounded to the cent (a 0.04 click at 10 %: 0.00), a reward is 5 % of what its boost
    paid for over the campaign: the rewards a completion pays are capped at the fees booked on the campaign's
    payouts, pro rata, truncated."""
    s = shop(world, objective="click", payout="0.04", fund="1.00")
    first, second = flows.user("supporter"), flows.user("supporter")
    a, _ = await boost(flows, first, s.campaign, "10.00")
    b, _ = await boost(flows, second, s.campaign, "5.00")  # the pool: business 1, first 10, second 5
    await clicks(flows, world, s.campaign, creator_on(flows, world, s.campaign), 30)  # 1.20 paid, fees 0.00
    event = await open_event(flows.api, s, pct="50")
    assert (await sell(flows.api, s, event, "l-1", "0.30")).status == 202  # 0.15 paid, its fee 0.02
    await settle(world, redis)
    fees = flows.platform("fees")
    await complete(flows, s.business, s.campaign)

    # Uncapped: first paid 10/16 of 1.35, 5 % = 0.04; second 0.02. Capped at 0.02: 0.04 x 2/6 and 0.02 x 2/6.
    assert sum(fees) == D("0.02")
    assert (reward(flows, a)["amount"], reward(flows, b)["amount"]) == (D("0.01"), D("0.00"))
    assert flows.platform("rewards") == (D("0.00"), D("0.01"))
    flows.assert_books()
