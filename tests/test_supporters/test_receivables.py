"""Refunds and disputes of tips: reversed inside the hold, a receivable after it, repaid by the next earnings."""

from __future__ import annotations

import pytest

from oros.connections import pg_connect
from oros.events import Event, uuid7
from settler.reconcile import reconcile
from settler.run import settle_once

from factories import now_ms
from interleave import Writer, lay_out, main_wallet_first, quick_deadlocks, until, waiting
from supporter_flows import D, join


async def tip_paid(flows, supporter, creator, amount: str) -> tuple[str, str]:
    """(tip id, its PaymentIntent)."""
    body = await flows.paid_tip(supporter, creator, amount)
    return body["tip_id"], flows.tip_row(body["tip_id"])["stripe_payment_intent_id"]


async def test_refunds_inside_the_hold_reverse_pro_rata_and_the_fee_never_moves_alone(flows):
    supporter, creator = flows.user("supporter"), flows.user("creator")
    tip, pi = await tip_paid(flows, supporter, creator, "10.00")  # fee 0.50, net 9.50

    status, body = await flows.send(*flows.refunded(pi, "10.00", "4.00"))

    assert (status, body["kind"], body["outcome"], body["taken_back"]) == (200, "tip", "reversed_in_hold", "4.00")
    # net back round_half_up(9.50 x 4/10) = 3.80, the fee the rest: 0.20.
    assert flows.wallet(creator) == (D("0.00"), D("5.70"))
    assert flows.platform("fees") == (D("0.00"), D("0.30"))
    assert flows.platform("clearing")[0] == D("6.00")
    flows.assert_books()
    await flows.send(*flows.refunded(pi, "10.00", "10.00"))
    assert flows.wallet(creator) == (D("0.00"), D("0.00")) and flows.platform("fees") == (D("0.00"), D("0.00"))
    assert flows.tip_row(tip)["reversed_amount"] == D("10.00")
    flows.assert_books()

    small, small_pi = await tip_paid(flows, supporter, creator, "1.00")  # fee 0.05, net 0.95
    await flows.send(*flows.refunded(small_pi, "1.00", "0.01"))  # one cent: the creator's, not the fee
    assert (flows.tip_row(small)["reversed_fee"], flows.wallet(creator)[1]) == (D("0.00"), D("0.94"))
    await flows.send(*flows.refunded(small_pi, "1.00", "0.50"))  # net round(0.475) = 0.48, fee 0.02
    assert (flows.tip_row(small)["reversed_fee"], flows.wallet(creator)[1]) == (D("0.02"), D("0.47"))
    flows.assert_books()


async def test_a_refund_after_the_hold_is_owed_and_the_next_tip_and_campaign_earning_repay_it(flows, world):
    supporter = flows.user("supporter")
    creator = flows.user("creator", stripe_account="acct_c")
    campaign = world.campaign(payout="1.00", fund="100.00")  # other cash at Stripe, as there always is
    clicker = join(world, campaign, creator.id)
    tip, pi = await tip_paid(flows, supporter, creator, "20.00")  # net 19.00
    flows.release_holds()
    resp = await flows.api.post("/v1/withdrawals", json={"amount": "15.00", "method": "ach"}, headers=creator.headers)
    assert resp.status == 201  # 15.00 reserved, 4.00 left available

    status, body = await flows.send(*flows.refunded(pi, "20.00", "20.00"))

    assert (status, body["outcome"]) == (200, "receivable")
    # 19.00 taken back: 4.00 from what was available, 15.00 owed (it was withdrawn). Never negative.
    assert flows.wallet(creator) == (D("0.00"), D("0.00")) and flows.owed(creator) == D("15.00")
    assert flows.platform("fees")[0] == D("0.00")  # the fee went back too
    flows.assert_books()
    resp = await flows.api.post("/v1/withdrawals", json={"amount": "10.00", "method": "ach"}, headers=creator.headers)
    assert (resp.status, (await resp.json())["error"]["code"]) == (422, "insufficient_funds")

    await tip_paid(flows, supporter, creator, "10.00")  # net 9.50: all of it repays
    assert flows.owed(creator) == D("5.50") and flows.wallet(creator) == (D("0.00"), D("0.00"))
    flows.assert_books()

    world.put([world.click(campaign, clicker) for _ in range(7)])  # 7 x net 0.90 = 6.30
    report = settle_once(flows.settings)
    assert report["events_paid"] == 7
    assert flows.owed(creator) == D("0.00") and flows.wallet(creator) == (D("0.00"), D("0.80"))
    total = flows.pg.execute("SELECT total_earned FROM campaign_creators WHERE creator_id = %s",
                             (creator.id,)).fetchone()["total_earned"]
    assert total == D("6.30")  # earned in full; part of it repaid a debt
    flows.assert_books()


