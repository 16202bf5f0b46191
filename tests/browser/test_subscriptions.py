"""Memberships and monthly tips in the browser against a Stripe with Billing (tests/billing_double.py in
front of localstripe): a supporter subscribes to a tier, sees it pending, and active once the signed
``invoice.paid`` webhook arrives (the double plays the customer paying, as a card elsewhere would; the
page's own card step is test_subscriptions_paid.py's); the tier opens a member-only post; a second
subscription is refused at its field; cancelling ends it at the period's end. A monthly tip is opened and
canceled. The memberships page passes axe and fits a phone with that data."""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest
import requests
from selenium.webdriver.common.by import By

from billing_double import BillingDouble
from page_checks import check_pages
from webui import MEMBERS_ONLY, UI, Api, log_in, members_community, rows

WEBHOOK_SECRET = "whsec_billing_" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def billing(localstripe_url):
    double = BillingDouble(localstripe_url, WEBHOOK_SECRET).start()
    yield double
    double.stop()


@pytest.fixture(scope="module")
def web_settings(web_settings, billing):
    """This module's stack asks the billing double (which signs its events with its own secret) for Stripe."""
    settings, tracker_port = web_settings
    return replace(settings, stripe_api_base=billing.url, stripe_webhook_secret=WEBHOOK_SECRET), tracker_port


def stripe_says(stack, billing: BillingDouble, kind: str, obj: dict) -> dict:
    """Stripe's webhook for what happened at Stripe (the double's doing), posted to the API as Stripe would."""
    payload, headers = billing.event(kind, obj)
    answer = requests.post(f"{stack.admin_url}/v1/webhooks/stripe", data=payload, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_supporter_subscribes_pays_reads_members_posts_and_cancels(browser, stack, billing, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    _, creator_id, creator = api.user("creator")
    supporter_email, _, supporter = api.user("supporter")
    community = members_community(api, creator, supporter)

    log_in(ui, supporter_email)
    ui.route("/memberships")
    ui.click("Subscribe")  # the card step follows; here the customer pays elsewhere (the double, below)
    ui.wait_text("membership-opened", "Supporter Plus: $4.99 a month, pending until its first month is paid.")
    ui.route("/memberships")
    [row] = rows(browser, "memberships")
    assert row[:3] == ["Supporter Plus", "pending waiting for the first payment", "$4.99"]
    mine = ui.fetch("GET", "/v1/me/memberships")["data"]["items"][0]

    # The customer pays the first invoice at Stripe; its signed invoice.paid makes the membership active.
    paid = billing.pay(mine["billing_provider_id"])
    assert stripe_says(stack, billing, "invoice.paid", paid)["outcome"] == "activated"
    ui.route("/memberships")
    [row] = rows(browser, "memberships")
    assert row[:3] == ["Supporter Plus", "active in effect", "$4.99"] and row[4] != "—"
    ui.shot("supporter-membership-active")
    # One live membership per tier: the API's 409 is shown at the tier.
    ui.click("Subscribe")
    assert "already have a active supporter_plus membership" in ui.wait_field_error("membership", "membership_type")
    problems = check_pages(ui, "supporter", ["/memberships"])

    # The tier opens the member-only post of a community the supporter belongs to.
    ui.route(f"/communities/{community}")
    assert MEMBERS_ONLY in ui.text_of("feed")

    # Cancelling keeps it until the paid period ends, at Stripe too.
    ui.route("/memberships")
    ui.click("Cancel Supporter Plus membership", navigates=True)
    [row] = rows(browser, "memberships")
    assert row[1] == "active in effect" and row[5].startswith("Ends ")
    assert billing.subscription(mine["billing_provider_id"])["cancel_at_period_end"] is True

    # A monthly tip: opened pending (its first invoice waits for a card), then canceled at once.
    ui.route(f"/tips/new?to={creator_id}")
    ui.fill("tip-amount", "3.00")
    ui.choose("tip-frequency", "monthly")
    ui.click("Continue to card")
    ui.wait_text("monthly-opened", "Monthly tip of $3.00 opened: pay its first month below")
    ui.shot("supporter-monthly-tip")
    ui.click_found(lambda: ui.wait(lambda d: d.find_element(By.CSS_SELECTOR, "#monthly-opened button")))
    ui.wait_text("monthly-opened", "canceled")
    problems += check_pages(ui, "supporter", ["/tips"])
    assert problems == [] and ui.console_errors() == []
