"""``oros dev --demo``: a business, a funded active click campaign, an accepted creator and a link.

Everything goes through the public admin API, the way a real client would,
so the demo is also a smoke test. Re-running it against the same data
directory logs the same accounts in and reuses their campaign.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from .accounts import create_admin
from .settings import Settings

PASSWORD = "demo-password-123"
ADMIN_EMAIL = "admin@demo.oros.dev"
BUSINESS_EMAIL = "business@demo.oros.dev"
CREATOR_EMAIL = "creator@demo.oros.dev"


class DemoError(RuntimeError):
    """The admin API refused a step of the demo set-up."""


@dataclass
class Demo:
    admin_url: str
    tracker_url: str
    link_url: str
    campaign_id: str
    tokens: dict[str, str]


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


async def _campaign(session, api: str, business: str, admin: str) -> str:
    existing = await _call(session, "GET", f"{api}/v1/campaigns?mine=true", business)
    if existing["items"]:
        return existing["items"][0]["id"]
    campaign = await _call(
        session, "POST", f"{api}/v1/campaigns", business,
        title="Demo: summer sneakers", description="Pay per click demo campaign", hashtags=["demo", "sneakers"],
        objective="click", payout_per_action="0.50", total_budget="100.00",
        destination_url="https://example.com/sneakers",
    )
    await _call(session, "POST", f"{api}/v1/admin/campaigns/{campaign['id']}/funding", admin,
                amount="100.00", reference="demo wire transfer")
    await _call(session, "POST", f"{api}/v1/campaigns/{campaign['id']}/activate", business)
    return campaign["id"]


async def set_up_demo(settings: Settings, *, admin_url: str, tracker_url: str) -> Demo:
    create_admin(settings, ADMIN_EMAIL, PASSWORD)
    async with aiohttp.ClientSession() as session:
        admin = (await _call(session, "POST", f"{admin_url}/v1/auth/login", email=ADMIN_EMAIL, password=PASSWORD))["token"]
        business = await _account(session, admin_url, BUSINESS_EMAIL, "business")
        creator = await _account(session, admin_url, CREATOR_EMAIL, "creator")
        campaign_id = await _campaign(session, admin_url, business, admin)
        me = await _call(session, "GET", f"{admin_url}/v1/me", creator)
        creator_id = me["user"]["id"] if "user" in me else me["id"]
        joined = await session.post(f"{admin_url}/v1/campaigns/{campaign_id}/creators",
                                    headers={"Authorization": f"Bearer {creator}"}, json={})
        joined.release()
        await session.post(f"{admin_url}/v1/campaigns/{campaign_id}/creators/{creator_id}/accept",
                           headers={"Authorization": f"Bearer {business}"}, json={})
        link = await _call(session, "POST", f"{admin_url}/v1/campaigns/{campaign_id}/links", creator)
    return Demo(admin_url, tracker_url, f"{tracker_url}/{link['code']}", campaign_id,
                {"admin": admin, "business": business, "creator": creator})


def print_demo(demo: Demo) -> None:
    print(f"""
OROS demo is running.
  web app    {demo.admin_url}/   log in as any account below
  tracker    {demo.tracker_url}     admin API {demo.admin_url}  (OpenAPI at /openapi.json)
  demo link  {demo.link_url}
  campaign   {demo.campaign_id} (click, 0.50 per click, 100.00 funded, active)
  accounts   finance/admin {ADMIN_EMAIL}
             business      {BUSINESS_EMAIL}
             creator       {CREATOR_EMAIL}
             password      {PASSWORD} (all three)

Tokens, ready to paste into another shell:
export OROS_ADMIN_TOKEN={demo.tokens['admin']}
export OROS_BUSINESS_TOKEN={demo.tokens['business']}
export OROS_CREATOR_TOKEN={demo.tokens['creator']}

Then: click the link as a browser would, settle now (settlement also runs every
OROS_SETTLE_INTERVAL_S seconds), and look at the creator's wallet:
curl -si -A 'Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0' {demo.link_url} | head -3
curl -s -X POST -H "Authorization: Bearer $OROS_ADMIN_TOKEN" {demo.admin_url}/v1/admin/settlements
curl -s -H "Authorization: Bearer $OROS_CREATOR_TOKEN" {demo.admin_url}/v1/wallet
Ctrl-C stops.
""", flush=True)
