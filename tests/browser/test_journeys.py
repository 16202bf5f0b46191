"""The web app end to end in headless Chromium: a business creates, funds by card (Stripe.js
against localstripe) and activates a campaign; a creator finds it by hashtag, applies, is
accepted and makes a link; the link is clicked through the real tracker; finance settles from
its page; the creator sees the pending earnings. A creator's community with a locked post, as a
supporter and as its creator see it; a business's webhook endpoint and its deliveries, sent to a
real receiver. Screenshots of each main page are saved under the test's tmp dir (``shots/``)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import requests
from aiohttp import web
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from oros.accounts import create_admin
from settler.reconcile import reconcile, reconcile_and_record

from webui import PASSWORD, UI, Api, deliver_webhooks, ingest, log_in, rows, sign_up, type_card

# A test card that asks for 3-D Secure: Stripe.js (localstripe's stand-in) then shows its authentication prompt.
CARD_3DS = {"number": "4000002500003155", "exp_month": "12", "exp_year": "30", "cvc": "123", "postal_code": "10001"}


def focused_id(ui: UI) -> str:
    return ui.driver.execute_script("return document.activeElement.id")


def numbers(ui: UI) -> dict:
    """The stats page's totals, as shown."""
    ui.wait(lambda d: d.find_elements(By.ID, "stats-clicks"))
    return {name: ui.text_of(f"stats-{name}") for name in ("clicks", "unique", "billable", "spend")}


def groups(ui: UI) -> list[list[str]]:
    """The rows of the stats page's breakdown table, as shown."""
    rows = ui.driver.find_elements(By.CSS_SELECTOR, "#stats-groups tbody tr")
    return [[cell.text for cell in row.find_elements(By.CSS_SELECTOR, "th, td")] for row in rows]


