"""One click paid end to end, over HTTP, with exact balances.

Business signs up, creates a click campaign, an admin funds it, the business
activates it; a creator joins, is accepted and makes a link; a click on the
tracker lands in the stream, ingest moves it to ClickHouse, a settlement pays
it; a second settlement pays nothing more; reconcile proves the books, and
fails once a wallet is corrupted.
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest

from admin_api.app import create_app as create_admin_app
from ingest.consumer import Ingester
from oros.accounts import create_admin
from oros_cli import main as cli
from oros_cli.demo import COMMUNITY, set_up_demo
from settler.jobs import OWNER_JOBS
from tracker.app import create_app as create_tracker_app

PASSWORD = "correct horse battery"
BROWSER = {"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
                         "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"}


@pytest.fixture
async def admin(aiohttp_client, settings):
    return await aiohttp_client(create_admin_app(settings, OWNER_JOBS))


@pytest.fixture
async def tracker(aiohttp_client, settings):
    return await aiohttp_client(create_tracker_app(settings))


async def call(client, method: str, path: str, token: str | None = None, expect: int = 200, **body):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.request(method, path, json=body if body else None, headers=headers)
    payload = await response.json()
    assert response.status == expect, (method, path, response.status, payload)
    return payload


async def signup(admin, email: str, role: str) -> tuple[str, str]:
    body = await call(admin, "POST", "/v1/auth/signup", expect=201, email=email, password=PASSWORD, roles=[role])
    return body["user"]["id"], body["token"]


def wallet(pg, purpose: str, user_id: str | None = None) -> tuple[Decimal, Decimal]:
    if user_id is None:
        row = pg.execute("SELECT available_balance, pending_balance FROM wallets WHERE id = oros_platform_wallet(%s)",
                         (purpose,)).fetchone()
    else:
        row = pg.execute("SELECT available_balance, pending_balance FROM wallets WHERE user_id = %s AND purpose = %s",
                         (user_id, purpose)).fetchone()
    return row["available_balance"], row["pending_balance"]


async def test_one_click_paid_end_to_end(admin, tracker, settings, pg, redis, cli_env):
    create_admin(settings, "root@example.com", PASSWORD)
    admin_token = (await call(admin, "POST", "/v1/auth/login", email="root@example.com", password=PASSWORD))["token"]
    business_id, business = await signup(admin, "shop@example.com", "business")
    creator_id, creator = await signup(admin, "maya@example.com", "creator")

    campaign = await call(
        admin, "POST", "/v1/campaigns", business, expect=201,
        title="Spring sale", objective="click", payout_per_action="1.00", total_budget="50.00",
        destination_url="https://shop.example/spring?ref=oros",
    )
    assert (campaign["status"], campaign["remaining_budget"]) == ("draft", "0.00")
    cid = campaign["id"]
    await call(admin, "POST", f"/v1/admin/campaigns/{cid}/funding", admin_token, expect=201,
               amount="50.00", reference="wire 42")
    activated = await call(admin, "POST", f"/v1/campaigns/{cid}/activate", business)
    assert (activated["status"], activated["remaining_budget"]) == ("active", "50.00")

    await call(admin, "POST", f"/v1/campaigns/{cid}/creators", creator, expect=201)
    await call(admin, "POST", f"/v1/campaigns/{cid}/creators/{creator_id}/accept", business)
    link = await call(admin, "POST", f"/v1/campaigns/{cid}/links", creator, expect=201)
    assert link["url"].endswith("/" + link["code"])

    response = await tracker.get(f"/{link['code']}?utm_source=ig", headers=BROWSER, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Cache-Control"] == "no-store"
    location = urlparse(response.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "shop.example", "/spring")
    query = parse_qs(location.query)
    assert query["ref"] == ["oros"] and query["utm_source"] == ["ig"]
    click_id = query["oros_cid"][0]
    assert await redis.xlen(settings.keys.stream) == 1  # in the stream before the 302 was answered

    ingester = Ingester(settings, consumer="e2e")
    try:
        assert await ingester.drain_once() == 1
    finally:
        await ingester.close()

    report = await call(admin, "POST", "/v1/admin/settlements", admin_token)
    assert report["events_paid"] == 1
    assert pg.execute("SELECT status FROM events WHERE id = %s", (click_id,)).fetchone()["status"] == "paid"

    expected = {
        "creator": (Decimal("0.00"), Decimal("0.90")),
        "fees": (Decimal("0.00"), Decimal("0.10")),
        "escrow": (Decimal("49.00"), Decimal("0.00")),
    }
    assert wallet(pg, "main", creator_id) == expected["creator"]
    assert wallet(pg, "fees") == expected["fees"]
    assert wallet(pg, "escrow") == expected["escrow"]
    mine = await call(admin, "GET", "/v1/wallet", creator)
    assert (mine["available_balance"], mine["pending_balance"]) == ("0.00", "0.90")
    assert (await call(admin, "GET", f"/v1/campaigns/{cid}", business))["remaining_budget"] == "49.00"

    again = await call(admin, "POST", "/v1/admin/settlements", admin_token)
    assert again["events_paid"] == 0
    assert wallet(pg, "main", creator_id) == expected["creator"]
    assert wallet(pg, "escrow") == expected["escrow"]

    assert (await call(admin, "GET", "/v1/admin/reconcile", admin_token))["ok"] is True
    assert cli.main(["reconcile"]) == 0


async def test_reconcile_fails_on_a_corrupted_wallet(admin, settings, pg, cli_env):
    create_admin(settings, "root@example.com", PASSWORD)
    admin_token = (await call(admin, "POST", "/v1/auth/login", email="root@example.com", password=PASSWORD))["token"]
    creator_id, _ = await signup(admin, "maya@example.com", "creator")
    assert cli.main(["reconcile"]) == 0

    pg.execute("UPDATE wallets SET available_balance = available_balance + 5 WHERE user_id = %s", (creator_id,))

    assert cli.main(["reconcile"]) != 0
    result = await call(admin, "GET", "/v1/admin/reconcile", admin_token)
    assert result["ok"] is False
    failed = [check for check in result["checks"] if not check["ok"]]
    assert failed and all(check["detail"] for check in failed)


async def test_demo_sets_up_a_paying_link(admin, tracker, settings):
    admin_url = str(admin.make_url("")).rstrip("/")
    tracker_url = str(tracker.make_url("")).rstrip("/")
    demo = await set_up_demo(settings, admin_url=admin_url, tracker_url=tracker_url)
    again = await set_up_demo(settings, admin_url=admin_url, tracker_url=tracker_url)
    assert again.campaign_id == demo.campaign_id
    # The demo supporter is a member of the creator's one community (a second run made no other).
    joined = await admin.get("/v1/communities?joined=true",
                             headers={"Authorization": f"Bearer {again.tokens['supporter']}"})
    assert [c["name"] for c in (await joined.json())["items"]] == [COMMUNITY]
    code = urlparse(demo.link_url).path.lstrip("/")
    response = await tracker.get(f"/{code}", headers=BROWSER, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"].startswith("https://example.com/sneakers?oros_cid=")
