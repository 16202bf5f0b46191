"""A supporter in the browser: tips a creator by card to unlock a locked post (Stripe.js against
localstripe, the tip shown only after localstripe's signed webhook booked it), tries a monthly tip
and a membership where the server's Stripe has no Billing (the API's error shown at the field),
boosts a campaign by card and sees its reward; the business gives the unspent budget back. Another
supporter sees none of it. The new pages pass axe and fit a phone. Screenshots under ``shots/``."""

from __future__ import annotations

import time

import requests
from selenium.webdriver.common.by import By

from page_checks import check_pages
from webui import UI, Api, log_in, type_card

VISA = {"number": "4242424242424242", "exp_month": "12", "exp_year": "30", "cvc": "123", "postal_code": "10001"}
SECRET_RECIPE = "The night-shoot recipe: ISO 3200, f/1.8, 1/60."
XSS_MESSAGE = '<img src=x onerror="window.__xss=1">thanks<script>window.__xss=2</script>'


def paid_tip(api: Api, stack, supporter: dict, creator_id: str, amount: str, message: str) -> dict:
    """A tip paid over HTTP as the page pays it: a card token made with the publishable key, confirmed by the API."""
    intent = api.call("POST", "/v1/tips", supporter, to_creator_id=creator_id, amount=amount, frequency="one_time",
                      message=message)
    token = requests.post(f"{stack.settings.stripe_api_base}/v1/tokens", timeout=10, data={
        "card[number]": VISA["number"], "card[exp_month]": "12", "card[exp_year]": "2034", "card[cvc]": "123",
        "key": "pk_test_oros"}).json()
    api.call("POST", f"/v1/tips/{intent['id']}/confirm", supporter, payment_method=token["card"]["id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sent = api.call("GET", "/v1/tips?direction=sent", supporter)["items"]
        if any(t["intent_id"] == intent["id"] for t in sent):
            return intent
        time.sleep(0.3)
    raise AssertionError("the tip was never booked")


def test_a_supporter_tips_to_unlock_a_post_and_boosts_a_campaign(browser, stack, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    creator_email, creator_id, creator = api.user("creator")
    supporter_email, supporter_id, _ = api.user("supporter")
    business_email, _, business = api.user("business")
    community = api.call("POST", "/v1/communities", creator, name="Night owls", description="Night shoots.")
    locked = api.call("POST", f"/v1/communities/{community['id']}/posts", creator, content_type="text",
                      body=SECRET_RECIPE, is_locked=True, min_tip_to_unlock="5.00")
    campaign = api.active_campaign(business, title="Owl lenses")

    # The locked post offers its unlock price; the tip form comes filled in for it.
    log_in(ui, supporter_email)
    ui.route(f"/communities/{community['id']}")
    ui.click("Join community", navigates=True)
    assert SECRET_RECIPE not in browser.page_source
    ui.click_link("Unlock for $5.00")
    ui.wait_heading("Send a tip")
    filled = {name: browser.find_element(By.ID, f"tip-{name}").get_attribute("value")
              for name in ("to_creator_id", "amount", "frequency", "post_id")}
    assert filled == {"to_creator_id": creator_id, "amount": "5.00", "frequency": "one_time", "post_id": locked["id"]}
    # Below the card network's minimum: the API's refusal is shown next to the amount.
    ui.fill("tip-amount", "0.10")
    ui.click("Continue to card")
    assert "at least" in ui.wait_field_error("tip", "amount")
    ui.fill("tip-amount", "5.00")
    ui.fill("tip-message", "For the recipe")
    ui.click("Continue to card")
    type_card(ui, VISA)
    ui.shot("supporter-tip-card")
    ui.click("Pay $5.00")
    # Pending until localstripe's signed webhook reaches the API and the tip is booked.
    ui.wait_text("tip-status", "Tip sent: $5.00, and the post is unlocked.", timeout=40)
    ui.shot("supporter-tip-sent")
    ui.click_link("Read the post")
    ui.wait_heading("Night owls")
    assert SECRET_RECIPE in ui.text_of("feed")
    assert "Locked · you can read it" in ui.text_of("feed")
    ui.wait(lambda d: d.execute_script("return getComputedStyle(document.getElementById('toast')).opacity") == "0")
    ui.shot("supporter-post-unlocked")

    ui.route("/tips")
    rows = [[c.text for c in row.find_elements(By.CSS_SELECTOR, "th, td")]
            for row in browser.find_elements(By.CSS_SELECTOR, "#tips tbody tr")]
    assert len(rows) == 1 and rows[0][1:] == [creator_id, "$5.00", "Once", locked["id"], "For the recipe", "—"]
    ui.shot("supporter-tips")

    # A monthly tip is a Stripe subscription, which localstripe cannot make: the API's error, at the field.
    ui.route(f"/tips/new?to={creator_id}")
    ui.fill("tip-amount", "3.00")
    ui.choose("tip-frequency", "monthly")
    ui.click("Continue to card")
    assert "payment provider" in ui.wait_field_error("tip", "frequency")
    assert browser.find_element(By.ID, "tip-frequency").get_attribute("aria-invalid") == "true"

    # Memberships: the tiers with their prices; subscribing hits the same limit, shown at the tier.
    ui.route("/memberships")
    tiers = ui.text_of("tiers")
    assert "Supporter Plus" in tiers and "$4.99 a month" in tiers and "$99.00 a month" in tiers
    assert "For\nBusinesses" in tiers
    options = [o.get_attribute("value")
               for o in browser.find_elements(By.CSS_SELECTOR, "#membership-membership_type option")]
    assert options == ["supporter_plus"]  # only the tiers of the caller's roles
    ui.click("Subscribe")
    assert "payment provider" in ui.wait_field_error("membership", "membership_type")
    assert ui.text_of("memberships") == "You have no membership."
    ui.shot("supporter-memberships")

    # A boost by card, credited by the webhook; its reward appears, pending until the campaign completes.
    ui.route("/boosts")
    ui.click_link("Owl lenses")
    ui.wait_heading("Boost Owl lenses")
    assert ui.text_of("remaining-budget") == "$10.00"
    ui.fill("boost-amount", "6.00")
    ui.click("Continue to card")
    type_card(ui, VISA)
    ui.click("Pay $6.00")
    ui.wait_text("boost-status", "Boost credited: $6.00 added to Owl lenses.", timeout=40)
    ui.shot("supporter-boost")
    ui.click_link("Your boosts and rewards")
    rows = [[c.text for c in row.find_elements(By.CSS_SELECTOR, "th, td")]
            for row in browser.find_elements(By.CSS_SELECTOR, "#rewards tbody tr")]
    assert len(rows) == 1 and rows[0][1:] == ["boost", campaign["id"], "pending", "$0.00", "$6.00", "—"]
    ui.shot("supporter-rewards")
    assert ui.console_errors() == []

    # The new pages pass axe and fit a phone, with the data above in them.
    problems = check_pages(ui, "supporter", ["/tips", f"/tips/new?to={creator_id}&post={locked['id']}&amount=5.00",
                                             "/memberships", "/boosts", f"/boosts/{campaign['id']}", "/rewards",
                                             "/wallet"])

    # The creator sees the tip received, net of the platform's fee.
    log_in(ui, creator_email)
    ui.route("/tips?direction=received")
    received = ui.text_of("tips")
    assert supporter_id in received and "$5.00" in received and "$4.75" in received  # OROS_TIP_FEE_PCT 5
    problems += check_pages(ui, "creator", ["/tips?direction=received", "/memberships"])

    # The business completes the campaign and gives its unspent budget back: the boost's 6.00 to its card.
    log_in(ui, business_email)
    api.call("POST", f"/v1/campaigns/{campaign['id']}/complete", business)
    ui.route(f"/campaigns/{campaign['id']}")
    ui.click("Refund unspent budget")
    # Its last events are paid by the next settlement first: the API's 409 is shown where the result goes.
    ui.wait_text("refund-outcome", "not settled yet")
    api.call("POST", "/v1/admin/settlements", api.admin())
    ui.click("Refund unspent budget")
    ui.wait_text("refund-outcome", "$16.00")
    outcome = ui.text_of("refund-outcome")
    assert "To boosters\n$6.00" in outcome and "To you\n$10.00" in outcome
    ui.shot("business-refund-unspent")
    problems += check_pages(ui, "business", [f"/campaigns/{campaign['id']}"])
    assert problems == []


def test_a_supporter_cannot_see_another_supporters_tips_or_boosts(browser, stack, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    creator_email, creator_id, _ = api.user("creator")
    _, _, owner = api.user("supporter")
    tip = paid_tip(api, stack, owner, creator_id, "4.00", XSS_MESSAGE)
    _, _, business = api.user("business")
    campaign = api.active_campaign(business)
    boost = api.call("POST", f"/v1/campaigns/{campaign['id']}/boosts", owner, amount="2.00")
    other_email, _, _ = api.user("supporter")

    log_in(ui, other_email)
    ui.route("/tips")
    assert ui.text_of("tips") == "You have not sent a tip yet."
    assert creator_id not in ui.main_text()
    for direction in ("sent", "received"):
        assert ui.fetch("GET", f"/v1/tips?direction={direction}")["data"]["items"] == []
    assert ui.fetch("POST", f"/v1/tips/monthly/{tip['id']}/cancel")["status"] == 404
    assert ui.fetch("POST", f"/v1/tips/{tip['id']}/confirm", {"payment_method": "pm_stolen"})["status"] == 404
    assert ui.fetch("GET", f"/v1/boosts/{boost['id']}")["status"] == 404
    assert ui.fetch("POST", f"/v1/boosts/{boost['id']}/confirm", {"payment_method": "pm_stolen"})["status"] == 404
    ui.route("/rewards")
    assert ui.text_of("rewards") == "No boost or reward yet."
    assert ui.fetch("GET", "/v1/me/memberships")["data"]["items"] == []
    assert ui.console_errors() == []

    # A tip's message is the supporter's words on the creator's page: text, never markup.
    log_in(ui, creator_email)
    ui.route("/tips?direction=received")
    assert XSS_MESSAGE in ui.text_of("tips")
    assert browser.execute_script("return window.__xss") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "#tips img, #tips script")