def test_campaign_from_creation_to_a_creator_earning(browser, stack, tmp_path):
    ui = UI(browser, stack.admin_url, tmp_path / "shots")
    settings = stack.settings
    admin_email = "finance@web.example"
    create_admin(settings, admin_email, PASSWORD)

    # A business signs up and creates a campaign; a bad amount is shown next to its field.
    sign_up(ui, "shop@web.example", "business", "Sneaker Shop")
    ui.wait_heading("Your campaigns")
    ui.click_link("New campaign")
    ui.fill("campaign-title", "Spring sneakers")
    ui.fill("campaign-description", "Share our spring range.")
    ui.fill("campaign-hashtags", "#WebTest, sneakers")
    ui.fill("campaign-destination_url", f"{stack.url('shop')}/spring")
    ui.fill("campaign-payout_per_action", "0.5.0")
    ui.fill("campaign-total_budget", "20.00")
    ui.click("Create draft")
    assert "payout_per_action" in ui.wait_field_error("campaign", "payout_per_action")
    ui.shot("business-new-campaign-error")
    ui.fill("campaign-payout_per_action", "0.50")
    ui.click("Create draft", navigates=True)
    ui.wait_heading("Spring sneakers")
    campaign_id = browser.current_url.rsplit("/", 1)[-1]

    # Funding by card: Stripe.js (localstripe's) mounts the card element, the API makes the intent.
    ui.fill("fund-amount", "20.00")
    ui.click("Continue to card")
    type_card(ui, CARD_3DS)
    ui.shot("business-fund-card")
    ui.click("Pay $20.00")
    ui.click("Complete authentication")  # localstripe's 3-D Secure prompt
    # The webhook credits the budget; the page shows it without a reload.
    ui.wait_text("remaining-budget", "$20.00", timeout=40)
    assert ui.text_of("funded-budget") == "$20.00"
    ui.click("Activate")
    ui.wait(lambda d: d.find_elements(By.ID, "campaign-pause"))
    ui.shot("business-campaign")
    # Paused and resumed; the keyboard lands on the move the new status offers, not on the page's body.
    ui.click("Pause")
    ui.wait(lambda d: d.find_elements(By.ID, "campaign-activate"))
    assert focused_id(ui) == "campaign-activate"
    ui.click("Resume")
    ui.wait(lambda d: d.find_elements(By.ID, "campaign-pause"))
    # Edits within the lifecycle rules: an active campaign keeps its payout (refused at the field), takes the rest.
    ui.fill("campaign-edit-payout_per_action", "0.60")
    ui.click("Save changes")
    assert "payout_per_action cannot change" in ui.wait_field_error("campaign-edit", "payout_per_action")
    ui.fill("campaign-edit-payout_per_action", "0.50")
    ui.fill("campaign-edit-description", "Share our whole spring range.")
    ui.click("Save changes")
    ui.wait(lambda d: d.find_element(By.CSS_SELECTOR, "main .description").text == "Share our whole spring range.")
    # The pixel secret is shown once: a new visit shows only the button.
    ui.click("Create a pixel secret")
    pixel_secret = ui.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#pixel-secret input"))[0].get_attribute("value")
    assert len(pixel_secret) >= 32
    ui.route(f"/campaigns/{campaign_id}")
    assert not browser.find_elements(By.CSS_SELECTOR, "#pixel-secret input") and pixel_secret not in browser.page_source
    # An API key, shown once, then revoked; the keyboard lands on the list's heading.
    ui.route("/api-keys")
    ui.fill("api-key-name", "checkout server")
    ui.click("Create key")
    api_key = ui.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#new-key input"))[0].get_attribute("value")
    assert api_key.startswith("oros_") and "checkout server" in ui.text_of("api-keys-list")
    ui.click("Revoke key checkout server")
    ui.wait(EC.alert_is_present()).accept()
    ui.wait_text("api-keys-list", "revoked")
    assert focused_id(ui) == "your-keys" and api_key not in browser.page_source

    # A creator finds it by hashtag and applies.
    sign_up(ui, "maya@web.example", "creator", "Maya")
    ui.wait_heading("Find campaigns")
    ui.fill("search-hashtag", "webtest")
    ui.click("Search", navigates=True)
    ui.click_link("Spring sneakers")
    ui.click("Apply to this campaign")
    ui.wait_text("application-status", "pending")
    ui.shot("creator-campaign")
    creator_id = ui.fetch("GET", "/v1/me")["data"]["id"]

    # Another creator applies too (over the API).
    api = Api(stack)
    _, _, rex = api.user("creator", "Rex")
    api.call("POST", f"/v1/campaigns/{campaign_id}/creators", rex)

    # The business accepts Maya and rejects Rex; after each the keyboard is on the applications' heading.
    log_in(ui, "shop@web.example")
    ui.route(f"/campaigns/{campaign_id}")
    assert "Maya" in ui.text_of("main") and creator_id not in ui.main_text()  # named, not by id
    ui.click("Accept creator Maya")
    ui.wait(lambda d: not d.find_elements(By.XPATH, "//button[@aria-label='Accept creator Maya']"))
    assert focused_id(ui) == "applications"
    ui.click("Reject creator Rex")
    ui.wait(lambda d: not d.find_elements(By.XPATH, "//button[@aria-label='Reject creator Rex']"))
    assert focused_id(ui) == "applications"
    decided = sorted((r[0], r[1]) for r in rows(browser, "applications-list"))
    assert decided == [("Maya", "accepted"), ("Rex", "rejected")]

    # The creator makes a link and copies it.
    log_in(ui, "maya@web.example")
    ui.route(f"/browse/{campaign_id}")
    ui.wait_text("application-status", "accepted")
    ui.click("Create link")
    link_url = ui.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#my-links input"))[0].get_attribute("value")
    assert link_url.startswith(stack.tracker_url + "/")
    ui.button(f"Copy link: {link_url}")
    ui.shot("creator-links")

    # Someone clicks it: the tracker records the click and redirects to the shop with its id. The
    # same person clicks again (a duplicate: not paid, not a new visitor), and a crawler fetches it.
    browser.get(link_url)
    assert browser.current_url.startswith(f"{stack.url('shop')}/spring?oros_cid=")
    browser.get(link_url)
    requests.get(link_url, headers={"User-Agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"},
                 allow_redirects=False, timeout=10)
    assert ingest(stack) == 3

    # Finance settles from its page and the books reconcile.
    log_in(ui, admin_email)
    ui.wait_heading("Settlements")
    ui.click("Run settlement now")
    ui.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#settlement-report .events-paid"))
    assert browser.find_element(By.CSS_SELECTOR, "#settlement-report .events-paid").text == "1"
    rejected = ui.text_of("settlement-report").split("Rejected by reason", 1)[1]
    assert "duplicate_click: 1" in rejected and "bot: 1" in rejected  # the second click and the crawler
    assert rows(browser, "runs")[0][1:4] == ["settle", "succeeded", "1"]  # the list below shows the run
    ui.shot("finance-settlements")
    ui.click_link("Reconcile")
    ui.wait_text("reconcile-status", "All invariants hold.")
    assert ui.text_of("reconcile-when") == "Checked just now."  # no reconcile kept yet: the page ran one
    ui.shot("finance-reconcile")
    # Once the scheduler has kept one, the page shows it at once; "Check now" runs the audit again.
    reconcile_and_record(settings)
    ui.click_link("Settlements")
    ui.click_link("Reconcile")
    ui.wait_text("reconcile-when", "Checked by the scheduler")
    ui.click("Check now")
    ui.wait_text("reconcile-when", "Checked just now.")

    # The creator sees the pending earnings: 0.50 less the 10% platform fee.
    log_in(ui, "maya@web.example")
    ui.route("/wallet")
    ui.wait_text("pending-balance", "$0.45")
    assert ui.text_of("available-balance") == "$0.00"
    [earning] = rows(browser, "ledger")
    assert earning[2:4] == ["+$0.45", "pending"] and earning[4] not in ("", "—")  # held until a date
    ui.shot("creator-wallet")
    # Down to a phone's width, nothing runs off the side of the page.
    size = browser.get_window_size()
    browser.set_window_size(390, 844)
    try:
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        ui.shot("creator-wallet-phone")
    finally:
        browser.set_window_size(size["width"], size["height"])
    ui.route("/earnings")
    ui.wait_text("total-earned", "$0.45")
    ui.shot("creator-earnings")

    # The creator's own stats: the three clicks, one visitor, by campaign.
    ui.route("/my-stats")
    assert numbers(ui) == {"clicks": "3", "unique": "1", "billable": "1", "spend": "$0.50"}
    ui.click_link("Campaign")
    assert groups(ui) == [["Spring sneakers", "3", "1", "1", "1", "1", "0", "0", "$0.50"]]

    # The business's stats: the same numbers, then broken down and filtered.
    log_in(ui, "shop@web.example")
    ui.route(f"/campaigns/{campaign_id}/stats")
    assert numbers(ui) == {"clicks": "3", "unique": "1", "billable": "1", "spend": "$0.50"}
    assert groups(ui) == [["(unknown)", "3", "1", "1", "1", "1", "0", "0", "$0.50"]]  # loopback has no country
    ui.click_link("Device")
    assert groups(ui) == [["desktop", "2", "1", "1", "0", "1", "0", "0", "$0.50"],
                          ["bot", "1", "0", "0", "1", "0", "0", "0", "$0.00"]]
    ui.click_link("desktop")  # only the desktop clicks
    assert numbers(ui)["clicks"] == "2" and "Device = desktop" in ui.text_of("stats-filters")
    ui.click_link("Link")
    assert groups(ui) == [[link_url, "2", "1", "1", "0", "1", "0", "0", "$0.50"]]
    ui.click_link("Creator")  # the creator by name, not by id
    assert groups(ui) == [["Maya", "2", "1", "1", "0", "1", "0", "0", "$0.50"]]
    ui.shot("business-stats")

    # The business ends the campaign for good: no move is left, and the keyboard is on its title.
    ui.route(f"/campaigns/{campaign_id}")
    ui.click("End campaign")
    ui.wait(EC.alert_is_present()).accept()
    ui.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, "#lifecycle button"))
    assert "completed" in ui.text_of("main") and focused_id(ui) == "campaign-title"
    assert ui.console_errors() == []


