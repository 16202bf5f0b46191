"""Driving the web app as a person does: by labels, button names and visible text; and the set-up
the browser tests arrange over HTTP (``Api``)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import requests
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from admin_api.auth import issue_token
from ingest.consumer import Ingester
from oros.accounts import create_admin
from webhooks.deliver import Deliverer

PASSWORD = "browser-password-1"  # every account the browser tests make
MEMBERS_ONLY = "Members only: the full night-shoot raw files."  # the post members_community locks
# A desktop browser's user agent: the tracker (rightly) treats "HeadlessChrome" as a bot.
DESKTOP_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0.0.0 Safari/537.36")

WAIT_S = 20


def _xpath_text(text: str) -> str:
    """An XPath string literal for any text (quotes included)."""
    if "'" not in text:
        return f"'{text}'"
    return "concat('" + "', \"'\", '".join(text.split("'")) + "')"


class UI:
    def __init__(self, driver, base_url: str, shots: Path):
        self.driver, self.base_url, self.shots = driver, base_url, shots
        shots.mkdir(parents=True, exist_ok=True)
        driver.get_log("browser")  # the browser is shared: drop what earlier tests logged

    def wait(self, condition, timeout: float = WAIT_S):
        # A page re-rendering between finding an element and reading it is a reason to look again, not a failure.
        waiting = WebDriverWait(self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,))
        return waiting.until(condition)

    def open(self, route: str = "/") -> None:
        """Load the app fresh at a hash route (a full page load, as typing the URL does)."""
        self.driver.get("about:blank")  # else a URL differing only in its hash would not reload the app
        self.driver.get(f"{self.base_url}/#{route}")
        self.wait(lambda d: d.find_element(By.ID, "main").get_attribute("aria-busy") is None
                  and d.find_elements(By.CSS_SELECTOR, "main h1"))

    def route(self, route: str) -> None:
        """Navigate inside the loaded app (a link click)."""
        self._navigating(lambda: self.driver.execute_script(
            "if (location.hash === '#' + arguments[0]) window.dispatchEvent(new HashChangeEvent('hashchange'));"
            " else location.hash = arguments[0];", route))

    def _navigating(self, action) -> None:
        """Do ``action`` and wait until the app has rendered the page it leads to."""
        page = self.driver.find_element(By.CSS_SELECTOR, "#main > *")
        action()
        self.wait(EC.staleness_of(page))
        self.settle()

    def settle(self) -> None:
        self.wait(lambda d: d.find_element(By.ID, "main").get_attribute("aria-busy") is None
                  and d.find_elements(By.CSS_SELECTOR, "main h1"))

    def heading(self) -> str:
        return self.driver.find_element(By.CSS_SELECTOR, "main h1").text

    def wait_heading(self, text: str) -> None:
        self.wait(lambda d: text in d.find_element(By.CSS_SELECTOR, "main h1").text)

    def fill(self, field_id: str, value: str) -> None:
        field = self.wait(EC.element_to_be_clickable((By.ID, field_id)))
        field.clear()
        field.send_keys(value)

    def set_value(self, field_id: str, value: str) -> None:
        """For inputs whose typing is locale-dependent (datetime-local): set the value as a script would."""
        self.driver.execute_script("document.getElementById(arguments[0]).value = arguments[1]", field_id, value)

    def choose(self, field_id: str, value: str) -> None:
        Select(self.driver.find_element(By.ID, field_id)).select_by_value(value)

    def button(self, name: str):
        """A button by its accessible name (aria-label) or visible text."""
        literal = _xpath_text(name)
        return self.wait(EC.element_to_be_clickable(
            (By.XPATH, f"//button[@aria-label={literal} or normalize-space(.)={literal}]")))

    def click(self, name: str, *, navigates: bool = False) -> None:
        """Click a button; with ``navigates``, wait for the page it leads to."""
        if navigates:
            self._navigating(lambda: self.click_found(lambda: self.button(name)))
        else:
            self.click_found(lambda: self.button(name))

    def click_found(self, find) -> None:
        # A page re-renders after most actions; an element found just before that is found again.
        for _ in range(5):
            try:
                find().click()
                return
            except StaleElementReferenceException:
                continue
        raise AssertionError("the element kept being replaced")

    def click_link(self, text: str) -> None:
        self._navigating(lambda: self.click_found(lambda: self.wait(EC.element_to_be_clickable((By.LINK_TEXT, text)))))

    def text_of(self, element_id: str) -> str:
        return self.wait(EC.presence_of_element_located((By.ID, element_id))).text

    def wait_text(self, element_id: str, text: str, timeout: float = WAIT_S) -> None:
        try:
            self.wait(EC.text_to_be_present_in_element((By.ID, element_id), text), timeout)
        except TimeoutException:
            found = self.driver.find_elements(By.ID, element_id)
            shown = found[0].text if found else "absent"
            raise AssertionError(f"#{element_id} never showed {text!r}: {shown!r}") from None

    def field_error(self, form_id: str, field: str) -> str:
        return self.text_of(f"{form_id}-{field}-error")

    def wait_field_error(self, form_id: str, field: str) -> str:
        self.wait(lambda d: d.find_element(By.ID, f"{form_id}-{field}-error").text.strip())
        return self.field_error(form_id, field)

    def main_text(self) -> str:
        return self.driver.find_element(By.ID, "main").text

    def fetch(self, method: str, path: str, body: dict | None = None) -> dict:
        """Call the API from the page the way the app does (same cookie, same CSRF header)."""
        return self.driver.execute_async_script("""
            const [method, path, body, done] = arguments;
            import('/app/js/api.js').then(({ api }) => api(method, path, body ?? undefined, { quiet401: true }))
              .then((data) => done({ status: 200, data }), (err) => done({ status: err.status, code: err.code }));
        """, method, path, body)

    def raw_fetch(self, method: str, path: str) -> int:
        """The HTTP status of a credentialed fetch from the page, without the app's CSRF header."""
        return self.driver.execute_async_script("""
            const [method, path, done] = arguments;
            fetch(path, { method, credentials: 'same-origin' }).then((r) => done(r.status), () => done(0));
        """, method, path)

    def shot(self, name: str) -> Path:
        """The whole page (the window grows to its height for the picture)."""
        path = self.shots / f"{name}.png"
        size = self.driver.get_window_size()
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(size["width"], min(max(height, 600), 4000))
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(size["width"], size["height"])
        return path

    def console_errors(self) -> list[str]:
        """Script errors and CSP violations; an API answering 4xx (which the page shows) is not one."""
        return [entry["message"] for entry in self.driver.get_log("browser")
                if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]]

    def log_out(self) -> None:
        if self.driver.find_elements(By.ID, "logout"):
            self.click("Log out")
            self.wait(lambda d: "#/login" in d.current_url)
        self.driver.delete_all_cookies()


