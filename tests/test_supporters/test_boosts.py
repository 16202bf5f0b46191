"""Boosts: money in only when Stripe confirms it, once, for what was asked; refused or refunded otherwise."""

from __future__ import annotations

import pytest

from oros.settings import Settings, SettingsError

from billing_double import sign
from boost_flows import activate, boost, budget, card_funded, open_boost, reward
from supporter_flows import D


async def test_a_boost_raises_escrow_and_the_budget_only_when_stripe_confirms_it(flows, world):
    business, supporter = flows.user("business"), flows.user("supporter")
    campaign = world.campaign(business.id, payout="1.00", fund="100.00")
    intent = await open_boost(flows, supporter, campaign, "25.00")

    assert (intent["status"], intent["amount"], intent["reward_pct"]) == ("pending", "25.00", "5.00")
    assert intent["client_secret"].startswith(intent["stripe_payment_intent_id"])
    assert budget(flows, campaign) == (D("100.00"), D("100.00"), D("100.00"), "active")  # nothing yet
    pi = intent["stripe_payment_intent_id"]

    payload, headers = flows.succeeded(pi, 2500)
    status, body = await flows.send(payload, headers)

    assert (status, body["status"], body["amount"]) == (200, "applied", "25.00")
    assert budget(flows, campaign) == (D("125.00"), D("125.00"), D("125.00"), "active")
    assert flows.platform("escrow")[0] == D("125.00") and flows.platform("clearing")[0] == D("125.00")
    legs = flows.pg.execute("SELECT w.purpose, e.direction, e.amount FROM ledger_entries e JOIN wallets w"
                            " ON w.id = e.wallet_id WHERE e.source_type = 'boost' AND e.source_id = %s"
                            " ORDER BY w.purpose", (body["boost_id"],)).fetchall()
    assert [(r["purpose"], r["direction"], r["amount"]) for r in legs] == [
        ("clearing", "debit", D("25.00")), ("escrow", "credit", D("25.00"))]
    row = flows.pg.execute("SELECT supporter_id::text AS s, amount, reward_pct FROM boosts WHERE id = %s",
                           (body["boost_id"],)).fetchone()
    assert (row["s"], row["amount"], row["reward_pct"]) == (supporter.id, D("25.00"), D("5.00"))
    assert (reward(flows, body["boost_id"])["status"], reward(flows, body["boost_id"])["amount"]) == ("pending", 0)
    flows.assert_books()

    # Replayed, redelivered under another event id, or forged: nothing moves again.
    assert (await flows.send(payload, headers))[1]["status"] == "duplicate"
    again = await flows.send(*flows.succeeded(pi, 2500))
    assert (again[1]["status"], again[1]["reason"]) == ("ignored", f"boost intent {intent['id']} is already credited")
    forged = sign(flows.succeeded(pi, 2500)[0], "whsec_" + "x" * 32)
    resp = await flows.api.post("/v1/webhooks/stripe", data=payload, headers=forged)
    assert (resp.status, (await resp.json())["error"]["code"]) == (400, "bad_signature")
    assert budget(flows, campaign)[2] == D("125.00")
    flows.assert_books()


async def test_a_tampered_amount_is_refused_for_good_and_credits_nothing(flows, world, caplog):
    supporter = flows.user("supporter")
    campaign = world.campaign(payout="1.00", fund="50.00")
    intent = await open_boost(flows, supporter, campaign, "10.00")
    pi = intent["stripe_payment_intent_id"]

    status, body = await flows.send(*flows.succeeded(pi, 1_000_000_00))
    later = await flows.send(*flows.succeeded(pi, 1000))  # even the right amount, afterwards

    assert (status, body["status"]) == (200, "ignored") and "asked for 10.00 usd" in body["reason"]
    assert (later[1]["status"], later[1]["reason"]) == ("ignored", body["reason"])
    row = flows.pg.execute("SELECT status FROM boost_intents WHERE id = %s", (intent["id"],)).fetchone()
    assert row["status"] == "refused" and budget(flows, campaign)[2] == D("50.00")
    assert any(r.levelname == "ERROR" and "boost payment refused" in r.message for r in caplog.records)
    flows.assert_books()