RECIPE = "Secret recipe: two parts night, one part owl."


def test_a_locked_post_is_shown_locked_to_a_supporter_and_open_to_its_creator(browser, stack, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    creator_email, _, creator = api.user("creator")
    supporter_email, supporter_id, _ = api.user("supporter")

    # The creator creates a community and a locked post; a bad price is shown next to its field.
    log_in(ui, creator_email)
    ui.route("/communities")
    ui.click_link("New community")
    ui.fill("community-name", "Night owls")
    ui.fill("community-description", "Behind the scenes of the night shoots.")
    ui.click("Create community", navigates=True)
    ui.wait_heading("Night owls")
    community_id = browser.current_url.rsplit("/", 1)[-1]
    # Open posts of each kind that links or draws: an https image, an http one (a link only), a link.
    for fields in ({"content_type": "image", "content_url": "https://127.0.0.1:9/owl.png", "body": "The owl"},
                   {"content_type": "image", "content_url": "http://127.0.0.1:9/plain.png"},
                   {"content_type": "link", "content_url": "https://example.com/behind?x=1", "body": "Read on"}):
        api.call("POST", f"/v1/communities/{community_id}/posts", creator, **fields)
    ui.fill("post-body", RECIPE)
    browser.find_element(By.ID, "post-is_locked").click()
    ui.fill("post-min_tip_to_unlock", "5.001")
    ui.click("Publish post")
    assert "min_tip_to_unlock" in ui.wait_field_error("post", "min_tip_to_unlock")
    ui.fill("post-min_tip_to_unlock", "5.00")
    ui.click("Publish post")
    mine = ui.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#feed article"))[0]
    assert RECIPE in mine.text and "Others unlock it with a tip of $5.00 or more" in mine.text

    # A supporter lands on the communities, joins, and sees the post locked: its price, no content.
    log_in(ui, supporter_email)
    ui.wait_heading("Communities")
    ui.click_link("Night owls")
    ui.click("Join community", navigates=True)
    ui.wait_text("membership", "You joined")
    assert ui.text_of("member-count") == "1"
    locked = browser.find_element(By.CSS_SELECTOR, "#feed .post-locked")
    assert "This text post is locked." in locked.text
    assert locked.find_element(By.CLASS_NAME, "unlock-price").text == "$5.00"
    assert RECIPE not in browser.page_source
    # Its one action: the tip form, filled in for this post at its price (tests/browser/test_supporters.py pays it).
    [unlock] = locked.find_elements(By.CSS_SELECTOR, "button, a")
    assert unlock.text == "Unlock for $5.00" and "/tips/new?" in unlock.get_attribute("href")
    images = browser.find_elements(By.CSS_SELECTOR, "#feed img")
    assert [i.get_attribute("src") for i in images] == ["https://127.0.0.1:9/owl.png"]
    assert images[0].get_attribute("referrerpolicy") == "no-referrer"
    links = {a.get_attribute("href"): a.get_attribute("rel") for a in browser.find_elements(By.CSS_SELECTOR, "#feed a")
             if a != unlock}
    assert links == {"https://127.0.0.1:9/owl.png": "noopener noreferrer ugc",
                     "http://127.0.0.1:9/plain.png": "noopener noreferrer ugc",
                     "https://example.com/behind?x=1": "noopener noreferrer ugc"}
    ui.wait(lambda d: d.execute_script("return getComputedStyle(document.getElementById('toast')).opacity") == "0")
    ui.shot("supporter-community")
    assert ui.console_errors() == []

    # Its creator reads the post and sees the new member.
    log_in(ui, creator_email)
    ui.route(f"/communities/{community_id}")
    assert RECIPE in ui.text_of("feed")
    assert supporter_id in ui.text_of("members") and "member" in ui.text_of("members")
    ui.shot("creator-community")
    # A longer feed comes a page at a time: "Load more" appends the rest and takes the focus there.
    for n in range(20):
        api.call("POST", f"/v1/communities/{community_id}/posts", creator, content_type="text", body=f"Note {n}")
    ui.route(f"/communities/{community_id}")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#feed article")) == 20
    ui.click("Load more posts")
    ui.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#feed article")) == 24)
    assert RECIPE in browser.execute_script("return document.activeElement.textContent")  # the first of page 2
    assert not browser.find_elements(By.ID, "more-posts")  # that was the last page
    assert ui.console_errors() == []


class Receiver:
    """A business's webhook receiver: answers each request with the next status of its script (the last repeats)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return web.Response(status=status, text="thanks" if status < 300 else "not now")


@pytest.fixture
def receiver(stack):
    """A real receiver on loopback (the stack allows local webhook targets), served on the stack's loop."""
    receiving = Receiver([500, 500, 200])
    app = web.Application()
    app.router.add_post("/hook", receiving.handle)
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner.addresses[0][1]

    receiving.url = f"http://127.0.0.1:{stack.run(start())}/hook"
    yield receiving
    stack.run(runner.cleanup())


def signed_with(secret: str, headers: dict, body: bytes) -> bool:
    """docs/webhooks.md's check, as a receiver does it."""
    fields = [part.split("=", 1) for part in headers["OROS-Signature"].split(",")]
    t = next(value for key, value in fields if key == "t")
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, value) for key, value in fields if key == "v1")


