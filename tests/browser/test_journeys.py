"""The web app end to end in headless Chromium: a business creates, funds by card (Stripe.js
against localstripe) and activates a campaign; a creator finds it by hashtag, applies, is
accepted and makes a link; the link is clicked through the real tracker; finance settles from
its page; the creator sees the pending earnings. Screenshots of each main page are saved under
the test's tmp dir (``shots/``)."""

from __future__ import annotations

import requests
from selenium.webdriver.common.by import By

from ingest.consumer import Ingester
from oros.accounts import create_admin

from webui import PASSWORD, UI, log_in, sign_up

# A test card that asks for 3-D Secure: Stripe.js (localstripe's stand-in) then shows its authentication prompt.
CARD_3DS = {"number": "4000002500003155", "exp_month": "12", "exp_year": "30", "cvc": "123", "postal_code": "10001"}


def type_card(ui: UI, card: dict) -> None:
    """Type a card into the card element, field by field, as a person does."""
    ui.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#card-element input[placeholder=number]"))
    for field, value in card.items():
        ui.driver.find_element(By.CSS_SELECTOR, f"#card-element input[placeholder={field}]").send_keys(value)


def numbers(ui: UI) -> dict:
    """The stats page's totals, as shown."""
    ui.wait(lambda d: d.find_elements(By.ID, "stats-clicks"))
    return {name: ui.text_of(f"stats-{name}") for name in ("clicks", "unique", "billable", "spend")}


def groups(ui: UI) -> list[list[str]]:
    """The rows of the stats page's breakdown table, as shown."""
    rows = ui.driver.find_elements(By.CSS_SELECTOR, "#stats-groups tbody tr")
    return [[cell.text for cell in row.find_elements(By.CSS_SELECTOR, "th, td")] for row in rows]


def ingest(stack) -> int:
    async def drain() -> int:
        ingester = Ingester(stack.settings, consumer="browser")
        try:
            return await ingester.drain_once()
        finally:
            await ingester.close()

    return stack.run(drain())


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
    ui.click(f"Accept creator {creator_id}")
    ui.wait(lambda d: not d.find_elements(By.XPATH, f"//button[@aria-label='Accept creator {creator_id}']"))

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
    ui.shot("finance-reconcile")

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
    assert ui.console_errors() == []
