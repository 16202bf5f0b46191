"""Live shopping and share links in the browser, against the real stack: a creator schedules a live event
from the page (a campaign it is not accepted on refused at its field), its business sets the commission,
the creator goes live, a viewer clicks the live link through the tracker, the business reports a sale with
its API key from the page, ingest and the settler pay it, and both see the commission the ledger booked. A
supporter makes a share link of a creator's link, a visitor clicks it, and the supporter's share reward
shown is the ledger's. Other creators, businesses and supporters see none of it."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from decimal import Decimal

import psycopg
import pytest
import requests
from psycopg.rows import dict_row
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from page_checks import check_pages
from webui import DESKTOP_UA, UI, Api, ingest, log_in

VISITOR_IP = "203.0.113.7"  # a share link's visitor, told apart from its maker (the page, on loopback)


@pytest.fixture(scope="module")
def web_settings(web_settings):
    """The tracker and the API believe loopback's X-Forwarded-For, so a visitor can come from elsewhere."""
    settings, tracker_port = web_settings
    return replace(settings, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)), tracker_port


def books(stack, sql: str, *args) -> dict:
    with psycopg.connect(stack.settings.database_url, row_factory=dict_row) as conn:
        return conn.execute(sql, args).fetchone()


def usd(value: Decimal) -> str:
    return f"${value:.2f}"


def accepted_creator(api: Api, business: dict, campaign: dict, name: str | None = None) -> tuple[str, str, dict]:
    email, creator_id, creator = api.user("creator", name)
    api.call("POST", f"/v1/campaigns/{campaign['id']}/creators", creator)
    api.call("POST", f"/v1/campaigns/{campaign['id']}/creators/{creator_id}/accept", business)
    return email, creator_id, creator


def visit(url: str, ip: str = VISITOR_IP) -> None:
    answer = requests.get(url, headers={"User-Agent": DESKTOP_UA, "X-Forwarded-For": ip}, allow_redirects=False,
                          timeout=10)
    assert answer.status_code in (302, 307), answer.status_code


def settle(stack, api: Api) -> dict:
    ingest(stack)
    return api.call("POST", "/v1/admin/settlements", api.admin())


