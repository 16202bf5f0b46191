"""The web app's server side: the session cookie and its CSRF rule, the pages' security headers,
the static files, GET /v1/config, and the admin queues the finance pages read.

The browser tests (tests/browser/) drive the app itself in Chromium.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path

import pytest

from admin_api import webapp
from admin_api.app import create_app
from admin_api.auth import CSRF_HEADER, SESSION_COOKIE, issue_token
from oros import webhooks
from oros.accounts import create_admin
from oros_cli import demo
from settler.jobs import OWNER_JOBS

PASSWORD = "web-password-123"
PAGE = {CSRF_HEADER: "page"}
WEB_DIR = Path(webapp.__file__).with_name("web")


@pytest.fixture
async def api(aiohttp_client, settings):
    return await aiohttp_client(create_app(settings, OWNER_JOBS))


async def open_session(api, role: str = "business", email: str | None = None) -> tuple[dict, str]:
    """Sign up through the session endpoint; returns the user and the CSRF token (the client keeps the cookie)."""
    email = email or f"{role}-{secrets.token_hex(4)}@example.com"
    resp = await api.post("/v1/auth/session/signup", headers=PAGE,
                          json={"email": email, "password": PASSWORD, "roles": [role]})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    return body["user"], body["csrf_token"]


def set_cookie(resp) -> str:
    return resp.headers.getone("Set-Cookie")


async def test_a_session_is_an_httponly_strict_cookie_and_no_token_in_the_body(api):
    resp = await api.post("/v1/auth/session/signup", headers=PAGE,
                          json={"email": "web@example.com", "password": PASSWORD, "roles": ["creator"]})
    assert resp.status == 201
    body = await resp.json()
    assert set(body) == {"user", "csrf_token"} and body["user"]["roles"] == ["creator"]
    cookie = set_cookie(resp)
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/" in cookie and "Secure" not in cookie  # plain http here
    assert resp.headers["Cache-Control"] == "no-store"
    token = cookie.split(";")[0].split("=", 1)[1]
    assert token not in await resp.text()

    me = await api.get("/v1/me")
    assert me.status == 200 and (await me.json())["email"] == "web@example.com"
    again = await api.get("/v1/auth/session")
    assert (await again.json())["csrf_token"] == body["csrf_token"]


async def test_login_opens_a_session_with_the_logins_own_checks(api):
    await open_session(api, "creator", "maya@example.com")
    api.session.cookie_jar.clear()
    wrong = await api.post("/v1/auth/session", headers=PAGE,
                           json={"email": "maya@example.com", "password": "nope-nope"})
    assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
    bad = await api.post("/v1/auth/session", headers=PAGE, json={"email": "not an email", "password": "x"})
    assert bad.status == 422 and (await bad.json())["error"]["field"] == "email"
    ok = await api.post("/v1/auth/session", headers=PAGE, json={"email": "maya@example.com", "password": PASSWORD})
    assert ok.status == 200 and SESSION_COOKIE in set_cookie(ok)


async def test_opening_a_session_needs_the_page_header(api):
    """A cross-site form cannot send headers, so it cannot log the victim into the attacker's account."""
    for path, body in (
            ("/v1/auth/session/signup", {"email": "a@example.com", "password": PASSWORD, "roles": ["creator"]}),
            ("/v1/auth/session", {"email": "a@example.com", "password": PASSWORD})):
        resp = await api.post(path, json=body)
        assert resp.status == 403 and (await resp.json())["error"]["field"] == CSRF_HEADER
        assert "Set-Cookie" not in resp.headers


async def test_a_cookie_request_that_changes_state_needs_the_csrf_token(api, pg):
    _, csrf = await open_session(api)
    campaign = {"title": "t", "objective": "click", "payout_per_action": "1.00", "total_budget": "5.00",
                "destination_url": "https://shop.example/"}
    forged = csrf[:-1] + ("1" if csrf.endswith("0") else "0")
    for headers in ({}, {CSRF_HEADER: "page"}, {CSRF_HEADER: forged}, {CSRF_HEADER: "é"}):
        resp = await api.post("/v1/campaigns", json=campaign, headers=headers)
        assert resp.status == 403, headers
        assert (await resp.json())["error"] == {
            "code": "csrf",
            "field": CSRF_HEADER,
            "message": f"a session request that changes state must send {CSRF_HEADER}",
        }
    assert pg.execute("SELECT count(*) AS n FROM campaigns").fetchone()["n"] == 0
    made = await api.post("/v1/campaigns", json=campaign, headers={CSRF_HEADER: csrf})
    assert made.status == 201