async def test_sales_repay_a_debt_in_order_and_a_refund_in_the_hold_gives_back_what_its_sale_repaid(flows, world):
    """Three sales in one settlement repay a 15.00 debt in order (9.00, 6.00, nothing); refunding a sale
    inside its hold brings back the debt its commission repaid, and what the sale still pays repays it again."""
    supporter = flows.user("supporter")
    creator = flows.user("creator", stripe_account="acct_c")
    campaign = world.campaign(objective="sale", payout="10.00", fund="100.00")  # fee 1.00, net 9.00
    clicker = join(world, campaign, creator.id)
    _, pi = await tip_paid(flows, supporter, creator, "20.00")
    flows.release_holds()
    resp = await flows.api.post("/v1/withdrawals", json={"amount": "15.00", "method": "ach"}, headers=creator.headers)
    assert resp.status == 201
    await flows.send(*flows.refunded(pi, "20.00", "20.00"))
    assert flows.owed(creator) == D("15.00")
    start = now_ms() - 60_000
    clicks = [world.click(campaign, clicker, ts_ms=start + i) for i in range(3)]
    sales = [world.conversion(c, kind="sale", order_id=f"O-{i}", value="80.00", ts_ms=start + 1000 + i)
             for i, c in enumerate(clicks)]
    world.put([*clicks, *sales])

    assert settle_once(flows.settings)["events_paid"] == 3

    assert flows.owed(creator) == D("0.00") and flows.wallet(creator) == (D("0.00"), D("12.00"))  # 0 + 3 + 9
    flows.assert_books()

    def refund(order: str, total: str) -> Event:
        return Event(event_id=str(uuid7()), event_type="refund", ts_ms=now_ms(),
                     campaign_id="00000000-0000-0000-0000-000000000000", order_id=order,
                     business_id=world.business_of(campaign), value=total, source="api")

    world.put([refund("O-1", "80.00"), refund("O-0", "40.00")])  # the second whole, the first half
    report = settle_once(flows.settings)

    assert report["refunds"]["reversed"] == 2
    # O-1 repaid 6.00 and credited 3.00: both back. O-0 repaid 9.00: back, and its 4.50 left repays again.
    assert flows.owed(creator) == D("10.50") and flows.wallet(creator) == (D("0.00"), D("9.00"))
    total = flows.pg.execute("SELECT total_earned FROM campaign_creators WHERE creator_id = %s",
                             (creator.id,)).fetchone()["total_earned"]
    assert total == D("13.50")  # 4.50 + 0.00 + 9.00
    flows.assert_books()


async def test_available_money_is_swept_into_a_debt_before_a_withdrawal_is_reserved(flows, world):
    """Money that reaches the wallet while its user owes (a failed payout returning) cannot be withdrawn."""
    world.campaign(fund="100.00")
    supporter, creator = flows.user("supporter"), flows.user("creator", stripe_account="acct_c")
    _, pi = await tip_paid(flows, supporter, creator, "20.00")
    flows.release_holds()
    wid = (await (await flows.api.post("/v1/withdrawals", json={"amount": "19.00", "method": "ach"},
                                       headers=creator.headers)).json())["id"]
    await flows.send(*flows.refunded(pi, "20.00", "20.00"))
    assert flows.owed(creator) == D("19.00")
    flows.pg.execute("SELECT oros_finish_withdrawal(%s, false, NULL, 'account closed')", (wid,))
    assert flows.wallet(creator)[0] == D("19.00")  # back in the wallet, but owed

    resp = await flows.api.post("/v1/withdrawals", json={"amount": "19.00", "method": "ach"}, headers=creator.headers)

    # Swept first, so nothing was left to reserve: refused, whole (the sweep with it).
    assert (resp.status, (await resp.json())["error"]["code"]) == (422, "insufficient_funds")
    assert flows.pg.execute("SELECT count(*) AS n FROM withdrawals WHERE status = 'requested'").fetchone()["n"] == 0
    flows.release_holds()  # the hold-release job sweeps what owing users have available
    assert flows.owed(creator) == D("0.00") and flows.wallet(creator) == (D("0.00"), D("0.00"))
    flows.assert_books()


