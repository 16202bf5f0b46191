"""Confirming a card funding server-side (``admin_api/card_payments.py``) against localstripe: the card
becomes a payment method the way the page's Stripe.js does it (a token made with the publishable key),
the webhook credits the budget, and strangers, bad ids, declined cards and repeats are answered clearly."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import replace
from decimal import Decimal

import pytest
import requests

from admin_api.app import create_app
from admin_api.auth import issue_token

WEBHOOK_SECRET = "whsec_card_" + secrets.token_hex(8)
VISA, VISA_3DS, DECLINED = "4242424242424242", "4000002500003155", "4000000000000341"


@pytest.fixture
def stripe_settings(settings, localstripe_url):
    return replace(settings, stripe_api_base=localstripe_url, stripe_webhook_secret=WEBHOOK_SECRET)


@pytest.fixture
async def api(aiohttp_client, stripe_settings, localstripe_url):
    client = await aiohttp_client(create_app(stripe_settings))
    requests.post(f"{localstripe_url}/_config/webhooks/oros-card-test",
                  data={"url": str(client.server.make_url("/v1/webhooks/stripe")), "secret": WEBHOOK_SECRET},
                  timeout=5).raise_for_status()
    return client


def bearer(settings, user_id: str) -> dict:
    return {"Authorization": f"Bearer {issue_token(settings, user_id)}"}


def card_from_the_page(localstripe_url: str, number: str) -> str:
    """What the page's Stripe.js (localstripe's stand-in) sends: a token made with the publishable key only."""
    token = requests.post(f"{localstripe_url}/v1/tokens", timeout=5, data={
        "card[number]": number, "card[exp_month]": "12", "card[exp_year]": "2034", "card[cvc]": "123",
        "key": "pk_test_oros"})
    token.raise_for_status()
    return token.json()["card"]["id"]


async def open_funding(api, world, amount: str = "30.00") -> tuple[str, dict, dict]:
    business = world.user("business")
    campaign = world.campaign(business, fund=None, status="draft")
    auth = bearer(world.settings, business)
    resp = await api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": amount}, headers=auth)
    assert resp.status == 201, await resp.text()
    return campaign, await resp.json(), auth


async def credited(pg, campaign: str) -> Decimal:
    deadline = time.monotonic() + 20
    while (funded := pg.execute("SELECT funded_budget FROM campaigns WHERE id = %s",
                                (campaign,)).fetchone()["funded_budget"]) == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return funded


async def test_a_typed_card_pays_and_the_webhook_credits_once(api, world, pg, localstripe_url):
    campaign, funding, auth = await open_funding(api, world)
    path = f"/v1/campaigns/{campaign}/fundings/{funding['id']}/confirm"
    method = card_from_the_page(localstripe_url, VISA)

    resp = await api.post(path, json={"payment_method": method}, headers=auth)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"funding_id": funding["id"], "payment_intent_id": funding["payment_intent_id"],
                                 "status": "succeeded"}
    assert await credited(pg, campaign) == Decimal("30.00")
    # Pressing Pay again charges nothing more: the funding is closed.
    again = await api.post(path, json={"payment_method": method}, headers=auth)
    assert again.status == 409 and (await again.json())["error"]["code"] == "funding_closed"
    await asyncio.sleep(0.5)
    assert pg.execute("SELECT funded_budget FROM campaigns WHERE id = %s", (campaign,)).fetchone()[
        "funded_budget"] == Decimal("30.00")


async def test_3ds_card_waits_for_the_challenge(api, world, localstripe_url):
    campaign, funding, auth = await open_funding(api, world)
    path = f"/v1/campaigns/{campaign}/fundings/{funding['id']}/confirm"
    resp = await api.post(path, json={"payment_method": card_from_the_page(localstripe_url, VISA_3DS)}, headers=auth)
    assert (await resp.json())["status"] == "requires_action"
    # Retried before the challenge: nothing new is confirmed, the page is told to finish 3-D Secure.
    resp = await api.post(path, json={"payment_method": card_from_the_page(localstripe_url, VISA)}, headers=auth)
    assert (await resp.json())["status"] == "requires_action"


async def test_declined_card_is_named_on_the_field(api, world, localstripe_url):
    campaign, funding, auth = await open_funding(api, world)
    resp = await api.post(f"/v1/campaigns/{campaign}/fundings/{funding['id']}/confirm",
                          json={"payment_method": card_from_the_page(localstripe_url, DECLINED)}, headers=auth)
    assert resp.status == 402
    error = (await resp.json())["error"]
    assert error["code"] == "card_declined" and error["field"] == "payment_method" and error["message"]


async def test_strangers_and_bad_input(api, world, localstripe_url):
    campaign, funding, auth = await open_funding(api, world)
    path = f"/v1/campaigns/{campaign}/fundings/{funding['id']}/confirm"
    method = card_from_the_page(localstripe_url, VISA)
    other = bearer(world.settings, world.user("business"))
    creator = bearer(world.settings, world.user("creator"))
    assert (await api.post(path, json={"payment_method": method}, headers=other)).status == 404
    assert (await api.post(path, json={"payment_method": method}, headers=creator)).status == 403
    assert (await api.post(path, json={"payment_method": method})).status == 401
    elsewhere = world.campaign(world.business_of(campaign), fund=None, status="draft")
    resp = await api.post(f"/v1/campaigns/{elsewhere}/fundings/{funding['id']}/confirm",
                          json={"payment_method": method}, headers=auth)
    assert resp.status == 404
    for bad in (None, 42, "", "pm_", "tok_abc", "pm_a\x00b", "pm_" + "a" * 300, "pm_ünïcode"):
        resp = await api.post(path, json={"payment_method": bad}, headers=auth)
        assert resp.status == 422, bad
        assert (await resp.json())["error"]["field"] == "payment_method"
    resp = await api.post(path, json={"payment_method": "pm_doesnotexist"}, headers=auth)
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "payment_method"
    resp = await api.post(path, data=b"\xff\xfe", headers={**auth, "Content-Type": "application/json"})
    assert resp.status == 400


# ---- Tips and boosts: the same server-side confirmation, for a supporter's own one-time intent ----

async def wait_until(pg, query: str, params: tuple, expected) -> None:
    deadline = time.monotonic() + 20
    while (found := pg.execute(query, params).fetchone()["v"]) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert found == expected


async def test_a_tip_paid_by_a_typed_card_is_booked_by_the_webhook_once(api, world, pg, localstripe_url):
    supporter, creator = world.user("supporter"), world.user("creator")
    auth = bearer(world.settings, supporter)
    resp = await api.post("/v1/tips", json={"to_creator_id": creator, "amount": "7.50", "frequency": "one_time"},
                          headers=auth)
    assert resp.status == 201, await resp.text()
    intent = await resp.json()
    path = f"/v1/tips/{intent['id']}/confirm"
    resp = await api.post(path, json={"payment_method": card_from_the_page(localstripe_url, VISA)}, headers=auth)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"id": intent["id"], "payment_intent_id": intent["stripe_payment_intent_id"],
                                 "status": "succeeded"}
    await wait_until(pg, "SELECT count(*) AS v FROM tips WHERE intent_id = %s", (intent["id"],), 1)
    sent = await (await api.get("/v1/tips?direction=sent", headers=auth)).json()
    assert [(t["intent_id"], t["amount"], t["net_amount"]) for t in sent["items"]] == [(intent["id"], "7.50", "7.12")]
    again = await api.post(path, json={"payment_method": card_from_the_page(localstripe_url, VISA)}, headers=auth)
    assert again.status == 409 and (await again.json())["error"]["code"] == "tip_closed"
    world.assert_books()


async def test_a_boost_paid_by_a_typed_card_is_credited_and_shown_to_its_supporter(api, world, pg, localstripe_url):
    campaign = world.campaign(fund="10.00")
    supporter = world.user("supporter")
    auth = bearer(world.settings, supporter)
    resp = await api.post(f"/v1/campaigns/{campaign}/boosts", json={"amount": "5.00"}, headers=auth)
    assert resp.status == 201, await resp.text()
    intent = await resp.json()
    assert (await (await api.get(f"/v1/boosts/{intent['id']}", headers=auth)).json())["status"] == "pending"
    resp = await api.post(f"/v1/boosts/{intent['id']}/confirm",
                          json={"payment_method": card_from_the_page(localstripe_url, VISA)}, headers=auth)
    assert (resp.status, (await resp.json())["status"]) == (200, "succeeded")
    await wait_until(pg, "SELECT status AS v FROM boost_intents WHERE id = %s", (intent["id"],), "succeeded")
    shown = await (await api.get(f"/v1/boosts/{intent['id']}", headers=auth)).json()
    assert (shown["status"], shown["amount"], shown["campaign_id"]) == ("succeeded", "5.00", campaign)
    assert "client_secret" not in shown
    assert world.campaign_row(campaign)["funded_budget"] == Decimal("15.00")
    world.assert_books()


async def test_tip_and_boost_confirmation_refuse_strangers_others_intents_and_bad_input(api, world, localstripe_url):
    supporter, creator = world.user("supporter"), world.user("creator")
    auth = bearer(world.settings, supporter)
    tip = await (await api.post("/v1/tips", json={"to_creator_id": creator, "amount": "3.00",
                                                  "frequency": "one_time"}, headers=auth)).json()
    campaign = world.campaign()
    boost = await (await api.post(f"/v1/campaigns/{campaign}/boosts", json={"amount": "2.00"}, headers=auth)).json()
    method = card_from_the_page(localstripe_url, VISA)
    other = bearer(world.settings, world.user("supporter"))
    for path in (f"/v1/tips/{tip['id']}/confirm", f"/v1/boosts/{boost['id']}/confirm"):
        assert (await api.post(path, json={"payment_method": method}, headers=other)).status == 404
        # The tipped creator sees the tip intent (RLS) but did not send it, and is no supporter.
        assert (await api.post(path, json={"payment_method": method},
                               headers=bearer(world.settings, creator))).status == 403
        assert (await api.post(path, json={"payment_method": method})).status == 401
        for bad in (None, "", "tok_abc", "pm_a\x00b", "pm_ünïcode"):
            resp = await api.post(path, json={"payment_method": bad}, headers=auth)
            assert (resp.status, (await resp.json())["error"]["field"]) == (422, "payment_method"), bad
        resp = await api.post(path, data=b"\xff\xfe", headers={**auth, "Content-Type": "application/json"})
        assert resp.status == 400
    # A boost's id is not a tip's, nor the other way round; a malformed id is 404.
    assert (await api.post(f"/v1/tips/{boost['id']}/confirm", json={"payment_method": method},
                           headers=auth)).status == 404
    assert (await api.post(f"/v1/boosts/{tip['id']}/confirm", json={"payment_method": method},
                           headers=auth)).status == 404
    assert (await api.post("/v1/tips/not-an-id/confirm", json={"payment_method": method}, headers=auth)).status == 404
    assert (await api.get(f"/v1/boosts/{boost['id']}", headers=other)).status == 404
    assert (await api.get(f"/v1/boosts/{tip['id']}", headers=auth)).status == 404
    # A declined card is named on the field; the tip stays open for another card.
    resp = await api.post(f"/v1/tips/{tip['id']}/confirm",
                          json={"payment_method": card_from_the_page(localstripe_url, DECLINED)}, headers=auth)
    assert (resp.status, (await resp.json())["error"]["field"]) == (402, "payment_method")


async def test_membership_tiers_are_listed_publicly_as_configured(api):
    resp = await api.get("/v1/membership-tiers")
    assert resp.status == 200
    assert await resp.json() == {"base_active_campaigns": 5, "items": [
        {"name": "creator_plus", "role": "creator", "monthly_price": "9.99", "fee_pct_cap": "8.00",
         "max_active_campaigns": None, "unlocks_supporter_posts": False},
        {"name": "creator_pro", "role": "creator", "monthly_price": "29.99", "fee_pct_cap": "5.00",
         "max_active_campaigns": None, "unlocks_supporter_posts": False},
        {"name": "supporter_plus", "role": "supporter", "monthly_price": "4.99", "fee_pct_cap": None,
         "max_active_campaigns": None, "unlocks_supporter_posts": True},
        {"name": "business_growth", "role": "business", "monthly_price": "99.00", "fee_pct_cap": None,
         "max_active_campaigns": 25, "unlocks_supporter_posts": False}]}


async def test_racing_confirmations_of_one_boost_charge_and_credit_it_once(api, world, pg, localstripe_url):
    campaign = world.campaign(fund="10.00")
    auth = bearer(world.settings, world.user("supporter"))
    intent = await (await api.post(f"/v1/campaigns/{campaign}/boosts", json={"amount": "4.00"}, headers=auth)).json()
    path = f"/v1/boosts/{intent['id']}/confirm"
    methods = [card_from_the_page(localstripe_url, VISA) for _ in range(2)]
    answers = await asyncio.gather(*(api.post(path, json={"payment_method": m}, headers=auth) for m in methods))
    # One confirms; the other finds the intent past confirmation (its status) or is refused by Stripe: never 5xx.
    assert sorted(a.status for a in answers)[0] == 200 and all(a.status in (200, 409, 422) for a in answers)
    await wait_until(pg, "SELECT status AS v FROM boost_intents WHERE id = %s", (intent["id"],), "succeeded")
    await asyncio.sleep(0.5)
    assert pg.execute("SELECT count(*) AS n FROM boosts WHERE intent_id = %s", (intent["id"],)).fetchone()["n"] == 1
    assert world.campaign_row(campaign)["funded_budget"] == Decimal("14.00")
    world.assert_books()


async def test_a_card_saved_for_another_customer_pays_nothing(api, world, pg, localstripe_url):
    """The attack: someone else's saved card (its pm_ id learnt somehow) sent to pay my tip and my funding."""
    customer = requests.post(f"{localstripe_url}/v1/customers", auth=("sk_test_oros", ""), timeout=5).json()["id"]
    method = requests.post(f"{localstripe_url}/v1/payment_methods", auth=("sk_test_oros", ""), timeout=5, data={
        "type": "card", "card[number]": VISA, "card[exp_month]": "12", "card[exp_year]": "2034",
        "card[cvc]": "123"}).json()["id"]
    requests.post(f"{localstripe_url}/v1/payment_methods/{method}/attach", auth=("sk_test_oros", ""), timeout=5,
                  data={"customer": customer}).raise_for_status()
    supporter, creator = world.user("supporter"), world.user("creator")
    auth = bearer(world.settings, supporter)
    tip = await (await api.post("/v1/tips", json={"to_creator_id": creator, "amount": "3.00",
                                                  "frequency": "one_time"}, headers=auth)).json()
    resp = await api.post(f"/v1/tips/{tip['id']}/confirm", json={"payment_method": method}, headers=auth)
    assert (resp.status, (await resp.json())["error"]["field"]) == (422, "payment_method")
    campaign, funding, business = await open_funding(api, world)
    resp = await api.post(f"/v1/campaigns/{campaign}/fundings/{funding['id']}/confirm",
                          json={"payment_method": method}, headers=business)
    assert (resp.status, (await resp.json())["error"]["field"]) == (422, "payment_method")
    intents = [requests.get(f"{localstripe_url}/v1/payment_intents/{pi}", auth=("sk_test_oros", ""), timeout=5).json()
               for pi in (tip["stripe_payment_intent_id"], pg.execute(
                   "SELECT stripe_payment_intent_id AS pi FROM campaign_fundings WHERE id = %s",
                   (funding["id"],)).fetchone()["pi"])]
    assert [i["status"] for i in intents] == ["requires_payment_method"] * 2
    world.assert_books()
