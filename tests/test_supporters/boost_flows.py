"""Steps the boost tests share: campaigns funded by card, boosts paid through Stripe's webhook, the pool read back."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

from oros import issued_refunds
from settler.run import settle_once

from supporter_flows import D, Flows, User, join


async def card_funded(flows: Flows, world, business: User, *amounts: str, payout: str = "1.00",
                      manual: str | None = None) -> tuple[str, list[str]]:
    """A draft campaign funded off-Stripe by ``manual`` (first, if given), then by card for each amount in turn
    (API, then Stripe's webhook): (campaign, its PaymentIntents)."""
    campaign = world.campaign(business.id, payout=payout, fund=manual, status="draft")
    intents = []
    for amount in amounts:
        resp = await flows.api.post(f"/v1/campaigns/{campaign}/fund", json={"amount": amount},
                                    headers=business.headers)
        assert resp.status == 201, await resp.text()
        intents.append((await resp.json())["payment_intent_id"])
        status, body = await flows.send(*flows.succeeded(intents[-1], cents(amount)))
        assert (status, body["status"]) == (200, "applied"), body
    return campaign, intents


async def activate(flows: Flows, business: User, campaign: str) -> None:
    resp = await flows.api.post(f"/v1/campaigns/{campaign}/activate", headers=business.headers)
    assert resp.status == 200, await resp.text()


async def open_boost(flows: Flows, supporter: User, campaign: str, amount: str, **headers) -> dict:
    resp = await flows.api.post(f"/v1/campaigns/{campaign}/boosts", json={"amount": amount},
                                headers={**supporter.headers, **headers})
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def boost(flows: Flows, supporter: User, campaign: str, amount: str) -> tuple[str, str]:
    """A boost Stripe confirmed: (boost id, its PaymentIntent)."""
    intent = await open_boost(flows, supporter, campaign, amount)
    status, body = await flows.send(*flows.succeeded(intent["stripe_payment_intent_id"], cents(amount)))
    assert (status, body["status"]) == (200, "applied") and "boost_id" in body, body
    return body["boost_id"], intent["stripe_payment_intent_id"]


async def clicks(flows: Flows, world, campaign: str, creator: tuple[str, str], n: int) -> dict:
    """``n`` billable clicks on ``campaign``, settled (in a thread: a settlement that completes a campaign
    tells the trackers through an event loop of its own)."""
    world.put([world.click(campaign, creator) for _ in range(n)])
    return await settle(flows)


async def settle(flows: Flows) -> dict:
    return await asyncio.to_thread(settle_once, flows.settings)


def creator_on(flows: Flows, world, campaign: str) -> tuple[str, str]:
    return join(world, campaign, flows.user("creator").id)


def budget(flows: Flows, campaign: str) -> tuple[Decimal, Decimal, Decimal, str]:
    """(total, funded, remaining, status)."""
    row = flows.pg.execute("SELECT total_budget, funded_budget, remaining_budget, status FROM campaigns"
                           " WHERE id = %s", (campaign,)).fetchone()
    return row["total_budget"], row["funded_budget"], row["remaining_budget"], row["status"]


def held(flows: Flows, boost_id: str) -> Decimal:
    """What a boost still holds in its campaign's escrow, in cents (truncated)."""
    return flows.pg.execute("SELECT trunc(value, 2) AS v FROM boost_values WHERE boost_id = %s",
                            (boost_id,)).fetchone()["v"]


def reward(flows: Flows, boost_id: str) -> dict:
    return flows.pg.execute("SELECT * FROM rewards WHERE boost_id = %s", (boost_id,)).fetchone()


async def complete(flows: Flows, business: User, campaign: str) -> None:
    resp = await flows.api.post(f"/v1/campaigns/{campaign}/complete", headers=business.headers)
    assert resp.status == 200, await resp.text()


def send_pending_refunds(flows: Flows) -> dict:
    """The settler's refunds job, against the billing double."""
    return issued_refunds.send(replace(flows.settings, stripe_api_base=flows.billing.url))


def cents(amount: str) -> int:
    return int(D(amount) * 100)
