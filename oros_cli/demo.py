"""``oros dev --demo``: a business, a funded active click campaign, an accepted creator and a link; the
creator's community with a supporter in it.

Everything goes through the public admin API, the way a real client would,
so the demo is also a smoke test. With the embedded Stripe running, the
business pays the campaign by card (the intent is confirmed at localstripe,
whose signed webhook credits the budget); otherwise an admin records the
funds off-Stripe. Re-running it against the same data directory logs the same
accounts in and reuses their campaign.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from oros.accounts import create_admin
from oros.settings import Settings
from oros.stripe_gateway import async_stripe_client

PASSWORD = "demo-password-123"
ADMIN_EMAIL = "admin@demo.oros.dev"
BUSINESS_EMAIL = "business@demo.oros.dev"
CREATOR_EMAIL = "creator@demo.oros.dev"
SUPPORTER_EMAIL = "supporter@demo.oros.dev"
COMMUNITY = "Demo: behind the sneakers"
BUDGET = "100.00"
TEST_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}
WEBHOOK_WAIT_S = 30  # localstripe delivers a second after the payment


class DemoError(RuntimeError):
    """The admin API refused a step of the demo set-up."""


@dataclass
class Demo:
    admin_url: str
    tracker_url: str
    link_url: str
    campaign_id: str
    tokens: dict[str, str]
    stripe_api_base: str | None  # the embedded Stripe, when it funded the campaign by card


async def _call(session: aiohttp.ClientSession, method: str, url: str, token: str | None = None, **json) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, json=json or None, headers=headers) as response:
        body = await response.json(content_type=None)
        if response.status >= 400:
            raise DemoError(f"{method} {url} -> {response.status} {body}")
        return body


async def _account(session, api: str, email: str, role: str) -> str:
    """Sign up, or log in when the account already exists; returns a token."""
    async with session.post(f"{api}/v1/auth/signup", json={
        "email": email, "password": PASSWORD, "roles": [role], "display_name": f"Demo {role}",
    }) as response:
        if response.status == 201:
            return (await response.json())["token"]
    return (await _call(session, "POST", f"{api}/v1/auth/login", email=email, password=PASSWORD))["token"]


async def _campaign(session, api: str, business: str, admin: str, settings: Settings, fund_by_card: bool) -> str:
    existing = await _call(session, "GET", f"{api}/v1/campaigns?mine=true", business)
    if existing["items"]:
        return existing["items"][0]["id"]
    campaign = await _call(
        session, "POST", f"{api}/v1/campaigns", business,
        title="Demo: summer sneakers", description="Pay per click demo campaign", hashtags=["demo", "sneakers"],
        objective="click", payout_per_action="0.50", total_budget=BUDGET,
        destination_url="https://example.com/sneakers",
    )
    if fund_by_card:
        await _fund_by_card(session, api, business, settings, campaign["id"])
    else:
        await _call(session, "POST", f"{api}/v1/admin/campaigns/{campaign['id']}/funding", admin,
                    amount=BUDGET, reference="demo wire transfer")
    await _call(session, "POST", f"{api}/v1/campaigns/{campaign['id']}/activate", business)
    return campaign["id"]


async def _community(session, api: str, creator: str, creator_id: str, supporter: str) -> None:
    """The creator's community with an open post, the supporter a member (joining again is a no-op)."""
    mine = await _call(session, "GET", f"{api}/v1/communities?creator_id={creator_id}", creator)
    if mine["items"]:
        community_id = mine["items"][0]["id"]
    else:
        community_id = (await _call(session, "POST", f"{api}/v1/communities", creator, name=COMMUNITY,
                                    description="Drops, shoots and the stories behind them."))["id"]
        await _call(session, "POST", f"{api}/v1/communities/{community_id}/posts", creator, content_type="text",
                    body="Welcome! The summer range shoot is next week.")
    await _call(session, "POST", f"{api}/v1/communities/{community_id}/join", supporter)


async def _fund_by_card(session, api: str, business: str, settings: Settings, campaign_id: str) -> None:
    """The business pays at the embedded Stripe; the budget rises when its webhook arrives."""
    funding = await _call(session, "POST", f"{api}/v1/campaigns/{campaign_id}/fund", business, amount=BUDGET)
    # What Stripe.js does in the browser; localstripe confirms with the secret key only.
    client, http = async_stripe_client(settings)
    try:
        method = await client.v1.payment_methods.create_async({"type": "card", "card": TEST_CARD})
        await client.v1.payment_intents.update_async(funding["payment_intent_id"], {"payment_method": method.id})
        await client.v1.payment_intents.confirm_async(funding["payment_intent_id"])
    finally:
        await http.close_async()
    deadline = asyncio.get_running_loop().time() + WEBHOOK_WAIT_S
    while (await _call(session, "GET", f"{api}/v1/campaigns/{campaign_id}", business))["remaining_budget"] != BUDGET:
        if asyncio.get_running_loop().time() > deadline:
            raise DemoError(f"the card payment {funding['payment_intent_id']} succeeded at localstripe, but its "
                            f"webhook did not credit the campaign within {WEBHOOK_WAIT_S} s")
        await asyncio.sleep(0.25)