@pytest.mark.parametrize("released", [False, True], ids=["inside_hold", "after_hold"])
async def test_a_dispute_takes_the_tip_back_a_won_one_returns_it_a_lost_one_keeps_it(flows, world, released):
    world.campaign(fund="100.00")
    supporter, creator = flows.user("supporter"), flows.user("creator")
    won, won_pi = await tip_paid(flows, supporter, creator, "10.00")
    lost, lost_pi = await tip_paid(flows, supporter, creator, "4.00")
    if released:
        flows.release_holds()
    held = 0 if released else 1  # index of the balance that holds the creator's money

    for kind, status in (("charge.dispute.created", "needs_response"), ("charge.dispute.funds_withdrawn",
                                                                         "needs_response")):
        for dispute_id, pi, amount in (("dp_won", won_pi, "10.00"), ("dp_lost", lost_pi, "4.00")):
            assert (await flows.send(*flows.disputed(kind, pi, amount, status, dispute_id)))[0] == 200
    assert flows.wallet(creator)[held] == D("0.00") and flows.owed(creator) == D("0.00")
    assert flows.tip_row(won)["reversed_amount"] == D("10.00")
    flows.assert_books()

    await flows.send(*flows.disputed("charge.dispute.closed", won_pi, "10.00", "won", "dp_won"))
    await flows.send(*flows.disputed("charge.dispute.closed", lost_pi, "4.00", "lost", "dp_lost"))
    # A late, stale update of the won dispute changes nothing.
    await flows.send(*flows.disputed("charge.dispute.updated", won_pi, "10.00", "under_review", "dp_won"))

    assert flows.tip_row(won)["reversed_amount"] == D("0.00") and flows.tip_row(lost)["reversed_amount"] == D("4.00")
    assert flows.wallet(creator)[held] == D("9.50")
    flows.assert_books()


async def test_an_inquiry_moves_no_money_and_an_unknown_payment_is_kept_for_later(flows):
    supporter, creator = flows.user("supporter"), flows.user("creator")
    tip, pi = await tip_paid(flows, supporter, creator, "10.00")

    inquiry = await flows.send(*flows.disputed("charge.dispute.created", pi, "10.00", "warning_needs_response",
                                               "dp_inquiry"))
    stranger = await flows.send(*flows.disputed("charge.dispute.created", "pi_not_ours", "3.00",
                                                "needs_response", "dp_other"))

    assert inquiry[1]["outcome"] == "unchanged" and flows.tip_row(tip)["reversed_amount"] == D("0.00")
    assert stranger[1]["status"] == "ignored"
    assert flows.pg.execute("SELECT count(*) AS n FROM stripe_disputes").fetchone()["n"] == 2
    flows.assert_books()


async def test_a_takeback_larger_than_the_cash_at_stripe_waits_for_stripe_to_retry(flows, world):
    """The books never overdraw clearing: the webhook answers 503 (nothing applied) until cash arrives."""
    supporter, creator = flows.user("supporter"), flows.user("creator", stripe_account="acct_c")
    _, pi = await tip_paid(flows, supporter, creator, "20.00")
    flows.release_holds()
    await flows.api.post("/v1/withdrawals", json={"amount": "19.00", "method": "ach"}, headers=creator.headers)
    refund = flows.refunded(pi, "20.00", "20.00")  # clearing holds 1.00 now

    status, body = await flows.send(*refund)

    assert (status, body["error"]["code"]) == (503, "unavailable")
    claimed = flows.pg.execute("SELECT count(*) AS n FROM stripe_events WHERE type = 'charge.refunded'").fetchone()
    assert claimed["n"] == 0  # rolled back: Stripe's retry applies it
    # Stripe's side is kept meanwhile (before 0175 it rolled back too, and nothing said Stripe had taken it):
    # reconcile names the payment until the books take it back.
    kept = flows.pg.execute("SELECT refunded_amount FROM stripe_refunds WHERE payment_intent_id = %s", (pi,))
    assert kept.fetchone()["refunded_amount"] == D("20.00")
    failed = {c.name: c.detail for c in reconcile(flows.settings) if not c.ok}
    assert list(failed) == ["stripe_takebacks_applied"] and "took back 0.00, Stripe took back 20.00" in str(
        failed["stripe_takebacks_applied"]), failed
    world.campaign(fund="100.00")  # cash arrives
    status, body = await flows.send(*refund)
    assert (status, body["outcome"]) == (200, "receivable") and flows.owed(creator) == D("19.00")
    flows.assert_books()