def delivery_text(ui: UI, *expected: str) -> str:
    """The newest delivery's text once it shows every ``expected`` word (the list re-renders as it loads)."""
    def shown(driver) -> str | bool:
        try:
            text = driver.find_elements(By.CSS_SELECTOR, "#deliveries .delivery")[0].text
        except (IndexError, StaleElementReferenceException):
            return False
        return text if all(word in text for word in expected) else False

    return ui.wait(shown)


def test_a_business_follows_its_webhook_deliveries(browser, stack, tmp_path, receiver):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    email, _, business = api.user("business")

    # The business subscribes its receiver; choosing no event is the API's error, under the choices.
    log_in(ui, email)
    ui.route("/webhooks")
    offered = [box.get_attribute("value") for box in browser.find_elements(By.CSS_SELECTOR, "#webhook-events input")]
    assert offered == ["conversion.recorded", "event.rejected", "settlement.completed"]  # a business's types
    ui.fill("webhook-url", receiver.url)
    ui.click("Add endpoint")
    assert "events" in ui.wait_field_error("webhook", "events")
    browser.find_element(By.ID, "webhook-events-settlement.completed").click()
    ui.click("Add endpoint")
    secret = ui.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#new-endpoint input"))[0].get_attribute("value")
    assert secret.startswith("whsec_")
    ui.button(f"Copy: {secret}")
    assert receiver.url in ui.text_of("webhook-endpoints")
    ui.click_link("See its deliveries")
    assert "No deliveries yet" in ui.main_text()

    # A settlement decides a click on one of its campaigns: Postgres writes the delivery with the fact.
    campaign = api.active_campaign(business, title="Hooked campaign")
    _, creator_id, creator = api.user("creator")
    api.call("POST", f"/v1/campaigns/{campaign['id']}/creators", creator)
    api.call("POST", f"/v1/campaigns/{campaign['id']}/creators/{creator_id}/accept", business)
    link = api.call("POST", f"/v1/campaigns/{campaign['id']}/links", creator)
    requests.get(link["url"], headers={"User-Agent": browser.execute_script("return navigator.userAgent")},
                 allow_redirects=False, timeout=10)
    ingest(stack)
    api.call("POST", "/v1/admin/settlements", api.admin())

    # The sender's first attempt gets a 500: pending, with that attempt.
    assert len(deliver_webhooks(stack)) == 1
    ui.click("Refresh", navigates=True)
    delivery_text(ui, "settlement.completed", "pending", "HTTP 500")
    # A day later it gives up: failed, and the business sends it again.
    later = datetime.now(UTC) + timedelta(days=2)
    assert len(deliver_webhooks(stack, clock=lambda: later)) == 1
    ui.click("Refresh", navigates=True)
    delivery_text(ui, "failed")
    ui.click("Retry", navigates=True)
    delivery_text(ui, "pending")
    assert len(deliver_webhooks(stack)) == 1
    ui.click("Refresh", navigates=True)
    delivery_text(ui, "delivered")
    ui.click_found(lambda: browser.find_element(By.CSS_SELECTOR, "#deliveries details.attempts summary"))
    attempts = browser.find_elements(By.CSS_SELECTOR, "#deliveries details.attempts tbody tr")
    assert [row.find_elements(By.TAG_NAME, "td")[1].text for row in attempts] == ["HTTP 500", "HTTP 500", "HTTP 200"]
    ui.shot("business-webhook-deliveries")
    # What arrived is signed with the secret the page showed once.
    headers, body = receiver.received[-1]
    assert headers["OROS-Event-Type"] == "settlement.completed" and signed_with(secret, headers, body)

    # A new secret (the old one stops signing now), then the endpoint is deleted.
    ui.choose("rotate-grace_s", "0")
    ui.click("Rotate secret")
    rotated = ui.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#rotated input"))[0].get_attribute("value")
    assert rotated.startswith("whsec_") and rotated != secret
    ui.click("Delete endpoint")
    ui.wait(EC.alert_is_present()).accept()
    ui.wait_heading("Webhooks")
    ui.settle()
    assert "No endpoints yet." in ui.text_of("webhook-endpoints")
    assert ui.console_errors() == []


