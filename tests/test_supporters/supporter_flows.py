"""Steps the supporter tests share: users, posts, tips paid through Stripe's webhooks, money read back.

The admin API runs as the login that holds only ``oros_api`` (as in
production), against the billing double (tests/billing_double.py), which
passes PaymentIntents through to localstripe. Webhooks are posted the way
Stripe posts them, signed with the real scheme.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from admin_api.auth import issue_token
from oros.stripe_gateway import stripe_client
from settler.holds import release_due
from settler.reconcile import reconcile

from billing_double import BillingDouble, charge, dispute

D = Decimal
SYSTEM = "00000000-0000-0000-0000-000000000001"
VISA = "4242424242424242"


@dataclass(frozen=True)
class User:
    id: str
    headers: dict


@dataclass
class Flows:
    api: object  # the aiohttp test client
    pg: object  # owner connection
    settings: object  # owner settings (settler, reconcile)
    stripe_settings: object  # the API's settings: oros_api login, Stripe = the double
    billing: BillingDouble
    sent: list = field(default_factory=list)

    # -- people and posts ------------------------------------------------------------------------

    def user(self, *roles: str, kyc: str = "approved", min_tip: str | None = None,
             stripe_account: str | None = None) -> User:
        row = self.pg.execute("INSERT INTO users (email, kyc_status) VALUES (%s, %s) RETURNING id::text AS id",
                              (f"{secrets.token_hex(6)}@example.com", kyc)).fetchone()
        for role in roles:
            self.pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)", (row["id"], role))
        if "creator" in roles:
            self.pg.execute("INSERT INTO creator_profiles (user_id, min_tip_amount, stripe_account_id)"
                            " VALUES (%s, %s, %s)", (row["id"], D(min_tip or "1.00"), stripe_account))
        return User(row["id"], {"Authorization": f"Bearer {issue_token(self.settings, row['id'])}"})

    def post(self, creator: User, *, min_tip_to_unlock: str | None = None) -> str:
        community = self.pg.execute("INSERT INTO communities (creator_id, name) VALUES (%s, 'fans')"
                                    " RETURNING id::text AS id", (creator.id,)).fetchone()["id"]
        return self.pg.execute(
            "INSERT INTO community_posts (community_id, creator_id, content_type, content_url, is_locked,"
            " min_tip_to_unlock) VALUES (%s, %s, 'video', 'https://cdn.example/v.mp4', %s, %s)"
            " RETURNING id::text AS id",
            (community, creator.id, min_tip_to_unlock is not None, D(min_tip_to_unlock) if min_tip_to_unlock else None),
        ).fetchone()["id"]

    # -- tips ------------------------------------------------------------------------------------

    async def open_tip(self, supporter: User, creator: User, amount: str, *, frequency: str = "one_time",
                       **extra) -> dict:
        resp = await self.api.post("/v1/tips", json={"to_creator_id": creator.id, "amount": amount,
                                                     "frequency": frequency, **extra}, headers=supporter.headers)
        assert resp.status == 201, await resp.text()
        return await resp.json()

    async def paid_tip(self, supporter: User, creator: User, amount: str, **extra) -> dict:
        """A one_time tip whose payment_intent.succeeded has arrived: the webhook's answer."""
        tip = await self.open_tip(supporter, creator, amount, **extra)
        status, body = await self.send(*self.succeeded(tip["stripe_payment_intent_id"], _cents(amount)))
        assert (status, body["status"]) == (200, "applied"), body
        return body

    def succeeded(self, pi: str, cents: int, **kw) -> tuple[bytes, dict]:
        return self.billing.event("payment_intent.succeeded", {
            "id": pi, "object": "payment_intent", "amount": cents, "amount_received": cents, "currency": "usd",
            "status": "succeeded"}, **kw)

    def refunded(self, pi: str, amount: str, refunded: str, **kw) -> tuple[bytes, dict]:
        return self.billing.event("charge.refunded", charge(pi, _cents(amount), _cents(refunded)), **kw)

    def disputed(self, kind: str, pi: str, amount: str, status: str, dispute_id: str, **kw) -> tuple[bytes, dict]:
        return self.billing.event(kind, dispute(pi, _cents(amount), status, dispute_id=dispute_id), **kw)

    async def send(self, payload: bytes, headers: dict) -> tuple[int, dict]:
        resp = await self.api.post("/v1/webhooks/stripe", data=payload, headers=headers)
        return resp.status, await resp.json()

    async def card_pays(self, pi: str) -> None:
        """What Stripe.js does in the supporter's browser, at localstripe: attach a card, confirm."""
        client = stripe_client(replace(self.stripe_settings, stripe_api_base=self.billing.upstream))
        method = await asyncio.to_thread(client.v1.payment_methods.create, {
            "type": "card", "card": {"number": VISA, "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
        await asyncio.to_thread(client.v1.payment_intents.update, pi, {"payment_method": method.id})
        await asyncio.to_thread(client.v1.payment_intents.confirm, pi)

    # -- money -----------------------------------------------------------------------------------

    def tip_row(self, tip_id: str) -> dict:
        return self.pg.execute("SELECT * FROM tips WHERE id = %s", (tip_id,)).fetchone()

    def wallet(self, user: str | User, purpose: str = "main") -> tuple[Decimal, Decimal]:
        """(available, pending); a wallet that does not exist yet holds nothing."""
        row = self.pg.execute("SELECT available_balance, pending_balance FROM wallets WHERE user_id = %s"
                              " AND purpose = %s", (getattr(user, "id", user), purpose)).fetchone()
        return (row["available_balance"], row["pending_balance"]) if row else (D("0.00"), D("0.00"))

    def platform(self, purpose: str) -> tuple[Decimal, Decimal]:
        return self.wallet(SYSTEM, purpose)

    def owed(self, user: User) -> Decimal:
        return self.wallet(user, "receivable")[0]

    def release_holds(self) -> int:
        return release_due(self.settings, datetime.now(UTC) + timedelta(days=self.settings.hold_days, minutes=1))

    def assert_books(self) -> None:
        failed = [c for c in reconcile(self.settings) if not c.ok]
        assert not failed, failed


def join(world, campaign: str, creator_id: str) -> tuple[str, str]:
    """An existing user accepted on a World campaign, with a link: (creator, link)."""
    world.pg.execute("INSERT INTO campaign_creators (campaign_id, creator_id, status) VALUES (%s, %s, 'accepted')",
                     (campaign, creator_id))
    link = world.pg.execute(
        "INSERT INTO tracking_links (campaign_id, creator_id, code, url, destination_url)"
        " VALUES (%s, %s, %s, 'http://t/x', 'https://example.com') RETURNING id::text AS id",
        (campaign, creator_id, uuid.uuid4().hex[:12])).fetchone()["id"]
    return creator_id, link


def _cents(amount: str) -> int:
    return int(D(amount) * 100)


async def wait_for(pg, query: str, params: tuple, expected, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while (pg.execute(query, params).fetchone() or {}).get("n") != expected:
        assert time.monotonic() < deadline, f"never reached {expected}: {query}"
        await asyncio.sleep(0.2)