async def test_every_unsafe_operation_refuses_the_cookie_without_the_token(api, pg):
    """Not one route forgets the rule: each POST, PUT, PATCH and DELETE of the OpenAPI document."""
    await open_session(api)
    document = await (await api.get("/openapi.json")).json()
    campaign_id = "00000000-0000-0000-0000-000000000000"
    checked = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "head", "options") or operation["security"] == [] or path == "/v1/webhooks/stripe":
                continue
            url = re.sub(r"\{[^}]+\}", campaign_id, path)
            resp = await api.request(method.upper(), url, json={})
            assert resp.status == 403, (method, path, resp.status)
            assert (await resp.json())["error"]["code"] == "csrf", (method, path)
            checked.add(path)
    assert len(checked) >= 20
    # The payments and shares a forged page would most like to make with a victim's cookie are among them.
    assert {"/v1/tips/{id}/confirm", "/v1/memberships/{id}/confirm", "/v1/boosts/{id}/confirm", "/v1/tips",
            "/v1/memberships", "/v1/links/{code}/shares", "/v1/live-events/{id}/sales",
            "/v1/campaigns/{id}/fundings/{funding_id}/confirm", "/v1/tips/monthly/{id}/cancel"} <= checked


# What a business's GET with the cookie answers, without a row of its own but its campaign: the other roles'
# and finance's lists are 403, another kind of object named by the campaign's id is 404, the rest 200.
NOT_A_BUSINESS_LIST = {"/v1/me/earnings", "/v1/me/earnings.csv", "/v1/me/shares", "/v1/me/stats"}


def expected_get_status(path: str) -> int:
    if path.startswith("/v1/admin/") or path in NOT_A_BUSINESS_LIST:
        return 403
    if "{code}" in path or ("{id}" in path and not path.startswith("/v1/campaigns/")):
        return 404
    return 200