async def test_two_credits_at_once_to_an_owing_creator_repay_the_debt_once(flows, world):
    """The second credit waits on the creator's receivable (locked first), then repays only what is left."""
    world.campaign(fund="100.00")
    supporter, creator = flows.user("supporter"), flows.user("creator")
    _, pi = await tip_paid(flows, supporter, creator, "10.00")
    flows.release_holds()
    flows.pg.execute(  # the creator spent what it had (an admin's adjustment out of its wallet)
        """INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, amount, direction, status)
           SELECT w, t, 'adjustment', 9.50, d, 'settled'
             FROM (VALUES ((SELECT id FROM wallets WHERE user_id = %s AND purpose = 'main'), 'debit'),
                          (oros_platform_wallet('clearing'), 'credit')) AS legs(w, d),
                  (SELECT gen_random_uuid() AS t) AS tr""", (creator.id,))
    await flows.send(*flows.refunded(pi, "10.00", "10.00"))
    assert flows.owed(creator) == D("9.50")
    intents = [(await flows.open_tip(supporter, creator, "8.00"))["stripe_payment_intent_id"] for _ in range(2)]
    credit = "SELECT outcome FROM oros_credit_tip('evt_' || %s, %s, NULL, NULL, 8.00, 'usd', 5, 14)"

    with pg_connect(flows.settings) as first, pg_connect(flows.settings) as second:
        assert first.execute(credit, (intents[0], intents[0])).fetchone()["outcome"] == "credited"  # open
        later = Writer(lambda: (second.execute(credit, (intents[1], intents[1])), second.commit()))
        later.start()
        until(lambda: waiting(flows.pg) == 1)  # on the creator's receivable, until the first commits
        first.commit()
        later.finish()

    # 2 x net 7.60 = 15.20: 9.50 repays the debt, exactly once; 5.70 is the creator's.
    assert flows.owed(creator) == D("0.00") and flows.wallet(creator) == (D("0.00"), D("5.70"))
    flows.assert_books()


