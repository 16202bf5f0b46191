"""Memberships: Stripe subscriptions driven by webhooks; each tier's effect; fees of the time an event happened."""

from __future__ import annotations

import time
from dataclasses import replace

from admin_api.app import create_app
from oros.connections import pg_connect
from settler.run import settle_once

from interleave import Writer, quick_deadlocks, until, waiting
from supporter_flows import SYSTEM as SUPPORTER_SYSTEM
from supporter_flows import D, join


async def subscribe(flows, user, tier: str) -> dict:
    resp = await flows.api.post("/v1/memberships", json={"membership_type": tier}, headers=user.headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def activate(flows, user, tier: str) -> dict:
    """Subscribe and pay the first invoice: the membership is active."""
    membership = await subscribe(flows, user, tier)
    invoice = flows.billing.pay(membership["billing_provider_id"])
    status, body = await flows.send(*flows.billing.event("invoice.paid", invoice))
    assert (status, body.get("outcome")) == (200, "activated"), body
    return membership


def membership(flows, membership_id: str) -> dict:
    return flows.pg.execute("SELECT * FROM memberships WHERE id = %s", (membership_id,)).fetchone()


async def test_a_membership_from_subscription_to_cancel_to_end(flows):
    creator = flows.user("creator")
    pending = await subscribe(flows, creator, "creator_plus")
    assert (pending["status"], pending["price"]) == ("pending", "9.99") and pending["client_secret"]
    again = await flows.api.post("/v1/memberships", json={"membership_type": "creator_plus"}, headers=creator.headers)
    assert (again.status, (await again.json())["error"]["code"]) == (409, "membership_exists")
    assert flows.pg.execute("SELECT count(*) AS n FROM fee_history").fetchone()["n"] == 0  # nothing paid yet

    invoice = flows.billing.pay(pending["billing_provider_id"])
    paid = await flows.send(*flows.billing.event("invoice.paid", invoice))
    twin = await flows.send(*flows.billing.event("invoice.payment_succeeded", invoice))

    assert paid[1]["outcome"] == "activated" and twin[1]["status"] == "ignored"
    row = membership(flows, pending["id"])
    assert row["status"] == "active" and row["started_at"] is not None and row["current_period_end"] is not None
    [span] = flows.pg.execute("SELECT fee_pct, effective_until FROM fee_history WHERE user_id = %s",
                              (creator.id,)).fetchall()
    assert span == {"fee_pct": D("8.00"), "effective_until": None}
    assert flows.platform("fees")[0] == D("9.99") and flows.platform("clearing")[0] == D("9.99")  # revenue
    mine = await (await flows.api.get("/v1/me/memberships", headers=creator.headers)).json()
    assert [(m["id"], m["status"]) for m in mine["items"]] == [(pending["id"], "active")]
    flows.assert_books()

    resp = await flows.api.post(f"/v1/memberships/{pending['id']}/cancel", headers=creator.headers)
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "active" and body["cancel_at_period_end"]
    assert body["ends_at"] == body["current_period_end"]
    assert flows.billing.subscription(pending["billing_provider_id"])["cancel_at_period_end"] is True
    stranger = await flows.api.post(f"/v1/memberships/{pending['id']}/cancel",
                                    headers=flows.user("creator").headers)
    assert stranger.status == 404

    ended = await flows.send(*flows.billing.event("customer.subscription.deleted",
                                                  flows.billing.end(pending["billing_provider_id"])))
    assert ended[1]["outcome"] == "ended"
    row = membership(flows, pending["id"])
    assert row["status"] == "canceled" and row["ends_at"] is not None
    assert flows.pg.execute("SELECT effective_until FROM fee_history").fetchone()["effective_until"] is not None
    # Ended for good: a stale "updated" (still active at Stripe when it was sent) revives nothing.
    await flows.send(*flows.billing.event("customer.subscription.updated", {
        **flows.billing.subscription(pending["billing_provider_id"]), "status": "active"}))
    assert membership(flows, pending["id"])["status"] == "canceled"
    flows.assert_books()


async def test_tiers_are_for_their_roles_and_a_price_unlike_the_tiers_activates_nothing(flows):
    supporter, business = flows.user("supporter"), flows.user("business")
    for user, tier in ((supporter, "creator_plus"), (business, "supporter_plus"), (supporter, "business_growth")):
        resp = await flows.api.post("/v1/memberships", json={"membership_type": tier}, headers=user.headers)
        assert resp.status == 403, tier
    bad = await flows.api.post("/v1/memberships", json={"membership_type": "gold"}, headers=supporter.headers)
    assert (bad.status, (await bad.json())["error"]["field"]) == (422, "membership_type")

    plus = await subscribe(flows, supporter, "supporter_plus")
    invoice = flows.billing.pay(plus["billing_provider_id"], amount_paid=1)  # the price edited in Stripe

    status, body = await flows.send(*flows.billing.event("invoice.paid", invoice))

    assert (status, body["status"]) == (200, "ignored") and "4.99" in body["reason"]
    assert membership(flows, plus["id"])["status"] == "pending"
    assert flows.platform("fees") == (D("0.00"), D("0.00"))
    flows.assert_books()


async def test_payment_that_never_comes_or_fails_for_good_expires_the_membership(flows):
    supporter, creator = flows.user("supporter"), flows.user("creator")
    pending = await subscribe(flows, supporter, "supporter_plus")
    active = await activate(flows, creator, "creator_pro")

    failed = await flows.send(*flows.billing.event("invoice.payment_failed", flows.billing.renew(
        active["billing_provider_id"]) | {"status": "open", "amount_paid": 0}))
    assert failed[1]["memberships_failed"] == 1
    assert membership(flows, active["id"])["status"] == "active"  # Stripe retries meanwhile
    await flows.send(*flows.billing.event("customer.subscription.updated", {
        **flows.billing.subscription(pending["billing_provider_id"]), "status": "incomplete_expired"}))
    await flows.send(*flows.billing.event("customer.subscription.deleted",
                                          flows.billing.end(active["billing_provider_id"])))

    assert membership(flows, pending["id"])["status"] == "expired"
    assert membership(flows, active["id"])["status"] == "expired"  # no cancel was asked: it lapsed
    assert flows.platform("fees")[0] == D("29.99")  # the one paid invoice stays booked
    flows.assert_books()


async def test_a_fee_change_applies_only_to_what_happens_after_it(flows, world, aiohttp_client):
    """creator_pro (5%) lowers campaign fees (base 10%) and tips (base 10% here) from its payment on only."""
    flows.stripe_settings = replace(flows.stripe_settings, tip_fee_pct=D("10"))
    flows.api = await aiohttp_client(create_app(flows.stripe_settings))
    supporter, creator = flows.user("supporter"), flows.user("creator")
    campaign = world.campaign(payout="1.00", fund="100.00")
    clicker = join(world, campaign, creator.id)
    now = int(time.time() * 1000)
    before = world.click(campaign, clicker, ts_ms=now - 3_600_000)
    tip_before = await flows.paid_tip(supporter, creator, "10.00")

    pro = await activate(flows, creator, "creator_pro")
    after = world.click(campaign, clicker, ts_ms=int(time.time() * 1000) + 1000)
    world.put([before, after])
    settle_once(flows.settings)  # one run, after the change: each event at the fee of its own time
    tip_after = await flows.paid_tip(supporter, creator, "10.00")

    assert world.decision(before)["platform_fee"] == D("0.10")
    assert world.decision(after)["platform_fee"] == D("0.05")
    assert flows.tip_row(tip_before["tip_id"])["platform_fee"] == D("1.00")
    assert flows.tip_row(tip_after["tip_id"])["platform_fee"] == D("0.50")
    flows.assert_books()

    await flows.send(*flows.billing.event("customer.subscription.deleted",
                                          flows.billing.end(pro["billing_provider_id"])))
    later = world.click(campaign, clicker, ts_ms=int(time.time() * 1000) + 1000)
    world.put([later])
    settle_once(flows.settings)
    assert world.decision(later)["platform_fee"] == D("0.10")
    flows.assert_books()


async def test_business_growth_raises_the_number_of_active_campaigns(flows, world):
    business = flows.user("business")
    for _ in range(5):
        world.campaign(business.id)
    sixth = world.campaign(business.id, status="draft")

    refused = await flows.api.post(f"/v1/campaigns/{sixth}/activate", headers=business.headers)
    assert (refused.status, (await refused.json())["error"]["code"]) == (409, "active_campaign_limit")
    await activate(flows, business, "business_growth")
    allowed = await flows.api.post(f"/v1/campaigns/{sixth}/activate", headers=business.headers)
    assert allowed.status == 200, await allowed.text()
    flows.assert_books()


async def test_a_renewal_books_each_month_once_and_moves_the_paid_period(flows):
    supporter = flows.user("supporter")
    plus = await activate(flows, supporter, "supporter_plus")
    sub = plus["billing_provider_id"]
    first_end = membership(flows, plus["id"])["current_period_end"]

    renewal = flows.billing.renew(sub)
    status, body = await flows.send(*flows.billing.event("invoice.paid", renewal))
    twin = await flows.send(*flows.billing.event("invoice.payment_succeeded", renewal))

    assert (status, body["outcome"], twin[1]["status"]) == (200, "renewed", "ignored")
    row = membership(flows, plus["id"])
    assert row["status"] == "active" and row["current_period_end"] > first_end
    assert flows.platform("fees")[0] == D("9.98") and flows.platform("clearing")[0] == D("9.98")  # 2 x 4.99
    assert flows.pg.execute("SELECT count(*) AS n FROM membership_invoices").fetchone()["n"] == 2
    flows.assert_books()


def tier_post(flows, creator, member) -> str:
    """A post locked to supporter_plus holders, in a community ``member`` joined."""
    community = flows.pg.execute("INSERT INTO communities (creator_id, name) VALUES (%s, 'club')"
                                 " RETURNING id::text AS id", (creator.id,)).fetchone()["id"]
    flows.pg.execute("INSERT INTO community_members (community_id, user_id) VALUES (%s, %s)", (community, member.id))
    return flows.pg.execute(
        "INSERT INTO community_posts (community_id, creator_id, content_type, content_url, is_locked, unlock_tier)"
        " VALUES (%s, %s, 'video', 'https://cdn.example/club.mp4', true, 'supporter_plus') RETURNING id::text AS id",
        (community, creator.id)).fetchone()["id"]


async def unlocked(flows, user, post: str) -> bool:
    resp = await flows.api.get(f"/v1/posts/{post}", headers=user.headers)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["unlocked"]


async def test_a_membership_disputed_or_refunded_whole_loses_its_benefits_at_once(flows, aiohttp_client):
    """A chargeback of creator_pro ends its 5% cap; supporter_plus refunded whole stops unlocking (0173)."""
    flows.stripe_settings = replace(flows.stripe_settings, tip_fee_pct=D("10"))
    flows.api = await aiohttp_client(create_app(flows.stripe_settings))
    supporter, creator = flows.user("supporter"), flows.user("creator")
    pro = await activate(flows, creator, "creator_pro")
    first = flows.billing.invoices[flows.billing.subscription(pro["billing_provider_id"])["latest_invoice"]]
    assert flows.tip_row((await flows.paid_tip(supporter, creator, "10.00"))["tip_id"])["platform_fee"] == D("0.50")

    status, body = await flows.send(*flows.disputed("charge.dispute.created", first["_payment_intent"], "29.99",
                                                    "needs_response", "dp_pro"))

    assert (status, body["kind"], body["outcome"]) == (200, "membership", "membership_ended"), body
    assert "cancel_subscription" not in body
    row = membership(flows, pro["id"])
    assert row["status"] == "canceled" and row["ends_at"] is not None
    assert flows.pg.execute("SELECT effective_until FROM fee_history WHERE membership_id = %s",
                            (pro["id"],)).fetchone()["effective_until"] is not None
    assert flows.billing.subscription(pro["billing_provider_id"])["status"] == "canceled"
    assert flows.tip_row((await flows.paid_tip(supporter, creator, "10.00"))["tip_id"])["platform_fee"] == D("1.00")
    flows.assert_books()

    plus = await activate(flows, supporter, "supporter_plus")
    pi = flows.billing.invoices[flows.billing.subscription(plus["billing_provider_id"])["latest_invoice"]][
        "_payment_intent"]
    post = tier_post(flows, creator, supporter)
    assert await unlocked(flows, supporter, post)
    partial = await flows.send(*flows.refunded(pi, "4.99", "1.00"))  # the period is still mostly paid: it runs
    assert partial[1]["outcome"] == "revenue_given_back" and await unlocked(flows, supporter, post)
    whole = await flows.send(*flows.refunded(pi, "4.99", "4.99"))
    assert whole[1]["outcome"] == "membership_ended"
    assert not await unlocked(flows, supporter, post)
    assert flows.billing.subscription(plus["billing_provider_id"])["status"] == "canceled"
    # Stripe then ends the subscription: already ended, nothing changes.
    ended = await flows.send(*flows.billing.event("customer.subscription.deleted",
                                                  flows.billing.end(plus["billing_provider_id"])))
    assert ended[1]["outcome"] == "already_ended"
    flows.assert_books()


async def test_a_stale_subscription_update_delivered_after_a_cancel_changes_nothing(flows):
    """Stripe does not deliver in order: an update sent before the cancel, arriving after it, is stale (0174)."""
    creator = flows.user("creator")
    plus = await activate(flows, creator, "creator_plus")
    sub = plus["billing_provider_id"]
    before = flows.billing.subscription(sub)  # cancel_at_period_end false: Stripe's state an hour ago
    sent_before = int(time.time()) - 3600

    resp = await flows.api.post(f"/v1/memberships/{plus['id']}/cancel", headers=creator.headers)
    assert resp.status == 200 and (await resp.json())["cancel_at_period_end"]
    cancel_at = membership(flows, plus["id"])["ends_at"]
    stale = await flows.send(*flows.billing.event("customer.subscription.updated", before, created=sent_before))

    assert stale[1]["outcome"] == "stale"
    row = membership(flows, plus["id"])
    assert (row["cancel_at_period_end"], row["ends_at"]) == (True, cancel_at)
    # Stripe's own events, reversed: the cancel (later) first, then the stale one.
    other = await activate(flows, flows.user("creator"), "creator_plus")
    state = flows.billing.subscription(other["billing_provider_id"])
    newer = await flows.send(*flows.billing.event("customer.subscription.updated",
                                                  {**state, "cancel_at_period_end": True}, created=sent_before + 60))
    older = await flows.send(*flows.billing.event("customer.subscription.updated", state, created=sent_before))
    assert (newer[1]["outcome"], older[1]["outcome"]) == ("updated", "stale")
    row = membership(flows, other["id"])
    assert row["cancel_at_period_end"] and row["ends_at"] is not None
    # A dashboard undoing the cancel later is followed.
    undone = await flows.send(*flows.billing.event("customer.subscription.updated", state))
    assert undone[1]["outcome"] == "updated" and membership(flows, other["id"])["ends_at"] is None
    flows.assert_books()


async def test_a_renewal_racing_a_dispute_of_its_older_invoice_does_not_deadlock(flows):
    """The dispute's takeback locks the membership before the wallets, as the renewal does: the renewal waits on
    the membership, never holding it while it waits on the wallets the dispute holds (before 0173's lock: 40P01)."""
    quick_deadlocks(flows.pg)
    supporter = flows.user("supporter")
    plus = await activate(flows, supporter, "supporter_plus")
    sub = plus["billing_provider_id"]
    pi = flows.billing.invoices[flows.billing.subscription(sub)["latest_invoice"]]["_payment_intent"]
    dispute = ("SELECT kind, outcome FROM oros_record_dispute('dp_old', %s, 'ch_old', 4.99, 'needs_response', true,"
               " false)")
    renewal = ("SELECT outcome FROM oros_membership_paid('evt_renew', %s, 'in_renew', 'pi_renew', 4.99, 'usd',"
               " 4.99, NULL, now() + interval '60 days')")
    wallets = "SELECT 1 FROM wallets WHERE user_id = %s AND purpose IN ('clearing', 'fees') FOR UPDATE"

    with (pg_connect(flows.settings) as gate, pg_connect(flows.settings) as disputing,
          pg_connect(flows.settings) as renewing):
        gate.execute(wallets, (SUPPORTER_SYSTEM,))  # both writers will wait on the wallets here
        first = Writer(lambda: (disputing.execute(dispute, (pi,)).fetchone(), disputing.commit())[0])
        first.start()
        until(lambda: waiting(flows.pg) == 1)
        second = Writer(lambda: (renewing.execute(renewal, (sub,)).fetchone(), renewing.commit())[0])
        second.start()
        until(lambda: waiting(flows.pg) == 2)
        gate.commit()
        assert first.finish() == {"kind": "membership", "outcome": "membership_ended"}
        assert second.finish() == {"outcome": "booked"}  # the money arrived; the ended membership stays ended

    assert membership(flows, plus["id"])["status"] == "canceled"
    assert flows.platform("fees")[0] == D("4.99")  # 2 x 4.99 less the 4.99 disputed
    flows.assert_books()


async def test_a_membership_refunded_before_its_invoice_is_booked_ends_and_stops_billing(flows, redis):
    """The refund reaches us before invoice.paid: kept, never a sale's refund; the booking then ends the
    membership and cancels its subscription, so no later invoice is booked for nothing (0178)."""
    supporter = flows.user("supporter")
    plus = await subscribe(flows, supporter, "supporter_plus")
    sub = plus["billing_provider_id"]
    pi = flows.billing.invoices[flows.billing.subscription(sub)["latest_invoice"]]["_payment_intent"]

    early = await flows.send(*flows.refunded(pi, "4.99", "4.99"))
    assert early[0] == 200 and await redis.xlen(flows.settings.keys.stream) == 0, early
    status, body = await flows.send(*flows.billing.event("invoice.paid", flows.billing.pay(sub)))

    assert (status, body["outcome"]) == (200, "membership_ended"), body
    assert membership(flows, plus["id"])["status"] == "canceled"
    assert flows.billing.subscription(sub)["status"] == "canceled"
    assert flows.platform("fees")[0] == D("0.00") and flows.platform("clearing")[0] == D("0.00")
    flows.assert_books()


async def test_a_membership_disputed_then_won_runs_again_until_its_paid_period_ends(flows, aiohttp_client):
    """The dispute ended it; won, the money is the platform's again, so the holder gets the paid period back:
    active until current_period_end (its subscription stays canceled), the fee cap until then (0179)."""
    flows.stripe_settings = replace(flows.stripe_settings, tip_fee_pct=D("10"))
    flows.api = await aiohttp_client(create_app(flows.stripe_settings))
    supporter, creator = flows.user("supporter"), flows.user("creator")
    pro = await activate(flows, creator, "creator_pro")
    pi = flows.billing.invoices[flows.billing.subscription(pro["billing_provider_id"])["latest_invoice"]][
        "_payment_intent"]
    lost = await flows.send(*flows.disputed("charge.dispute.created", pi, "29.99", "needs_response", "dp_won"))
    assert lost[1]["outcome"] == "membership_ended" and membership(flows, pro["id"])["status"] == "canceled"

    status, body = await flows.send(*flows.disputed("charge.dispute.closed", pi, "29.99", "won", "dp_won"))

    assert (status, body["outcome"]) == (200, "membership_restored"), body
    row = membership(flows, pro["id"])
    assert (row["status"], row["cancel_at_period_end"], row["ends_at"]) == ("active", True, row["current_period_end"])
    spans = flows.pg.execute("SELECT effective_until FROM fee_history WHERE membership_id = %s"
                             " ORDER BY effective_from", (pro["id"],)).fetchall()
    assert len(spans) == 2 and spans[1]["effective_until"] == row["current_period_end"]  # the gap stays closed
    assert flows.tip_row((await flows.paid_tip(supporter, creator, "10.00"))["tip_id"])["platform_fee"] == D("0.50")
    assert flows.billing.subscription(pro["billing_provider_id"])["status"] == "canceled"  # nothing billed again
    # Its period over, nothing of Stripe's ends it: it is no longer live, and the holder may subscribe again.
    flows.pg.execute("UPDATE memberships SET ends_at = now() - interval '1 second' WHERE id = %s", (pro["id"],))
    again = await subscribe(flows, creator, "creator_pro")
    assert again["status"] == "pending" and membership(flows, pro["id"])["status"] == "canceled"
    flows.assert_books()


async def test_a_won_dispute_restores_nothing_while_another_invoice_is_taken_back(flows):
    """X disputed ends it; the renewal Y refunded whole meanwhile; X won: Y's period was given back, so the
    membership stays ended (0179 judges every invoice, not only the one undone)."""
    supporter = flows.user("supporter")
    plus = await activate(flows, supporter, "supporter_plus")
    sub = plus["billing_provider_id"]
    first = flows.billing.invoices[flows.billing.subscription(sub)["latest_invoice"]]["_payment_intent"]
    renewal = flows.billing.renew(sub)
    assert (await flows.send(*flows.billing.event("invoice.paid", renewal)))[1]["outcome"] == "renewed"
    second = flows.billing.payment_intent_of(renewal)

    lost = await flows.send(*flows.disputed("charge.dispute.created", first, "4.99", "needs_response", "dp_x"))
    assert lost[1]["outcome"] == "membership_ended"
    assert (await flows.send(*flows.refunded(second, "4.99", "4.99")))[0] == 200
    status, body = await flows.send(*flows.disputed("charge.dispute.closed", first, "4.99", "won", "dp_x"))

    assert (status, body["outcome"]) == (200, "reinstated"), body  # the money back, the membership not
    assert membership(flows, plus["id"])["status"] == "canceled"
    assert flows.platform("fees")[0] == D("4.99")  # the first month's, won back; the second's refunded
    flows.assert_books()