def test_a_live_event_from_scheduling_to_its_paid_commission(browser, stack, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    business_email, _, business = api.user("business")
    campaign = api.active_campaign(business, title="Live drop", objective="sale", payout_per_action="5.00")
    elsewhere = api.active_campaign(business, title="Not yours")
    creator_email, creator_id, _ = accepted_creator(api, business, campaign, "Lina Live")
    key = api.call("POST", "/v1/api-keys", business, name="shop server")["key"]

    # The creator schedules it; a campaign it is not accepted on is refused at the campaign.
    log_in(ui, creator_email)
    ui.route("/live")
    ui.click_link("Schedule a live event")
    ui.choose("live-campaign_id", elsewhere["id"])
    ui.fill("live-title", "Spring drop, live")
    ui.click("Schedule")
    assert "accepted" in ui.wait_field_error("live", "campaign_id")
    ui.choose("live-campaign_id", campaign["id"])
    ui.click("Schedule", navigates=True)
    ui.wait_heading("Spring drop, live")
    event_id = browser.current_url.rsplit("/", 1)[-1]
    live_url = browser.find_element(By.CSS_SELECTOR, "#live-link input").get_attribute("value")
    assert live_url.startswith(stack.tracker_url)
    assert ui.text_of("live-commission-pct") == "the campaign's payout per sale"
    assert not browser.find_elements(By.ID, "commission")  # the business's, not the creator's

    # Its business finds it, is refused a commission over 100 at the field, sets 10 %.
    log_in(ui, business_email)
    ui.route("/live")
    ui.click_link("Spring drop, live")
    ui.fill("commission-commission_pct", "150")
    ui.click("Set commission")
    assert "percent" in ui.wait_field_error("commission", "commission_pct")
    ui.fill("commission-commission_pct", "10")
    ui.click("Set commission")
    ui.wait_text("live-commission-pct", "10.00% of each sale")
    assert "Lina Live" in ui.main_text() and creator_id not in ui.main_text()  # the creator by name
    assert not browser.find_elements(By.ID, "sale")  # no sales before it is live
    assert not browser.find_elements(By.ID, "live-start")  # the creator's moves

    # The creator goes live; a viewer arrives through the live link.
    log_in(ui, creator_email)
    ui.route(f"/live/{event_id}")
    ui.click("Go live")
    ui.wait_text("live-status", "live")
    visit(live_url)

    # The business reports a sale with its API key: a wrong key is refused at the key, nothing reported.
    log_in(ui, business_email)
    ui.route(f"/live/{event_id}")
    ui.fill("sale-api_key", "oros_sk_not-a-key")
    ui.fill("sale-order_id", "order-live-1")
    ui.fill("sale-amount", "40.00")
    ui.click("Report sale")
    assert ui.wait_field_error("sale", "api_key")
    ui.fill("sale-api_key", key)
    ui.click("Report sale")
    ui.wait(lambda d: not d.find_element(By.ID, "sale-api_key").get_attribute("value"))

    report = settle(stack, api)
    ui.click("Refresh")
    ui.wait_text("live-paid", "1", timeout=30)
    sold = books(stack, "SELECT count(*) AS n, sum(amount) AS gmv, sum(commission) AS commission,"
                        " sum(commission - platform_fee) AS net FROM live_sales WHERE live_event_id = %s", event_id)
    ledger = books(stack, "SELECT sum(l.amount) FILTER (WHERE w.purpose = 'escrow') AS escrow,"
                          " sum(l.amount) FILTER (WHERE w.user_id = %s) AS creator FROM ledger_entries l"
                          " JOIN wallets w ON w.id = l.wallet_id JOIN live_sales s ON s.id = l.source_id"
                          " WHERE l.source_type = 'live_sale' AND s.live_event_id = %s", creator_id, event_id)
    assert sold["n"] == 1, report
    assert sold["commission"] == ledger["escrow"] == Decimal("4.00")  # 10 % of 40.00
    assert ui.text_of("live-commission") == usd(ledger["escrow"])
    assert ui.text_of("live-creator-net") == usd(ledger["creator"]) == usd(sold["net"])
    assert ui.text_of("live-gmv") == usd(sold["gmv"]) == "$40.00"
    assert (ui.text_of("live-reported"), ui.text_of("live-reported-value")) == ("1", "$40.00")
    assert ui.text_of("live-clicks") == "1"
    sale_row = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#live-sales tbody :is(th, td)")]
    assert sale_row[0] == "order-live-1" and sale_row[2:5] == ["$40.00", "$4.00", "paid"], sale_row
    assert sale_row[5] != "—", sale_row  # held until: the refund button is offered only while it is
    browser.execute_script("window.scrollTo(0, 0)")
    ui.shot("business-live-event")  # docs/webapp-live-event.png
    problems = check_pages(ui, "business", ["/live", f"/live/{event_id}"])

    # The business refunds it from the page (its session, no API key): confirmed, the row says so, and the
    # next settlement takes the commission back while it is held.
    ui.route(f"/live/{event_id}")
    ui.click("Refund order order-live-1")
    ui.wait(EC.alert_is_present()).dismiss()  # changed its mind: nothing sent
    assert ui.button("Refund order order-live-1")
    assert "refund requested" not in browser.find_element(By.ID, "live-sales").text
    ui.click("Refund order order-live-1")
    ui.wait(EC.alert_is_present()).accept()
    ui.wait(lambda d: "refund requested" in d.find_element(By.ID, "live-sales").text)
    assert "requested" in browser.find_element(By.ID, "toast").text
    assert not browser.find_elements(By.XPATH, "//button[@aria-label='Refund order order-live-1']")
    settle(stack, api)
    ui.click("Refresh")
    ui.wait_text("live-refunded", "1", timeout=30)
    refunded = books(stack, "SELECT status, commission FROM live_sales WHERE live_event_id = %s", event_id)
    assert (refunded["status"], refunded["commission"]) == ("refunded", Decimal("0.00"))
    assert (ui.text_of("live-paid"), ui.text_of("live-commission")) == ("0", "$0.00")
    assert "refunded" in browser.find_element(By.ID, "live-sales").text
    problems += check_pages(ui, "business", [f"/live/{event_id}"])

    # The creator sees the same numbers, ends the event; the live page's picture for the docs.
    log_in(ui, creator_email)
    ui.route(f"/live/{event_id}")
    assert ui.text_of("live-commission") == "$0.00" and ui.text_of("live-refunded") == "1"
    assert "order-live-1" in ui.text_of("live-sales")
    ui.click("End live event")
    ui.wait_text("live-status", "ended")
    ui.shot("creator-live-event")
    problems += check_pages(ui, "creator", ["/live", "/live/new", f"/live/{event_id}"])
    assert problems == [] and ui.console_errors() == []


def test_a_supporter_shares_a_creators_link_and_sees_its_reward(browser, stack, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    _, _, business = api.user("business")
    campaign = api.active_campaign(business, title="Share me")
    _, creator_id, creator = accepted_creator(api, business, campaign, "Sam Share")
    link = api.call("POST", f"/v1/campaigns/{campaign['id']}/links", creator)
    supporter_email, supporter_id, _ = api.user("supporter")

    log_in(ui, supporter_email)
    ui.route("/shares")
    ui.click("Get my share link")
    assert "Paste a creator's link" in ui.wait_field_error("share", "link")
    ui.fill("share-link", "https://go.example/no-such-link")
    ui.click("Get my share link")
    assert "not found" in ui.wait_field_error("share", "link").lower()
    ui.fill("share-link", link["url"])
    ui.click("Get my share link")
    share_url = ui.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#share-link input"))[0].get_attribute("value")
    assert share_url.startswith(stack.tracker_url) and share_url != link["url"]
    assert ui.text_of("share-pct").startswith("10.00% of each payout")
    qr = browser.find_element(By.CSS_SELECTOR, "#share-link img")
    ui.wait(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", qr))
    assert ui.button(f"Copy share link: {share_url}")
    assert "Sam Share" in ui.text_of("share-made")
    # The list of the supporter's share links has it, with its own copy button.
    ui.wait(lambda d: share_url in d.find_element(By.ID, "my-shares").text)
    assert browser.find_elements(By.XPATH, f"//*[@id='my-shares']//button[@aria-label='Copy share link: {share_url}']")
    # Asking again (by code this time) shows the same link: one per link and supporter.
    ui.fill("share-link", link["code"])
    ui.click("Get my share link")
    ui.wait(lambda d: d.find_element(By.CSS_SELECTOR, "#share-link input").get_attribute("value") == share_url)

    visit(share_url)
    report = settle(stack, api)
    ui.route("/shares")
    cells = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#share-rewards tbody tr:first-child td")]
    reward = books(stack, "SELECT r.amount, r.status, sum(l.amount) AS booked FROM rewards r"
                          " JOIN ledger_entries l ON l.transfer_id = r.transfer_id AND l.description = 'share reward'"
                          " WHERE r.user_id = %s AND r.source = 'share' GROUP BY r.amount, r.status", supporter_id)
    assert reward is not None, report
    assert reward["amount"] == reward["booked"] == Decimal("0.10")  # 10 % of the 1.00 click, out of the creator's
    assert cells[2:4] == [reward["status"], usd(reward["amount"])]
    # The share link's row: its creator by name, the campaign, its paid click and what it earned.
    row = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#my-shares tbody tr:first-child td")]
    assert row[:5] == ["Sam Share", "Share me", "1", "0", "1"] and row[5] == usd(reward["amount"]), row
    assert books(stack, "SELECT count(*) AS n FROM events WHERE creator_id = %s AND share_reward IS NOT NULL",
                 creator_id)["n"] == 1
    problems = check_pages(ui, "supporter", ["/shares", "/rewards"])
    assert problems == [] and ui.console_errors() == []

    # Finance sees the reward in the run's report, as the ledger booked it.
    ui.log_out()
    log_in(ui, api.admin_email)
    ui.route("/finance")
    runs = ui.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#runs details"))[0]
    text = browser.execute_script("return arguments[0].textContent", runs)
    assert f"1 events through share links, 1 rewards ({usd(reward['booked'])})" in text, text


def test_others_cannot_see_a_live_event_or_a_share(browser, stack, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    _, _, business = api.user("business")
    campaign = api.active_campaign(business, title="Private live", objective="sale", payout_per_action="2.00")
    _, _, creator = accepted_creator(api, business, campaign)
    event = api.call("POST", "/v1/live-events", creator, campaign_id=campaign["id"], title="Owners only",
                     starts_at="2030-01-01T20:00:00Z")
    api.call("PATCH", f"/v1/live-events/{event['id']}", business, commission_pct="12.5")
    link = api.call("POST", f"/v1/campaigns/{campaign['id']}/links", creator)
    _, _, supporter = api.user("supporter")
    share = api.call("POST", f"/v1/links/{link['code']}/shares", supporter)
    base = f"/v1/live-events/{event['id']}"

    for role in ("creator", "business"):
        email, _, _ = api.user(role)
        log_in(ui, email)
        ui.route("/live")
        assert "Owners only" not in ui.main_text()
        # The event's public page: its title and link, none of its numbers, commission or actions.
        ui.route(f"/live/{event['id']}")
        assert ui.heading() == "Owners only"
        for hidden in ("live-clicks", "live-commission", "live-commission-pct", "live-start", "commission", "sale"):
            assert not browser.find_elements(By.ID, hidden), (role, hidden)
        assert "12.5" not in ui.main_text()
        assert ui.fetch("GET", "/v1/live-events")["data"]["items"] == []
        public = ui.fetch("GET", base)["data"]
        assert "sales" not in public and "commission_pct" not in public and "viewers" not in public
        assert ui.fetch("POST", f"{base}/start")["status"] == 403
        assert ui.fetch("PATCH", base, {"commission_pct": "50"})["status"] == 403
        assert ui.fetch("GET", f"{base}/sales")["data"]["items"] == []  # the parties' only
        assert ui.raw_fetch("GET", f"/v1/links/{share['code']}/qr.svg") == 404

    email, _, _ = api.user("supporter")
    log_in(ui, email)
    ui.route("/live")
    assert ui.heading() == "Not available"
    ui.route("/shares")
    assert share["url"] not in browser.page_source
    # A live link is not shared (its sales are the event's): refused at the field.
    ui.fill("share-link", event["link"]["url"])
    ui.click("Get my share link")
    assert "live" in ui.wait_field_error("share", "link")
    assert ui.fetch("GET", "/v1/me/rewards?source=share")["data"]["items"] == []
    assert ui.fetch("GET", "/v1/me/shares")["data"]["items"] == []
    assert ui.raw_fetch("GET", f"/v1/links/{share['code']}/qr.svg") == 404
    # Asking for a share of the same link makes this supporter its own, never the other's.
    mine = ui.fetch("POST", f"/v1/links/{link['code']}/shares")["data"]
    assert mine["code"] != share["code"] and mine["supporter_id"] != share["supporter_id"]

    # Anyone may open the event's page (the API's event is public): its link, none of its numbers.
    ui.log_out()
    ui.open(f"/live/{event['id']}")
    assert ui.heading() == "Owners only" and event["link"]["url"] in browser.page_source
    assert not browser.find_elements(By.ID, "live-clicks") and "12.5" not in ui.main_text()
    assert ui.console_errors() == []
