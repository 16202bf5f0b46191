"""Memberships and monthly tips paid from the page against ``oros dev``'s localstripe (oros.localstripe_child,
with oros.localstripe_billing): the supporter subscribes, types a card into the card element, the API
confirms the subscription's first invoice, localstripe's own signed ``invoice.payment_succeeded`` books it,
and the page shows it active (the membership opens a member-only post; the monthly tip's first month is in
the creator's wallet). A declined card is shown at the card, and the unpaid monthly tip is listed and
canceled; another, left unpaid, is paid from the list later, as a creator's membership is from its row.
Another supporter sees none of it."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row
from selenium.webdriver.common.by import By

from page_checks import check_pages
from processes import dev_localstripe
from webui import MEMBERS_ONLY, UI, Api, log_in, members_community, rows, type_card

VISA = {"number": "4242424242424242", "exp_month": "12", "exp_year": "30", "cvc": "123", "postal_code": "10001"}
DECLINED = {**VISA, "number": "4000000000000341"}  # attaches, then its charge is declined



@pytest.fixture(scope="module")
def localstripe_url():
    """This module's Stripe is localstripe as ``oros dev`` runs it (subscriptions in today's shape)."""
    with dev_localstripe() as url:
        yield url


def books(stack, sql: str, *args) -> list[dict]:
    with psycopg.connect(stack.settings.database_url, row_factory=dict_row) as conn:
        return conn.execute(sql, args).fetchall()


def pay(ui: UI, card: dict, amount: str) -> None:
    type_card(ui, card)
    ui.click(f"Pay {amount}")


def test_a_supporter_pays_a_membership_and_a_monthly_tip_from_the_page(browser, stack, tmp_path):
    api, ui = Api(stack), UI(browser, stack.admin_url, tmp_path / "shots")
    creator_email, creator_id, creator = api.user("creator")
    supporter_email, supporter_id, supporter = api.user("supporter")
    community = members_community(api, creator, supporter)

    # Subscribe, pay the first month by card; active once localstripe's webhook reached the API.
    log_in(ui, supporter_email)
    ui.route("/memberships")
    ui.click("Subscribe")
    ui.wait_text("membership-opened", "Supporter Plus: $4.99 a month, pending until its first month is paid.")
    pay(ui, VISA, "$4.99")
    ui.wait(lambda d: rows(d, "memberships") and rows(d, "memberships")[0][1] == "active in effect", timeout=40)
    [row] = rows(browser, "memberships")
    [member] = books(stack, "SELECT id::text AS id, status FROM memberships WHERE user_id = %s", supporter_id)
    assert member["status"] == "active" and row[0] == "Supporter Plus" and row[2] == "$4.99" and row[4] != "—"
    ui.shot("supporter-membership-paid")
    ui.route(f"/communities/{community}")
    assert MEMBERS_ONLY in ui.text_of("feed")

    # A monthly tip: its first month paid by card, booked once, in the creator's wallet net of the fee.
    ui.route(f"/tips/new?to={creator_id}")
    ui.fill("tip-amount", "3.00")
    ui.choose("tip-frequency", "monthly")
    ui.click("Continue to card")
    ui.wait_text("monthly-opened", "Monthly tip of $3.00 opened")
    pay(ui, VISA, "$3.00")
    ui.wait_text("tip-status", "Monthly tip started: the first month is sent: $3.00.", timeout=40)
    [tip] = books(stack, "SELECT t.amount, t.net_amount, i.status, i.id::text AS intent FROM tips t"
                         " JOIN tip_intents i ON i.id = t.intent_id WHERE t.from_user_id = %s", supporter_id)
    assert (tip["amount"], tip["net_amount"], tip["status"]) == (Decimal("3.00"), Decimal("2.85"), "active")
    ui.shot("supporter-monthly-tip-paid")

    # A monthly tip whose card step was left: listed pending, paid from its row later.
    ui.route(f"/tips/new?to={creator_id}")
    ui.fill("tip-amount", "4.00")
    ui.choose("tip-frequency", "monthly")
    ui.click("Continue to card")
    ui.wait_text("monthly-opened", "Monthly tip of $4.00 opened")
    later = books(stack, "SELECT id::text AS id FROM tip_intents WHERE status = 'pending' AND from_user_id = %s",
                  supporter_id)[0]["id"]
    ui.route("/tips")
    ui.click(f"Pay the first month of monthly tip {later}")
    pay(ui, VISA, "$4.00")
    ui.wait_text("tip-status", "Monthly tip started: the first month is sent: $4.00.", timeout=40)

    # A declined card is shown at the card; that monthly tip stays pending, listed, and is canceled there.
    ui.route(f"/tips/new?to={creator_id}")
    ui.fill("tip-amount", "2.50")
    ui.choose("tip-frequency", "monthly")
    ui.click("Continue to card")
    pay(ui, DECLINED, "$2.50")
    ui.wait(lambda d: d.find_element(By.ID, "card-error").text.strip())
    ui.route("/tips")
    monthly = rows(browser, "monthly-tips")
    assert [r[1:3] for r in monthly] == [["$2.50", "pending first month not paid yet"],
                                         ["$4.00", "active charged every month"],
                                         ["$3.00", "active charged every month"]]
    assert [r[2:4] for r in rows(browser, "tips")] == [["$4.00", "Every month"], ["$3.00", "Every month"]]
    pending = books(stack, "SELECT id::text AS id FROM tip_intents WHERE status = 'pending' AND from_user_id = %s",
                    supporter_id)[0]["id"]
    ui.click(f"Cancel monthly tip {pending}")
    ui.wait(lambda d: "canceled" in rows(d, "monthly-tips")[0][-1] or not d.find_elements(
        By.XPATH, f"//button[@aria-label='Cancel monthly tip {pending}']"))
    assert books(stack, "SELECT status FROM tip_intents WHERE id = %s", pending)[0]["status"] == "canceled"
    problems = check_pages(ui, "supporter", ["/memberships", "/tips"])

    # Another supporter: none of it on the pages, nothing through the calls they make.
    other_email, _, _ = api.user("supporter")
    log_in(ui, other_email)
    ui.route("/tips")
    assert not browser.find_elements(By.ID, "monthly-tips") and "$3.00" not in ui.main_text()
    assert ui.fetch("GET", "/v1/tips/monthly")["data"]["items"] == []
    assert ui.fetch("POST", f"/v1/tips/{tip['intent']}/confirm", {"payment_method": "pm_x"})["status"] == 404
    assert ui.fetch("POST", f"/v1/tips/monthly/{tip['intent']}/cancel")["status"] == 404
    ui.route("/memberships")
    assert rows(browser, "memberships") == []
    assert ui.fetch("POST", f"/v1/memberships/{member['id']}/confirm", {"payment_method": "pm_x"})["status"] == 404

    # A creator leaves its Creator Plus card step, finds the membership pending, and pays it from its row.
    log_in(ui, creator_email)
    ui.route("/memberships")
    ui.click("Subscribe")
    ui.wait_text("membership-opened", "Creator Plus: $9.99 a month, pending until its first month is paid.")
    ui.route("/memberships")
    assert rows(browser, "memberships")[0][1] == "pending waiting for the first payment"
    ui.click("Pay the first month of Creator Plus")
    pay(ui, VISA, "$9.99")
    ui.wait(lambda d: rows(d, "memberships") and rows(d, "memberships")[0][1] == "active in effect", timeout=40)
    assert books(stack, "SELECT status FROM memberships WHERE user_id = %s", creator_id) == [{"status": "active"}]
    assert problems == [] and ui.console_errors() == []