async def test_a_refund_that_beats_its_payment_is_applied_when_the_payment_arrives(flows, world):
    supporter = flows.user("supporter")
    campaign = world.campaign(payout="1.00", fund="40.00")
    pi = (await open_boost(flows, supporter, campaign, "10.00"))["stripe_payment_intent_id"]

    early = await flows.send(*flows.refunded(pi, "10.00", "4.00"))
    assert (early[1]["kind"], early[1]["outcome"]) == ("boost", "recorded")  # no sale's refund event
    status, body = await flows.send(*flows.succeeded(pi, 1000))

    assert (status, body["status"]) == (200, "applied")
    assert budget(flows, campaign)[1:3] == (D("46.00"), D("46.00"))  # 10.00 in, 4.00 of it back at once
    assert flows.pg.execute("SELECT taken_back FROM boosts WHERE id = %s",
                            (body["boost_id"],)).fetchone()["taken_back"] == D("4.00")
    flows.assert_books()


async def test_a_boost_paid_after_its_campaign_stopped_is_refunded_at_once(flows, world):
    business, supporter = flows.user("business"), flows.user("supporter")
    campaign, _ = await card_funded(flows, world, business, "30.00")
    await activate(flows, business, campaign)
    pi = (await open_boost(flows, supporter, campaign, "12.00"))["stripe_payment_intent_id"]
    assert (await flows.api.post(f"/v1/campaigns/{campaign}/pause", headers=business.headers)).status == 200

    status, body = await flows.send(*flows.succeeded(pi, 1200))

    assert (status, body["status"], body["outcome"]) == (200, "applied", "refunded")
    assert "no longer active" in body["reason"]
    assert budget(flows, campaign)[1:3] == (D("30.00"), D("30.00"))  # never booked
    assert flows.billing.refunded(pi) == 1200  # refunded through Stripe at once
    refund = flows.pg.execute("SELECT status, amount, stripe_refund_id FROM issued_refunds WHERE id = %s",
                              (body["refund_id"],)).fetchone()
    assert (refund["status"], refund["amount"]) == ("succeeded", D("12.00")) and refund["stripe_refund_id"]
    # Stripe then reports the refund: it is ours, so nothing is taken back, and it is no sale's refund.
    status, echo = await flows.send(*flows.refunded(pi, "12.00", "12.00"))
    assert (echo["kind"], echo["outcome"]) == ("boost", "recorded")
    assert flows.platform("clearing")[0] == D("30.00")
    flows.assert_books()


@pytest.mark.parametrize("amount, problem", [
    ("0.49", "at least 0.50"), ("0", "positive"), ("-5.00", "positive"), ("5.001", "two decimal places"),
    (5.0, "decimal string"), ("1000000.00", "at most"), (None, "decimal string"), ("NaN", "decimal string"),
    ("１０.00", "ASCII digits"), ("10.0٠", "ASCII digits")])
async def test_bad_amounts_are_refused_naming_the_field(flows, world, amount, problem):
    supporter = flows.user("supporter")
    campaign = world.campaign(payout="1.00", fund="10.00")
    resp = await flows.api.post(f"/v1/campaigns/{campaign}/boosts", json={"amount": amount},
                                headers=supporter.headers)
    error = (await resp.json())["error"]
    assert (resp.status, error["field"]) == (422, "amount") and problem in error["message"], error