async def test_gets_with_the_cookie_change_nothing(api, pg):
    """A link or an image on another page can make the browser GET with the cookie (Lax would allow a
    top-level one): no GET of the API writes a row."""
    user, csrf = await open_session(api)
    made = await api.post("/v1/campaigns", headers={CSRF_HEADER: csrf}, json={
        "title": "t", "objective": "click", "payout_per_action": "1.00", "total_budget": "5.00",
        "destination_url": "https://shop.example/"})
    campaign_id = (await made.json())["id"]
    tables = [r["table_name"] for r in pg.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")]

    def snapshot() -> dict:
        return {t: pg.execute("SELECT count(*) AS n, md5(coalesce(string_agg(x::text, '' ORDER BY x::text), '')) AS h"
                              f' FROM "{t}" x').fetchone() for t in tables}

    before = snapshot()
    document = await (await api.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        if "get" in item:
            resp = await api.get(re.sub(r"\{(id|creator_id)\}", campaign_id, path).replace("{path}", "js/main.js")
                                 .replace("{code}", "abcdefgh"))
            assert resp.status == expected_get_status(path), path
    assert snapshot() == before


async def test_logout_ends_the_session_even_for_a_copied_cookie(api):
    _, csrf = await open_session(api)
    token = next(c.value for c in api.session.cookie_jar if c.key == SESSION_COOKIE)
    out = await api.delete("/v1/auth/session", headers={CSRF_HEADER: csrf})
    assert out.status == 200
    # The cookie is emptied and expired at once, on the path it was set for.
    assert set_cookie(out) == f'{SESSION_COOKIE}=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/'
    assert (await api.get("/v1/me")).status == 401
    replayed = await api.get("/v1/me", headers={"Cookie": f"{SESSION_COOKIE}={token}"})
    assert replayed.status == 401
    as_bearer = await api.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert as_bearer.status == 401
    assert (await api.delete("/v1/auth/session")).status == 403  # closing needs the page header too
    assert (await api.delete("/v1/auth/session", headers=PAGE)).status == 200  # nothing left to close


async def test_bearer_is_unchanged_and_decides_when_sent(api, settings):
    user, _ = await open_session(api, "creator")
    other_id = create_admin(settings, "root@example.com", "root-password")
    bearer = {"Authorization": f"Bearer {issue_token(settings, other_id)}"}
    me = await api.get("/v1/me", headers=bearer)
    assert (await me.json())["id"] == other_id  # the Bearer, not the cookie
    bad = await api.get("/v1/me", headers={"Authorization": "Basic abc"})
    assert bad.status == 401  # a bad Bearer is not rescued by the cookie
    # A Bearer request needs no CSRF header: no browser attaches it by itself.
    assert (await api.post("/v1/admin/holds/release", headers=bearer)).status == 200


@pytest.mark.parametrize("value", ["oros_live_abcdef", "not-a-jwt", "é"])
async def test_a_forged_cookie_is_refused_not_a_500(api, settings, value):
    resp = await api.get("/v1/me", headers={"Cookie": f"{SESSION_COOKIE}={value}"})
    assert resp.status == 401


async def test_a_login_jwt_in_the_cookie_is_not_a_session(api, settings):
    """Only a session (with its sid and CSRF token) rides in the cookie; a plain login token does not."""
    user_id = create_admin(settings, "root@example.com", "root-password")
    resp = await api.get("/v1/me", headers={"Cookie": f"{SESSION_COOKIE}={issue_token(settings, user_id)}"})
    assert resp.status == 401


async def test_secure_cookie_over_tls_from_a_trusted_proxy_only(aiohttp_client, settings):
    trusting = await aiohttp_client(create_app(replace(settings, trusted_proxies=(ip_network("127.0.0.0/8"),))))
    body = {"email": "tls@example.com", "password": PASSWORD, "roles": ["creator"]}
    resp = await trusting.post("/v1/auth/session/signup", json=body, headers={**PAGE, "X-Forwarded-Proto": "https"})
    assert "Secure" in set_cookie(resp)
    untrusting = await aiohttp_client(create_app(settings))
    resp = await untrusting.post("/v1/auth/session", headers={**PAGE, "X-Forwarded-Proto": "https"},
                                 json={"email": body["email"], "password": PASSWORD})
    assert resp.status == 200 and "Secure" not in set_cookie(resp)


async def test_campaign_listing_knows_the_cookie_user(api):
    """mine=true and drafts worked only with a Bearer: the listing treated a cookie caller as anonymous."""
    _, csrf = await open_session(api)
    made = await api.post("/v1/campaigns", headers={CSRF_HEADER: csrf}, json={
        "title": "Mine", "objective": "click", "payout_per_action": "1.00", "total_budget": "5.00",
        "destination_url": "https://shop.example/"})
    draft = await made.json()
    mine = await api.get("/v1/campaigns?mine=true")
    assert mine.status == 200 and [c["id"] for c in (await mine.json())["items"]] == [draft["id"]]
    assert (await api.get(f"/v1/campaigns/{draft['id']}")).status == 200


async def test_pages_carry_a_strict_csp_and_cannot_be_framed(api):
    for path in ("/", "/app/js/main.js", "/app/css/app.css"):
        resp = await api.get(path)
        assert resp.status == 200, path
        csp = resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        # Images: our own, data: URLs (uPlot) and creators' https images in posts; never plain http.
        directives = dict(directive.split(" ", 1) for directive in csp.split("; "))
        assert directives["img-src"] == "'self' data: https:"
        assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["X-Content-Type-Options"] == "nosniff"
    assert (await api.get("/")).headers["Content-Type"].startswith("text/html")
    assert (await api.get("/app/js/main.js")).headers["Content-Type"].startswith("text/javascript")


async def test_csp_allows_stripe_js_from_where_config_says(aiohttp_client, settings):
    client = await aiohttp_client(create_app(replace(settings, stripe_api_base="http://127.0.0.1:8420")))
    config = await (await client.get("/v1/config")).json()
    assert config["stripe"] == {"publishable_key": settings.stripe_publishable_key,
                                "js_url": "http://127.0.0.1:8420/js.stripe.com/v3/"}
    csp = (await client.get("/")).headers["Content-Security-Policy"]
    assert "script-src 'self' http://127.0.0.1:8420;" in csp
    production = await aiohttp_client(create_app(replace(settings, stripe_api_base=None)))
    assert (await (await production.get("/v1/config")).json())["stripe"]["js_url"] == "https://js.stripe.com/v3/"
    assert "script-src 'self' https://js.stripe.com;" in (await production.get("/")).headers["Content-Security-Policy"]


async def test_static_files_are_only_the_app_s_own(api):
    for path in ("/app/../admin_api/auth.py", "/app/%2e%2e/auth.py", "/app/js/../../webapp.py", "/app/nothing.js",
                 "/app/vendor/README", "/app/.git/config"):
        resp = await api.get(path)
        assert resp.status == 404, path
    first = await api.get("/app/js/main.js")
    again = await api.get("/app/js/main.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304


def test_the_app_never_writes_markup_or_evaluates_strings():
    """Rendering is text nodes and attributes (js/dom.js); the page has no inline script or style."""
    forbidden = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function"
                           r"|setAttribute\('style'")
    for path in WEB_DIR.joinpath("js").rglob("*.js"):
        assert not forbidden.search(path.read_text()), path
    index = WEB_DIR.joinpath("index.html").read_text()
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", index))
    assert "style=" not in index and "<style" not in index and "http" not in index  # no CDN


def test_the_webhooks_page_offers_each_role_the_event_types_the_server_sends_it():
    """The page's copy of who receives which event type (for its form) agrees with oros/webhooks.py."""
    page = WEB_DIR.joinpath("js", "pages", "webhooks.js").read_text()
    table = page[page.index("const EVENT_TYPES = {"):page.index("};", page.index("const EVENT_TYPES = {"))]
    assert dict(re.findall(r"'([a-z._]+)': \['(business|creator)'", table)) == webhooks.EVENT_TYPES


async def test_admin_lists_the_kyc_queue(api, settings, pg):
    admin_id = create_admin(settings, "root@example.com", "root-password")
    admin = {"Authorization": f"Bearer {issue_token(settings, admin_id)}"}
    waiting, _ = await open_session(api, "creator")
    api.session.cookie_jar.clear()
    approved, _ = await open_session(api, "creator")
    api.session.cookie_jar.clear()
    business, _ = await open_session(api, "business")
    pg.execute("UPDATE users SET kyc_status = 'approved' WHERE id = %s", (approved["id"],))
    resp = await api.get("/v1/admin/users?kyc_status=pending&role=creator", headers=admin)
    assert resp.status == 200
    items = (await resp.json())["items"]
    assert [u["id"] for u in items] == [waiting["id"]]
    assert items[0]["roles"] == ["creator"] and items[0]["kyc_status"] == "pending"
    assert (await api.get("/v1/admin/users?kyc_status=maybe", headers=admin)).status == 422
    page = await (await api.get("/v1/admin/users?limit=1", headers=admin)).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    # The business (still logged in by cookie) is not an admin.
    assert (await api.get("/v1/admin/users")).status == 403
    assert business["id"] not in [u["id"] for u in items]


async def test_admin_lists_withdrawals_to_pay(api, settings, pg):
    admin_id = create_admin(settings, "root@example.com", "root-password")
    admin = {"Authorization": f"Bearer {issue_token(settings, admin_id)}"}
    creator, csrf = await open_session(api, "creator")
    pg.execute("UPDATE users SET kyc_status = 'approved' WHERE id = %s", (creator["id"],))
    await api.put("/v1/me/creator-profile", headers={CSRF_HEADER: csrf}, json={"stripe_account_id": "acct_123"})
    credit = await api.post("/v1/admin/adjustments", headers=admin, json={"reason": "seed", "legs": [
        {"user_id": creator["id"], "direction": "credit", "amount": "40.00"},
        {"platform": "clearing", "direction": "debit", "amount": "40.00"}]})
    assert credit.status == 201, await credit.text()
    asked = await api.post("/v1/withdrawals", headers={CSRF_HEADER: csrf}, json={"amount": "15.00", "method": "ach"})
    assert asked.status == 201, await asked.text()
    resp = await api.get("/v1/admin/withdrawals?status=requested", headers=admin)
    items = (await resp.json())["items"]
    asked_id = (await asked.json())["id"]
    assert [(w["id"], w["amount"], w["user_id"]) for w in items] == [(asked_id, "15.00", creator["id"])]
    assert (await (await api.get("/v1/admin/withdrawals?status=failed", headers=admin)).json())["items"] == []
    assert (await api.get("/v1/admin/withdrawals?status=lost", headers=admin)).status == 422
    assert (await api.get("/v1/admin/withdrawals")).status == 403  # the creator's own cookie


def test_the_demo_prints_the_web_app_and_its_logins(capsys):
    demo.print_demo(demo.Demo("http://127.0.0.1:8081", "http://127.0.0.1:8080", "http://127.0.0.1:8080/abc",
                              "c-1", {"admin": "a", "business": "b", "creator": "c", "supporter": "s"}, None))
    out = capsys.readouterr().out
    assert "web app    http://127.0.0.1:8081/" in out
    for email in (demo.ADMIN_EMAIL, demo.BUSINESS_EMAIL, demo.CREATOR_EMAIL, demo.SUPPORTER_EMAIL, demo.PASSWORD):
        assert email in out
    assert "export OROS_SUPPORTER_TOKEN=s" in out
