"""What each role cannot see or do, in the UI and through the API calls the UI makes, and the
attacks on the web app itself: XSS through API strings, inline script under the CSP, a
cross-site form or fetch riding the session cookie, framing."""

from __future__ import annotations

import psycopg
from selenium.webdriver.common.by import By

from webui import UI, Api, log_in

XSS_TITLE = '<img src=x onerror="window.__xss=1">Title'
XSS_TEXT = '<script>window.__xss=2</script><a href="javascript:window.__xss=3">x</a>'


def endpoint(api: Api, auth: dict, events: list[str]) -> dict:
    return api.call("POST", "/v1/webhook-endpoints", auth, url="http://127.0.0.1:9/owner", events=events)


def cannot_reach_endpoint(ui: UI, found: dict) -> None:
    """Another user's webhook endpoint: absent from the page and from every call the pages make."""
    ui.route("/webhooks")
    assert found["url"] not in ui.main_text()
    ui.route(f"/webhooks/{found['id']}")
    assert ui.heading() == "Not found"
    base = f"/v1/webhook-endpoints/{found['id']}"
    assert ui.fetch("GET", "/v1/webhook-endpoints")["data"]["items"] == []
    for method, path in (("GET", base), ("GET", f"{base}/deliveries"), ("POST", f"{base}/rotate-secret"),
                         ("DELETE", base)):
        assert ui.fetch(method, path)["status"] == 404, (method, path)