def sign_up(ui: UI, email: str, role: str, name: str) -> None:
    ui.log_out()
    ui.open("/signup")
    ui.fill("signup-email", email)
    ui.fill("signup-password", PASSWORD)
    ui.fill("signup-display_name", name)
    ui.driver.find_element(By.ID, f"signup-role-{role}").click()
    ui.click("Create account")


def log_in(ui: UI, email: str, password: str = PASSWORD) -> None:
    ui.log_out()
    ui.open("/login")
    ui.fill("login-email", email)
    ui.fill("login-password", password)
    ui.click("Log in")
    ui.wait(lambda d: "#/login" not in d.current_url)
    ui.settle()


class Api:
    """Set-up over HTTP with Bearer tokens (what the test arranges; the browser is what is tested)."""

    def __init__(self, stack):
        self.url, self.settings = stack.admin_url, stack.settings

    def user(self, role: str, name: str | None = None) -> tuple[str, str, dict]:
        email = f"{role}-{secrets.token_hex(4)}@web.example"
        body = requests.post(f"{self.url}/v1/auth/signup", timeout=30,
                             json={"email": email, "password": PASSWORD, "roles": [role], "display_name": name}).json()
        return email, body["user"]["id"], {"Authorization": f"Bearer {body['token']}"}

    def call(self, verb: str, path: str, auth: dict, **body):
        response = requests.request(verb, f"{self.url}{path}", json=body or None, headers=auth, timeout=30)
        assert response.status_code < 300, response.text
        return response.json()

    def campaign(self, auth: dict, **fields) -> dict:
        return self.call("POST", "/v1/campaigns", auth, **{
            "title": "Private draft", "objective": "click", "payout_per_action": "1.00", "total_budget": "10.00",
            "destination_url": "https://shop.example/", **fields})

    def admin(self) -> dict:
        """A new admin's auth; ``admin_email`` is then its login."""
        self.admin_email = f"root-{secrets.token_hex(3)}@web.example"
        user_id = create_admin(self.settings, self.admin_email, PASSWORD)
        return {"Authorization": f"Bearer {issue_token(self.settings, user_id)}"}

    def active_campaign(self, business: dict, **fields) -> dict:
        campaign = self.campaign(business, **fields)
        self.call("POST", f"/v1/admin/campaigns/{campaign['id']}/funding", self.admin(), amount="10.00", reference="w")
        return self.call("POST", f"/v1/campaigns/{campaign['id']}/activate", business)


def deliver_webhooks(stack, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> list:
    """One pass of the webhook sender (``oros webhooks --once``) at the clock's time, on the stack's loop."""
    async def once() -> list:
        deliverer = Deliverer(stack.settings, clock=clock)
        await deliverer.open()
        try:
            return await deliverer.deliver_due()
        finally:
            await deliverer.close()

    return stack.run(once())


def type_card(ui: UI, card: dict) -> None:
    """Type a card into the card element, field by field, as a person does."""
    ui.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#card-element input[placeholder=number]"))
    for field, value in card.items():
        ui.driver.find_element(By.CSS_SELECTOR, f"#card-element input[placeholder={field}]").send_keys(value)


def ingest(stack) -> int:
    """Drain the stack's stream into ClickHouse once; the number of events moved."""
    async def drain() -> int:
        ingester = Ingester(stack.settings, consumer="browser")
        try:
            return await ingester.drain_once()
        finally:
            await ingester.close()

    return stack.run(drain())


def rows(browser, table_id: str) -> list[list[str]]:
    """The cells of a table's body rows, as shown."""
    return [[c.text for c in row.find_elements(By.CSS_SELECTOR, "th, td")]
            for row in browser.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]


def members_community(api: Api, creator: dict, supporter: dict) -> str:
    """A creator's community with one post locked to Supporter Plus members, the supporter joined; its id."""
    community = api.call("POST", "/v1/communities", creator, name="Night shoots", description="For members.")
    api.call("POST", f"/v1/communities/{community['id']}/posts", creator, content_type="text", body=MEMBERS_ONLY,
             is_locked=True, unlock_tier="supporter_plus")
    api.call("POST", f"/v1/communities/{community['id']}/join", supporter)
    return community["id"]
