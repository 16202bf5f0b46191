"""Test data written straight into a test's own stores: users, links, and the ``World`` of users, campaigns,
links and events.

``World`` builds users, funded campaigns, accepted creators and links with the
owner connection, and writes events straight into ClickHouse through ingest's
writer; tests get one from the ``world`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import itertools
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from admin_api.auth import issue_token
from ingest.writer import insert_events
from oros import apikeys
from oros.events import Event, uuid7
from settler.reconcile import reconcile

D = Decimal
DAY_MS = 86_400_000
SYSTEM = "00000000-0000-0000-0000-000000000001"
# The webhook events the tests subscribe a business to.
BUSINESS_EVENTS = ["conversion.recorded", "event.rejected", "settlement.completed"]


def now_ms() -> int:
    return int(time.time() * 1000)


def email_user(pg, prefix: str) -> str:
    """A user with nothing but an email address (``prefix``-…@example.com)."""
    email = f"{prefix}-{secrets.token_hex(4)}@example.com"
    return pg.execute("INSERT INTO users (email) VALUES (%s) RETURNING id::text AS id", (email,)).fetchone()["id"]


def make_user(pg, settings, *roles: str) -> tuple[str, dict]:
    """A user with ``roles`` and the Authorization header of a token for them."""
    user = pg.execute("INSERT INTO users (email) VALUES (%s) RETURNING id::text AS id",
                      (f"{secrets.token_hex(6)}@example.com",)).fetchone()["id"]
    for role in roles:
        pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)", (user, role))
    return user, {"Authorization": f"Bearer {issue_token(settings, user)}"}


def make_link(pg, *, status: str = "active", destination: str = "https://shop.example.com/p/1?ref=oros",
              supporter: bool = False) -> dict:
    """A business, its campaign, an accepted creator and one tracking link (with ``supporter``: a supporter's share
    link of the creator's link); returns all their ids."""
    business = email_user(pg, "biz")
    creator = email_user(pg, "creator")
    supporter_id = email_user(pg, "supporter") if supporter else None
    campaign = pg.execute(
        "INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget, status,"
        " destination_url) VALUES (%s, 'Spring', 'click', 0.50, 100.00, %s, %s) RETURNING id::text AS id",
        (business, status, destination),
    ).fetchone()["id"]
    pg.execute(
        "INSERT INTO campaign_creators (campaign_id, creator_id, status, accepted_at)"
        " VALUES (%s, %s, 'accepted', now())",
        (campaign, creator),
    )
    code = secrets.token_urlsafe(6).replace("-", "x").replace("_", "y")
    link = pg.execute(
        "INSERT INTO tracking_links (campaign_id, creator_id, code, url, destination_url)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id::text AS id",
        (campaign, creator, code, f"http://t.example/{code}", destination),
    ).fetchone()["id"]
    if supporter_id:  # the supporter's share link of it (0110) is the link the test clicks
        code = secrets.token_urlsafe(6).replace("-", "x").replace("_", "y")
        link = pg.execute(
            "INSERT INTO tracking_links (campaign_id, creator_id, supporter_id, code, url, destination_url,"
            " shared_from, share_pct) VALUES (%s, %s, %s, %s, %s, %s, %s, 10) RETURNING id::text AS id",
            (campaign, creator, supporter_id, code, f"http://t.example/{code}", destination, link),
        ).fetchone()["id"]
    return {
        "business": business, "creator": creator, "supporter": supporter_id, "campaign": campaign,
        "link": link, "code": code, "destination": destination,
    }


def odd_spellings(value: str) -> list[str]:
    """``value`` as uuid.UUID also parses it: 36 characters (the old length check) and other lengths."""
    h = value.replace("-", "")
    return [
        "urn:" + h, "{" + h + "--}", f"{h[:4]}-{h[4:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", "----" + h,
        "{" + value + "}", h, "urn:uuid:" + value, value + "\n", " " + value,
    ]


def subscribe(pg, owner: str, events: list[str], url: str = "https://hooks.example.com/") -> str:
    """A webhook endpoint of ``owner`` listening to ``events``, with its signing secret."""
    endpoint = pg.execute("INSERT INTO webhook_endpoints (owner_id, url, events) VALUES (%s, %s, %s)"
                          " RETURNING id::text AS id", (owner, url, events)).fetchone()["id"]
    pg.execute("INSERT INTO webhook_endpoint_secrets (endpoint_id, secret) VALUES (%s, %s)",
               (endpoint, "whsec_" + secrets.token_urlsafe(32)))
    return endpoint


def make_api_key(pg, business: str) -> str:
    """A new API key of ``business``; returns its secret."""
    secret, prefix, key_hash = apikeys.generate()
    pg.execute(
        "INSERT INTO api_keys (user_id, name, key_prefix, key_hash) VALUES (%s, 'test', %s, %s)",
        (business, prefix, key_hash),
    )
    return secret


def make_campaign(pg, business: str) -> str:
    """A draft click campaign of ``business`` (0.50 a click, 100 budget)."""
    return pg.execute(
        "INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget, destination_url)"
        " VALUES (%s, 'Launch', 'click', 0.50, 100, 'https://example.com/') RETURNING id::text AS id", (business,)
    ).fetchone()["id"]


@dataclass
class World:
    pg: object
    settings: object
    # A fresh client address per click unless a test names one: the settler rejects a repeat
    # (campaign, ip, user agent) as a duplicate click, and random addresses did collide now and then.
    _addresses: itertools.count = field(default_factory=lambda: itertools.count(1))

    def user(self, role: str = "creator") -> str:
        name = uuid.uuid4().hex[:12]
        user_id = self.pg.execute(
            "INSERT INTO users (email, username) VALUES (%s, %s) RETURNING id::text AS id", (f"{name}@t.io", name)
        ).fetchone()["id"]
        self.pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)", (user_id, role))
        return user_id

    def campaign(self, business: str | None = None, *, objective: str = "click", payout: str = "1.00",
                 fund: str | None = "100.00", status: str = "active", active_since_ms: int | None = None,
                 start_ms: int | None = None, end_ms: int | None = None) -> str:
        business = business or self.user("business")
        start = datetime.fromtimestamp(start_ms / 1000, tz=UTC) if start_ms else None
        end = datetime.fromtimestamp(end_ms / 1000, tz=UTC) if end_ms else None
        campaign_id = self.pg.execute(
            """INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget, start_date,
                                     end_date, destination_url)
               VALUES (%s, 't', %s, %s, %s, %s, %s, 'https://example.com/') RETURNING id::text AS id""",
            (business, objective, D(payout), D(fund or "1000.00"), start, end),
        ).fetchone()["id"]
        if fund:
            self.pg.execute("SELECT oros_fund_campaign(%s, %s, 'manual', 'test', NULL)", (campaign_id, D(fund)))
        if status != "draft":
            self.pg.execute("UPDATE campaigns SET status = %s WHERE id = %s", (status, campaign_id))
        # Events in tests are often stamped in the past: date the activation back accordingly.
        since = datetime.fromtimestamp((active_since_ms or now_ms() - 90 * DAY_MS) / 1000, tz=UTC)
        self.pg.execute("UPDATE campaign_status_history SET changed_at = %s WHERE campaign_id = %s AND status = %s",
                        (since, campaign_id, status))
        self.pg.execute("UPDATE campaign_status_history SET changed_at = %s - interval '1 second'"
                        " WHERE campaign_id = %s AND status = 'draft'", (since, campaign_id))
        return campaign_id

    def business_of(self, campaign_id: str) -> str:
        return self.pg.execute("SELECT business_id::text AS b FROM campaigns WHERE id = %s",
                               (campaign_id,)).fetchone()["b"]

    def creator(self, campaign_id: str, status: str = "accepted") -> tuple[str, str]:
        """A new creator on the campaign with a link: (creator_id, link_id)."""
        return self.join(campaign_id, self.user("creator"), status)

    def join(self, campaign_id: str, creator_id: str, status: str = "accepted") -> tuple[str, str]:
        """``creator_id`` on the campaign too, with a link: (creator_id, link_id)."""
        self.pg.execute("INSERT INTO campaign_creators (campaign_id, creator_id, status) VALUES (%s, %s, %s)",
                        (campaign_id, creator_id, status))
        return creator_id, self.link(campaign_id, creator_id)

    def link(self, campaign_id: str, creator_id: str) -> str:
        """Another link of the creator's on the campaign: its id."""
        return self.pg.execute(
            "INSERT INTO tracking_links (campaign_id, creator_id, code, url, destination_url)"
            " VALUES (%s, %s, %s, 'http://t/x', 'https://example.com') RETURNING id::text AS id",
            (campaign_id, creator_id, uuid.uuid4().hex[:12]),
        ).fetchone()["id"]

    def click(self, campaign_id: str, creator: tuple[str, str], ts_ms: int | None = None, ip: str | None = None,
              **kw) -> Event:
        ts_ms = ts_ms or now_ms()
        return Event(event_id=str(uuid7(ts_ms)), event_type="click", ts_ms=ts_ms, campaign_id=campaign_id,
                     link_id=creator[1], creator_id=creator[0],
                     ip=ip or self._address(), **{"user_agent": "pytest", **kw})

    def _address(self) -> str:
        n = next(self._addresses)  # 172.16.0.0/12: apart from the 10.x addresses tests name
        return f"172.{16 + (n >> 16) % 16}.{(n >> 8) & 255}.{n & 255}"

    def conversion(self, click: Event, *, kind: str = "conversion", ts_ms: int | None = None,
                   order_id: str | None = None, business_id: str | None = None, value: str | None = None,
                   campaign_id: str | None = None) -> Event:
        ts_ms = ts_ms or click.ts_ms + 1000
        return Event(event_id=str(uuid7(ts_ms)), event_type=kind, ts_ms=ts_ms,
                     campaign_id=campaign_id or click.campaign_id, link_id=click.link_id,
                     creator_id=click.creator_id, click_id=click.event_id, order_id=order_id,
                     business_id=business_id or self.business_of(click.campaign_id), value=value, source="api")

    def put(self, events: list[Event]) -> None:
        insert_events(self.settings, events)

    def decision(self, event: Event) -> dict | None:
        return self.pg.execute("SELECT status, rejection_reason, payout_amount, platform_fee, transfer_id::text"
                               " AS transfer_id FROM events WHERE id = %s", (event.event_id,)).fetchone()

    def campaign_row(self, campaign_id: str) -> dict:
        return self.pg.execute("SELECT * FROM campaigns WHERE id = %s", (campaign_id,)).fetchone()

    def wallet(self, user_id: str, purpose: str = "main") -> dict:
        return self.pg.execute("SELECT * FROM wallets WHERE user_id = %s AND purpose = %s",
                               (user_id, purpose)).fetchone()

    def assert_books(self) -> None:
        failed = [c for c in reconcile(self.settings) if not c.ok]
        assert not failed, failed