def test_a_business_cannot_see_another_business_campaigns(browser, stack, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    _, _, owner = api.user("business")
    secret = api.campaign(owner, title="Owner's secret launch")
    live = api.active_campaign(owner, title="Owner's live campaign")
    hook = endpoint(api, owner, ["conversion.recorded"])
    other_email, _, _ = api.user("business")

    log_in(ui, other_email)
    ui.wait_heading("Your campaigns")
    assert "Owner's" not in ui.main_text()
    ui.route(f"/campaigns/{secret['id']}")
    assert ui.heading() == "Not found"
    ui.route(f"/campaigns/{live['id']}/stats")
    assert ui.heading() == "Not found"
    # The same calls the pages make, from the page, with its cookie:
    assert ui.fetch("GET", f"/v1/campaigns/{secret['id']}")["status"] == 404
    assert ui.fetch("GET", f"/v1/campaigns/{live['id']}/stats")["status"] == 404
    assert ui.fetch("GET", "/v1/campaigns?mine=true")["data"]["items"] == []
    assert ui.fetch("POST", f"/v1/campaigns/{live['id']}/pause")["status"] in (403, 404)
    assert ui.fetch("GET", "/v1/admin/settlements")["status"] == 403
    cannot_reach_endpoint(ui, hook)


def test_a_creator_cannot_see_another_creator_money_or_links(browser, stack, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    _, _, business = api.user("business")
    campaign = api.active_campaign(business, title="Shared campaign")
    _, first_id, first = api.user("creator")
    api.call("POST", f"/v1/campaigns/{campaign['id']}/creators", first)
    api.call("POST", f"/v1/campaigns/{campaign['id']}/creators/{first_id}/accept", business)
    link = api.call("POST", f"/v1/campaigns/{campaign['id']}/links", first)
    hook = endpoint(api, first, ["earning.credited"])
    api.call("POST", "/v1/admin/adjustments", api.admin(), reason="goodwill", legs=[
        {"user_id": first_id, "direction": "credit", "amount": "25.00"},
        {"platform": "clearing", "direction": "debit", "amount": "25.00"}])
    other_email, _, _ = api.user("creator")

    log_in(ui, other_email)
    ui.route(f"/browse/{campaign['id']}")
    assert link["url"] not in browser.page_source
    assert browser.find_elements(By.ID, "apply")  # a stranger to the campaign, not its member
    ui.route("/wallet")
    assert ui.text_of("available-balance") == "$0.00"
    assert "goodwill" not in ui.main_text()
    assert ui.fetch("GET", f"/v1/campaigns/{campaign['id']}/links")["data"]["items"] == []
    assert ui.fetch("GET", f"/v1/campaigns/{campaign['id']}/creators")["data"]["items"] == []
    assert ui.fetch("GET", "/v1/wallet/ledger")["data"]["items"] == []
    assert ui.fetch("GET", f"/v1/campaigns/{campaign['id']}/stats")["status"] == 403
    assert ui.fetch("POST", f"/v1/campaigns/{campaign['id']}/links")["status"] == 403
    cannot_reach_endpoint(ui, hook)


def test_a_supporter_cannot_read_a_locked_post_or_the_members(browser, stack, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    _, _, creator = api.user("creator")
    community = api.call("POST", "/v1/communities", creator, name="Inner circle")
    locked = api.call("POST", f"/v1/communities/{community['id']}/posts", creator, content_type="link",
                      content_url="https://example.com/members-only", is_locked=True, min_tip_to_unlock="2.50")
    _, _, member = api.user("supporter")
    api.call("POST", f"/v1/communities/{community['id']}/join", member)
    email, _, supporter = api.user("supporter")
    api.call("POST", f"/v1/communities/{community['id']}/join", supporter)

    log_in(ui, email)
    ui.route(f"/communities/{community['id']}")
    assert "$2.50" in ui.text_of("feed") and "members-only" not in browser.page_source
    assert not browser.find_elements(By.ID, "members")
    assert "content_url" not in ui.fetch("GET", f"/v1/posts/{locked['id']}")["data"]
    assert ui.fetch("GET", f"/v1/communities/{community['id']}/members")["status"] == 403
    post = {"content_type": "text", "body": "x"}
    assert ui.fetch("POST", f"/v1/communities/{community['id']}/posts", post)["status"] == 403
    # Webhooks are a business's or creator's: not offered, not served.
    assert "Webhooks" not in browser.find_element(By.ID, "nav").text
    ui.route("/webhooks")
    assert ui.heading() == "Not available"
    assert ui.fetch("GET", "/v1/webhook-endpoints")["status"] == 403


def test_only_finance_sees_the_finance_pages(browser, stack, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    email, _, _ = api.user("creator")
    _, _, business = api.user("business")
    api.campaign(business, title="Someone's draft")

    log_in(ui, email)
    assert "Finance" not in browser.find_element(By.ID, "nav").text
    for route in ("/finance", "/finance/kyc", "/finance/withdrawals", "/finance/funding"):
        ui.route(route)
        assert ui.heading() == "Not available", route
    for path in ("/v1/admin/settlements", "/v1/admin/reconcile", "/v1/admin/users?kyc_status=pending",
                 "/v1/admin/withdrawals"):
        assert ui.fetch("GET", path)["status"] == 403, path
    assert ui.fetch("POST", "/v1/admin/settlements")["status"] == 403
    # Drafts are not public: a creator listing them sees none.
    assert ui.fetch("GET", "/v1/campaigns?status=draft")["data"]["items"] == []


def test_api_strings_are_shown_as_text_never_run(browser, stack, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    email, _, business = api.user("business")
    campaign = api.active_campaign(business, title=XSS_TITLE, description=XSS_TEXT, hashtags=["<b>bold</b>", "xss"])
    api.call("PATCH", "/v1/me", business, display_name='<svg onload="window.__xss=4">')
    creator_name = '<img src=x onerror="window.__xss=5">Maya'  # shown where the creator is named (applications)
    creator_email, _, creator = api.user("creator", creator_name)
    api.call("POST", f"/v1/campaigns/{campaign['id']}/creators", creator)
    community = api.call("POST", "/v1/communities", creator, name=XSS_TITLE, description=XSS_TEXT)
    api.call("POST", f"/v1/communities/{community['id']}/posts", creator, content_type="text", body=XSS_TEXT)

    log_in(ui, email)
    for route in ("/campaigns", f"/campaigns/{campaign['id']}", f"/campaigns/{campaign['id']}/stats", "/account"):
        ui.route(route)
        assert browser.execute_script("return window.__xss") is None, route
    ui.route(f"/campaigns/{campaign['id']}")
    assert ui.heading() == XSS_TITLE
    assert XSS_TEXT in ui.main_text() and creator_name in ui.main_text()
    assert not browser.find_elements(By.CSS_SELECTOR, "main img[src=x], main script, main a[href^=javascript]")
    log_in(ui, creator_email)
    ui.route(f"/browse/{campaign['id']}")
    assert ui.heading() == XSS_TITLE and "#<b>bold</b>" in ui.main_text()
    assert browser.execute_script("return window.__xss") is None
    for route in ("/communities", f"/communities/{community['id']}"):
        ui.route(route)
        assert XSS_TITLE in ui.main_text() and XSS_TEXT in ui.main_text(), route
        assert not browser.find_elements(By.CSS_SELECTOR, "main img[src=x], main script, main a[href^=javascript]")
        assert browser.execute_script("return window.__xss") is None, route
    assert ui.console_errors() == []


def test_the_csp_blocks_inline_script_and_framing(browser, stack, tmp_path):
    ui = UI(browser, stack.admin_url, tmp_path / "shots")
    ui.open("/login")
    # Markup that slipped into the page could not run: inline handlers are refused by the CSP.
    browser.execute_script(
        "document.body.insertAdjacentHTML('beforeend', '<img src=/nothing onerror=\"window.__inline=1\">')")
    ui.wait(lambda d: any("Content Security Policy" in e["message"] for e in d.get_log("browser")))
    assert browser.execute_script("return window.__inline") is None
    # Another site framing the app (clickjacking) gets nothing: frame-ancestors 'none'.
    browser.get(f"{stack.url('attacker')}/frame")
    frame = browser.find_element(By.ID, "victim")
    browser.switch_to.frame(frame)
    try:
        assert not browser.find_elements(By.ID, "main")
    finally:
        browser.switch_to.default_content()


def test_another_site_cannot_act_with_the_session(browser, stack, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    email, business_id, _ = api.user("business")
    log_in(ui, email)
    ui.wait_heading("Your campaigns")
    # Logged in, the victim visits another site, which posts a form and a fetch at the API.
    browser.get(f"{stack.url('attacker')}/form")
    ui.wait(lambda d: d.current_url.startswith(stack.admin_url))
    assert "error" in browser.page_source  # refused: no cookie crosses sites, and no CSRF header came
    browser.get(f"{stack.url('attacker')}/fetch")
    ui.wait(lambda d: d.title.startswith(("sent", "blocked")))
    with psycopg.connect(stack.settings.database_url) as conn:
        made = conn.execute("SELECT count(*) FROM campaigns WHERE business_id = %s", (business_id,)).fetchone()[0]
    assert made == 0
    # The session itself is intact, and the page's own requests still work.
    ui.open("/campaigns")
    assert ui.heading() == "Your campaigns"
    assert ui.raw_fetch("POST", "/v1/campaigns") == 403  # the cookie alone, without X-OROS-CSRF