async def set_up_demo(settings: Settings, *, admin_url: str, tracker_url: str, fund_by_card: bool = False) -> Demo:
    create_admin(settings, ADMIN_EMAIL, PASSWORD)
    async with aiohttp.ClientSession() as session:
        login = await _call(session, "POST", f"{admin_url}/v1/auth/login", email=ADMIN_EMAIL, password=PASSWORD)
        admin = login["token"]
        business = await _account(session, admin_url, BUSINESS_EMAIL, "business")
        creator = await _account(session, admin_url, CREATOR_EMAIL, "creator")
        campaign_id = await _campaign(session, admin_url, business, admin, settings, fund_by_card)
        me = await _call(session, "GET", f"{admin_url}/v1/me", creator)
        creator_id = me["user"]["id"] if "user" in me else me["id"]
        joined = await session.post(f"{admin_url}/v1/campaigns/{campaign_id}/creators",
                                    headers={"Authorization": f"Bearer {creator}"}, json={})
        joined.release()
        await session.post(f"{admin_url}/v1/campaigns/{campaign_id}/creators/{creator_id}/accept",
                           headers={"Authorization": f"Bearer {business}"}, json={})
        link = await _call(session, "POST", f"{admin_url}/v1/campaigns/{campaign_id}/links", creator)
        supporter = await _account(session, admin_url, SUPPORTER_EMAIL, "supporter")
        await _community(session, admin_url, creator, creator_id, supporter)
    return Demo(admin_url, tracker_url, f"{tracker_url}/{link['code']}", campaign_id,
                {"admin": admin, "business": business, "creator": creator, "supporter": supporter},
                settings.stripe_api_base if fund_by_card else None)


def _card_funding_text(demo: Demo) -> str:
    if demo.stripe_api_base is None:
        return ("Card funding: no embedded Stripe in this run (STRIPE_API_KEY or STRIPE_API_BASE is set), so an\n"
                "admin recorded the funds off-Stripe (POST /v1/admin/campaigns/{id}/funding).")
    stripe, pi = demo.stripe_api_base, "$PI"
    return f"""Card funding works end to end on this machine: localstripe (the embedded Stripe, a child of
oros dev) runs at {stripe} and sends its signed webhooks to {demo.admin_url}/v1/webhooks/stripe;
the demo campaign was funded by card through it when it was created. Fund 50.00 more the same way
(localstripe takes any sk_ key):
PI=$(curl -s -X POST -H "Authorization: Bearer $OROS_BUSINESS_TOKEN" -d '{{"amount": "50.00"}}' \\
  {demo.admin_url}/v1/campaigns/{demo.campaign_id}/fund \\
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["payment_intent_id"])')
PM=$(curl -s -u sk_test_demo: {stripe}/v1/payment_methods -d type=card -d "card[number]=4242424242424242" \\
  -d "card[exp_month]=12" -d "card[exp_year]=2034" -d "card[cvc]=123" \\
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -s -u sk_test_demo: {stripe}/v1/payment_intents/{pi} -d payment_method=$PM > /dev/null
curl -s -u sk_test_demo: -X POST {stripe}/v1/payment_intents/{pi}/confirm > /dev/null
sleep 2; curl -s -H "Authorization: Bearer $OROS_BUSINESS_TOKEN" {demo.admin_url}/v1/campaigns/{demo.campaign_id}
# Memberships and monthly tips are subscriptions, paid the same way: the creator subscribes to creator_plus
# and pays its first invoice (the intent in its client_secret) with that card; localstripe's webhook activates it.
PI=$(curl -s -X POST -H "Authorization: Bearer $OROS_CREATOR_TOKEN" -d '{{"membership_type": "creator_plus"}}' \\
  {demo.admin_url}/v1/memberships \\
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"].split("_secret_")[0])')
curl -s -u sk_test_demo: {stripe}/v1/payment_intents/{pi} -d payment_method=$PM > /dev/null
curl -s -u sk_test_demo: -X POST {stripe}/v1/payment_intents/{pi}/confirm > /dev/null
sleep 2; curl -s -H "Authorization: Bearer $OROS_CREATOR_TOKEN" {demo.admin_url}/v1/me/memberships"""


def print_demo(demo: Demo) -> None:
    print(f"""
OROS demo is running.
  web app    {demo.admin_url}/   log in as any account below
  tracker    {demo.tracker_url}     admin API {demo.admin_url}  (OpenAPI at /openapi.json)
  demo link  {demo.link_url}
  campaign   {demo.campaign_id} (click, 0.50 per click, {BUDGET} funded, active)
  accounts   finance/admin {ADMIN_EMAIL}
             business      {BUSINESS_EMAIL}
             creator       {CREATOR_EMAIL}
             supporter     {SUPPORTER_EMAIL} (a member of the creator's community)
             password      {PASSWORD} (all four)

Tokens, ready to paste into another shell:
export OROS_ADMIN_TOKEN={demo.tokens['admin']}
export OROS_BUSINESS_TOKEN={demo.tokens['business']}
export OROS_CREATOR_TOKEN={demo.tokens['creator']}
export OROS_SUPPORTER_TOKEN={demo.tokens['supporter']}

Then: click the link as a browser would, settle now (settlement also runs every
OROS_SETTLE_INTERVAL_S seconds), and look at the creator's wallet:
curl -si -A 'Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0' {demo.link_url} | head -3
curl -s -X POST -H "Authorization: Bearer $OROS_ADMIN_TOKEN" {demo.admin_url}/v1/admin/settlements
curl -s -H "Authorization: Bearer $OROS_CREATOR_TOKEN" {demo.admin_url}/v1/wallet

{_card_funding_text(demo)}
Ctrl-C stops.
""", flush=True)
