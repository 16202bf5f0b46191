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

import pytest
import requests
from aiohttp import web
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from oros.accounts import create_admin
from settler.reconcile import reconcile_and_record

from webui import PASSWORD, UI, Api, deliver_webhooks, ingest, log_in, sign_up, type_card

# A test card that asks for 3-D Secure: Stripe.js (localstripe's stand-in) then shows its authentication prompt.
CARD_3DS = {"number": "4000002500003155", "exp_month": "12", "exp_year": "30", "cvc": "123", "postal_code": "10001"}


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

    # The business accepts.
    log_in(ui, "shop@web.example")
    ui.route(f"/campaigns/{campaign_id}")
    assert "Maya" in ui.text_of("main") and creator_id not in ui.main_text()  # named, not by id
    ui.click("Accept creator Maya")
    ui.wait(lambda d: not d.find_elements(By.XPATH, "//button[@aria-label='Accept creator Maya']"))

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
    ui.shot("business-stats")
    ui.click_link("Creator")  # the creator by name, not by id
    assert groups(ui) == [["Maya", "2", "1", "1", "0", "1", "0", "0", "$0.50"]]
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
    rows = browser.find_elements(By.CSS_SELECTOR, "#deliveries details.attempts tbody tr")
    assert [row.find_elements(By.TAG_NAME, "td")[1].text for row in rows] == ["HTTP 500", "HTTP 500", "HTTP 200"]
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