def test_finance_works_its_queues_and_a_supporter_withdraws(browser, stack, tmp_path):
    """Finance approves a supporter's KYC and rejects a creator's, records a wire for a campaign found on the
    second page, posts an adjustment (a bad amount shown under its leg), releases holds; the supporter and a
    creator withdraw from the wallet page and finance sees them to pay; a ledger broken on purpose shows its
    failing check."""
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    admin = api.admin()
    supporter_email, supporter_id, _ = api.user("supporter", "Fan")
    creator_email, _, _ = api.user("creator", "Doubtful")
    _, _, business = api.user("business")
    for n in range(21):  # more drafts than the funding page's page of 20
        wired = api.campaign(business, title=f"Wired draft {n}")

    # The KYC queue lists every payee: a pending supporter as well as a pending creator.
    log_in(ui, api.admin_email)
    ui.route("/finance/kyc")
    assert supporter_email in ui.text_of("kyc-supporter-list") and creator_email in ui.text_of("kyc-creator-list")
    ui.shot("finance-kyc")
    ui.click(f"Approve {supporter_email}")
    ui.wait(lambda d: supporter_email not in d.find_element(By.ID, "main").text)
    assert focused_id(ui) == "kyc-supporter"  # not the body: the pressed button left with its row
    ui.click(f"Reject {creator_email}")
    ui.wait(lambda d: creator_email not in d.find_element(By.ID, "main").text)
    assert focused_id(ui) == "kyc-creator"
    ui.click_link("rejected")
    assert creator_email in ui.text_of("kyc-creator-list")
    ui.click_link("approved")
    assert supporter_email in ui.text_of("kyc-supporter-list")

    # Off-Stripe funding: the campaigns come 20 at a time; a wire is recorded for the newest draft.
    ui.click_link("Off-Stripe funding")
    assert len(rows(browser, "fundable")) == 20
    ui.click("Load more campaigns")
    ui.wait(lambda d: len(rows(d, "fundable")) > 20)
    assert browser.execute_script("return document.activeElement.closest('#fundable') !== null")  # the first new row
    ui.click(f"Fund {wired['title']}")
    assert focused_id(ui) == "admin-funding-amount"
    ui.fill("admin-funding-amount", "12.50")
    ui.fill("admin-funding-reference", "wire 42")
    ui.click("Record funds")
    ui.wait(lambda d: [wired["title"], "draft", "$12.50", "$12.50"] in [r[:4] for r in rows(d, "fundable")])
    assert api.call("GET", f"/v1/campaigns/{wired['id']}", business)["funded_budget"] == "12.50"

    # An adjustment with a reason: the API's error about leg 2's amount is shown under that amount, and focused.
    ui.click_link("Adjustments")
    ui.fill("adjustment-reason", "Goodwill: a reward lost in an outage")
    ui.choose("leg-0-account", "user_id")
    ui.fill("leg-0-target", supporter_id)
    ui.fill("leg-0-amount", "25.00")
    ui.choose("leg-1-account", "platform")
    ui.fill("leg-1-target", "clearing")
    ui.choose("leg-1-direction", "debit")
    ui.fill("leg-1-amount", "25.0.0")
    ui.click("Post adjustment")
    ui.wait(lambda d: d.find_element(By.ID, "leg-1-amount-error").text.strip())
    assert browser.find_element(By.ID, "leg-1-amount").get_attribute("aria-invalid") == "true"
    assert focused_id(ui) == "leg-1-amount"
    assert ui.text_of("leg-0-amount-error") == "" and ui.text_of("adjustment-legs-error") == ""
    ui.shot("finance-adjustment-error")
    ui.fill("leg-1-amount", "25.00")
    ui.click("Post adjustment")
    ui.wait_text("adjustment-result", "Posted transfer")
    assert browser.find_element(By.ID, "leg-1-amount").get_attribute("aria-invalid") is None
    ui.click_link("Settlements")
    ui.click("Release due holds")
    ui.wait_text("holds-result", "held entries became available")

    # The supporter (approved) withdraws from the wallet page and sees the withdrawal's status.
    log_in(ui, supporter_email)
    ui.route("/wallet")
    ui.wait_text("available-balance", "$25.00")
    ui.fill("payout-account-stripe_account_id", "acct_fan")
    ui.click("Save payout account")
    ui.wait_text("toast", "acct_fan")
    ui.fill("withdraw-amount", "20.00")
    ui.click("Request withdrawal")
    ui.wait(lambda d: [r[1:4] for r in rows(d, "withdrawals")] == [["$20.00", "ach", "requested"]])
    assert ui.text_of("available-balance") == "$5.00"
    ui.shot("supporter-withdrawal")

    # A creator (approved, with a Stripe account on its profile, 12.00 available) withdraws the same way.
    earner_email, earner_id, earner = api.user("creator", "Earner")
    api.call("PUT", "/v1/me/creator-profile", earner, stripe_account_id="acct_earner")
    api.call("POST", f"/v1/admin/users/{earner_id}/kyc", admin, status="approved")
    api.call("POST", "/v1/admin/adjustments", admin, reason="goodwill", legs=[
        {"user_id": earner_id, "direction": "credit", "amount": "12.00"},
        {"platform": "clearing", "direction": "debit", "amount": "12.00"}])
    log_in(ui, earner_email)
    ui.route("/wallet")
    ui.fill("withdraw-amount", "12.00")
    ui.choose("withdraw-method", "instant")
    ui.click("Request withdrawal")
    ui.wait(lambda d: [r[1:4] for r in rows(d, "withdrawals")] == [["$12.00", "instant", "requested"]])
    assert ui.text_of("available-balance") == "$0.00"

    # Finance sees both to pay.
    log_in(ui, api.admin_email)
    ui.route("/finance/withdrawals")
    assert supporter_email in ui.main_text() and earner_email in ui.main_text()

    # A wallet changed behind the ledger (as the owner, as tests/test_reconcile.py does): reconcile shows it first.
    with psycopg.connect(stack.settings.database_url, autocommit=True) as owner:
        tamper = "UPDATE wallets SET pending_balance = pending_balance + %s WHERE user_id = %s"
        owner.execute(tamper, (1, supporter_id))
        try:
            ui.click_link("Reconcile")
            ui.click("Check now")
            ui.wait_text("reconcile-status", "1 check(s) failing.")
            ui.wait(lambda d: rows(d, "reconcile-checks")[0][:2] == ["wallet_balances_match_ledger", "FAILING"])
            ui.wait(lambda d: d.find_element(By.ID, "reconcile-now").is_enabled())  # "Check now" has finished
            ui.shot("finance-reconcile-failing")
        finally:
            owner.execute(tamper, (-1, supporter_id))
    assert [c.name for c in reconcile(stack.settings) if not c.ok] == []
    assert ui.console_errors() == []