async def test_a_tip_refunded_while_its_hold_is_released_moves_each_leg_once(flows):
    """charge.refunded of a tip at the moment the release job settles its held legs (a deadlock before 0161).

    The tip's refund (``oros_take_back_tip``) locks the tip, the creator's receivable, then the tip's held legs
    in id order, then their wallets. The release locked the due legs in the order it read them, so with the tip's
    higher leg read first it held that one and waited for the lower one, which the refund held while waiting for
    the higher: a deadlock, whichever the scan's order. Now the release locks the due legs in id order too (0161),
    so the first to lock the tip's lower leg has both, and the other waits for it to commit: a refund first
    reverses the held tip, a release first settles it and the refund makes it owed (then swept from the creator's
    available). Either way every leg moves once, the same money ends in the same wallets.

    Here the release is held, by a gate that locks another tip's held leg, between the tip's two legs (laid out
    higher, the other tip's, lower), and the refund comes in then.
    """
    supporter, creator, other = flows.user("supporter"), flows.user("creator"), flows.user("creator")
    tip, pi = await tip_paid(flows, supporter, creator, "10.00")  # fee 0.50, net 9.50
    other_tip, _ = await tip_paid(flows, supporter, other, "10.00")

    def held_legs(tip_id: str) -> list[str]:
        return [r["id"] for r in flows.pg.execute(
            "SELECT e.id::text AS id FROM ledger_entries e JOIN tips t ON t.transfer_id = e.transfer_id"
            " WHERE t.id = %s AND e.hold_until IS NOT NULL ORDER BY e.id", (tip_id,))]

    low, high = held_legs(tip)
    gate_leg = held_legs(other_tip)[0]
    lay_out(flows.pg, [high, gate_leg, low])
    quick_deadlocks(flows.pg)

    def take_back() -> dict:
        with pg_connect(flows.settings) as conn, conn.transaction():  # the webhook's transaction
            return conn.execute("SELECT * FROM oros_record_refund(%s, 'ch_tip', 10.00)", (pi,)).fetchone()

    with pg_connect(flows.settings) as gate:
        gate.execute("SELECT 1 FROM ledger_entries WHERE id = %s FOR UPDATE", (gate_leg,))
        release = Writer(flows.release_holds)
        release.start()
        until(lambda: waiting(flows.pg) == 1)  # at the gate's leg
        refund = Writer(take_back)
        refund.start()
        until(lambda: waiting(flows.pg) == 2 or not refund.is_alive())
        gate.rollback()
        outcome = refund.finish()
        release.finish()

    assert outcome["outcome"] in {"reversed_in_hold", "receivable"} and outcome["taken"] == D("10.00")
    flows.release_holds()  # nothing more is due, nothing is released twice
    assert flows.wallet(creator) == (D("0.00"), D("0.00")) and flows.owed(creator) == D("0.00")
    assert flows.wallet(other) == (D("9.50"), D("0.00"))
    assert flows.platform("fees") == (D("0.50"), D("0.00")) and flows.platform("clearing")[0] == D("10.00")
    flows.assert_books()


async def test_a_tip_refunded_after_its_hold_while_the_creators_next_earnings_are_released_moves_once(flows):
    """charge.refunded of a released tip while the release job settles the creator's next tip (a deadlock before
    0161): they share no leg, only wallets.

    The release's trigger locks the fees wallet and the creator's at once, in id order. The refund made the tip
    owed (the clearing, fees and receivable wallets), then swept the debt from the creator's available balance
    (its main wallet, in a statement of its own). Before, with the creator's wallet first in id order, the
    release held it and waited for the fees wallet, which the refund held while it waited for the creator's.
    Now oros_take_back_tip locks every wallet it may move at once, in id order, before its first movement, so
    whichever of the two locks the first wallet they share goes first.

    Here the refund is held by a gate that locks the tip's unlock of a post (refreshed between the two
    statements), and the release comes in then.
    """
    supporter, creator = flows.user("supporter"), flows.user("creator")
    main_wallet_first(flows.pg, creator.id)
    tip = (await flows.paid_tip(supporter, creator, "10.00", post_id=flows.post(creator, min_tip_to_unlock="5.00"))
           )["tip_id"]
    flows.release_holds()  # 9.50 the creator's
    await flows.paid_tip(supporter, creator, "4.00")  # net 3.80, held: the release job's next
    quick_deadlocks(flows.pg)

    def take_back() -> dict:
        with pg_connect(flows.settings) as conn, conn.transaction():  # the webhook's transaction
            return conn.execute("SELECT * FROM oros_record_refund(%s, 'ch_tip', 10.00)",
                                (flows.tip_row(tip)["stripe_payment_intent_id"],)).fetchone()

    with pg_connect(flows.settings) as gate:
        gate.execute("SELECT 1 FROM tip_unlocks WHERE tip_id = %s FOR UPDATE", (tip,))
        refund = Writer(take_back)
        refund.start()
        until(lambda: waiting(flows.pg) == 1)  # at the tip's unlock, the tip made owed
        release = Writer(flows.release_holds)
        release.start()
        until(lambda: waiting(flows.pg) == 2)  # at a wallet the refund holds
        gate.rollback()
        outcome = refund.finish()
        assert release.finish() == 2  # the next tip's fee and net, once

    # The 9.50 owed was swept from the 9.50 available; the next tip's 3.80 was released after.
    assert (outcome["outcome"], outcome["taken"]) == ("receivable", D("10.00"))
    assert flows.wallet(creator) == (D("3.80"), D("0.00")) and flows.owed(creator) == D("0.00")
    assert flows.platform("fees") == (D("0.20"), D("0.00")) and flows.platform("clearing")[0] == D("4.00")
    flows.assert_books()