async def test_who_may_boost_which_campaign(flows, world):
    business = flows.user("business", "supporter")
    campaign = world.campaign(business.id, payout="1.00", fund="10.00")
    member = flows.user("creator", "supporter")
    world.pg.execute("INSERT INTO campaign_creators (campaign_id, creator_id) VALUES (%s, %s)", (campaign, member.id))
    paused = world.campaign(business.id, payout="1.00", fund="10.00", status="paused")
    admin = flows.user("admin")

    async def refused(user, target, expected, body=None, raw=None):
        kwargs = {"data": raw} if raw is not None else {"json": body or {"amount": "5.00"}}
        resp = await flows.api.post(f"/v1/campaigns/{target}/boosts", headers=user.headers, **kwargs)
        assert (resp.status, (await resp.json())["error"]["code"]) == expected

    await refused(flows.user("creator"), campaign, (403, "forbidden"))  # not a supporter
    await refused(flows.user("business"), campaign, (403, "forbidden"))
    await refused(business, campaign, (409, "own_campaign"))
    await refused(member, campaign, (409, "campaign_member"))
    await refused(flows.user("supporter"), paused, (404, "not_found"))  # not public while paused
    await refused(admin, paused, (409, "campaign_not_active"))
    await refused(flows.user("supporter"), "8f9d0c5e-1111-4222-8333-944455556666", (404, "not_found"))
    await refused(flows.user("supporter"), "not-a-uuid", (404, "not_found"))
    await refused(flows.user("supporter"), campaign, (400, "bad_json"), raw=b'{"amount": "\xff\xfe"}')
    await refused(flows.user("supporter"), campaign, (422, "invalid"), body=[1])
    resp = await flows.api.post(f"/v1/campaigns/{campaign}/boosts", json={"amount": "5.00"})
    assert resp.status == 401
    assert flows.pg.execute("SELECT count(*) AS n FROM boost_intents").fetchone()["n"] == 0


async def test_an_idempotent_retry_gets_the_same_payment_intent(flows, world):
    supporter = flows.user("supporter")
    campaign = world.campaign(payout="1.00", fund="10.00")
    first = await open_boost(flows, supporter, campaign, "7.00", **{"Idempotency-Key": "boost-7"})
    again = await open_boost(flows, supporter, campaign, "7.00", **{"Idempotency-Key": "boost-7"})
    assert again == first
    resp = await flows.api.post(f"/v1/campaigns/{campaign}/boosts", json={"amount": "8.00"},
                                headers={**supporter.headers, "Idempotency-Key": "boost-7"})
    assert (resp.status, (await resp.json())["error"]["code"]) == (422, "idempotency_key_reused")
    _, pi = await boost(flows, flows.user("supporter"), campaign, "3.00")
    assert budget(flows, campaign)[2] == D("13.00") and pi != first["stripe_payment_intent_id"]


@pytest.mark.parametrize("raw", ["4.555", "101", "-1", "x", "NaN"])
def test_the_reward_percent_is_a_percent_with_two_places_at_most(raw):
    assert Settings.from_env({"OROS_BOOST_REWARD_PCT": "4.5"}).boost_reward_pct == D("4.5")
    with pytest.raises(SettingsError, match="OROS_BOOST_REWARD_PCT"):
        Settings.from_env({"OROS_BOOST_REWARD_PCT": raw})


@pytest.mark.parametrize(("env", "ok"), [
    ({"OROS_BOOST_REWARD_PCT": "5"}, True),  # creator_pro's fee cap, the lowest fee by default
    ({"OROS_BOOST_REWARD_PCT": "5.01"}, False),  # above it: the platform would pay out more than its fee
    ({"OROS_BOOST_REWARD_PCT": "4", "OROS_PLATFORM_FEE_PCT": "4"}, True),
    ({"OROS_BOOST_REWARD_PCT": "4.5", "OROS_PLATFORM_FEE_PCT": "4"}, False),  # the base fee below the caps
])
def test_the_reward_percent_is_at_most_the_lowest_creator_fee(env, ok):
    if ok:
        assert Settings.from_env(env).boost_reward_pct == D(env["OROS_BOOST_REWARD_PCT"])
    else:
        with pytest.raises(SettingsError, match="OROS_BOOST_REWARD_PCT=.* is above the lowest creator fee"):
            Settings.from_env(env)
