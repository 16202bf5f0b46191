"""Browser tests: Debian's headless Chromium driven by Selenium, against the real stack.

* Chromium and its driver come from Debian (``chromium``, ``chromium-driver``); the
  first browser test installs them with apt-get when ``/usr/bin/chromium`` is
  missing (CI runs as root on a fresh machine), so the README's test command
  needs nothing else. Selenium gets the driver's path explicitly, so Selenium
  Manager never tries to download one.
* One browser per session (a fresh profile), one stack per module: the admin
  API (serving the web app) and a tracker on real ports in a thread of their
  own, over a database, Redis prefix and ClickHouse database of the module's own.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import shutil
import subprocess
import threading
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest
import redis as sync_redis
import requests
from aiohttp import web

from admin_api.app import create_app as create_admin_app
from oros.connections import clickhouse_client
from oros.migrate import migrate_clickhouse
from settler.jobs import OWNER_JOBS
from tracker.app import create_app as create_tracker_app

from processes import free_port
from webui import DESKTOP_UA

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage",
                  # No fades: axe measured the toast's contrast mid-transition (half-opaque) and failed at random.
                  "--force-prefers-reduced-motion")
WEBHOOK_SECRET = "whsec_webapp_" + secrets.token_hex(8)
APT_TIMEOUT_S = 900

# Installing Chromium on a fresh machine takes a few minutes: more than the default test timeout.
pytestmark = pytest.mark.timeout(APT_TIMEOUT_S + 300)


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver when missing (root only, as in CI)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail("browser tests need /usr/bin/chromium and /usr/bin/chromedriver: "
                    "apt-get install chromium chromium-driver")
    with open("/tmp/oros-tests-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers install once, one after the other
        if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
            _apt_install()


def _apt_install() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "chromium-driver"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1280,1000")
    options.add_argument(f"--user-agent={DESKTOP_UA}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()  # stops chromedriver, which ends its Chromium


class Stack:
    """The admin API (with the web app) and a tracker on real ports, in one thread and event loop.

    ``extra`` apps (e.g. an attacker's page) are served on their own ports, on ``localhost``
    rather than 127.0.0.1 so the browser treats them as another site.
    """

    def __init__(self, settings, admin_port: int, tracker_port: int, extra: dict[str, web.Application]):
        self.settings = settings
        self.ports = {"admin": admin_port, "tracker": tracker_port, **{name: free_port() for name in extra}}
        self.apps = {"admin": create_admin_app(settings, OWNER_JOBS), "tracker": create_tracker_app(settings), **extra}
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        self.tracker_url = f"http://127.0.0.1:{tracker_port}"

    def url(self, name: str) -> str:
        return f"http://localhost:{self.ports[name]}"

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        runners = []
        for name, app in self.apps.items():
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            host = "127.0.0.1" if name in ("admin", "tracker") else "localhost"
            await web.TCPSite(runner, host, self.ports[name]).start()
            runners.append(runner)
        self.ready.set()
        await self.stopping.wait()
        for runner in reversed(runners):
            await runner.cleanup()

    def run(self, coro):
        """Run a coroutine on the stack's loop (e.g. ingest, which shares its chDB engine)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def __enter__(self) -> Stack:
        self.thread.start()
        assert self.ready.wait(60), "the stack did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(30)


def _with_database(url: str, name: str) -> str:
    return urlparse(url)._replace(path=f"/{name}").geturl()


@pytest.fixture(scope="module")
def web_settings(base_settings, template_db, localstripe_url):
    """A module's own database, Redis prefix and ClickHouse database (the ``settings`` fixture, module-wide)."""
    n = f"{os.getpid()}_{secrets.token_hex(3)}"
    db_name = f"oros_web_{n}"
    with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}" TEMPLATE "{template_db}"')
    tracker_port = free_port()
    settings = replace(
        base_settings, database_url=_with_database(base_settings.database_url, db_name),
        clickhouse_database=f"web_{n}", redis_prefix=f"web:{n}:", tracker_url=f"http://127.0.0.1:{tracker_port}",
        stripe_api_base=localstripe_url, stripe_webhook_secret=WEBHOOK_SECRET, stripe_api_key="sk_test_oros",
        stripe_publishable_key="pk_test_oros",
        webhooks_allow_private=True,  # the tests' webhook receivers listen on loopback, over http
    )
    migrate_clickhouse(settings)
    yield settings, tracker_port
    clickhouse_client(settings, database="").command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")
    client = sync_redis.Redis.from_url(base_settings.redis_url)
    keys = list(client.scan_iter(match=f"{settings.redis_prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
    with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def attacker_app(target: str) -> web.Application:
    """Another site's pages: a self-submitting form and a credentialed fetch, both aimed at ``target``."""
    form = (f'<form id="f" method="POST" action="{target}/v1/campaigns" enctype="text/plain">'
            '<input name=\'{"title":"csrf","objective":"click","payout_per_action":"1","total_budget":"5",'
            '"destination_url":"https://evil.example","x":"\' value=\'"}\'></form>'
            '<script>document.getElementById("f").submit()</script>')
    fetcher = ("<script>fetch('" + target + "/v1/campaigns', {method: 'POST', credentials: 'include', "
               "headers: {'Content-Type': 'application/json', 'X-OROS-CSRF': 'guess'}, body: JSON.stringify("
               "{title: 'csrf-fetch', objective: 'click', payout_per_action: '1', total_budget: '5', "
               "destination_url: 'https://evil.example'})}).then(r => document.title = 'sent ' + r.status, "
               "e => document.title = 'blocked')</script>")
    frame = f'<iframe id="victim" src="{target}/" width="800" height="600"></iframe>'
    pages = {"/form": form, "/fetch": fetcher, "/frame": frame}

    async def serve(request: web.Request) -> web.Response:
        return web.Response(text=f"<!doctype html>{pages[request.path]}", content_type="text/html")

    app = web.Application()
    for path in pages:
        app.router.add_get(path, serve)
    return app


def shop_app() -> web.Application:
    """A business's landing page, where a creator's link lands with ``oros_cid``."""
    async def landing(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>Shop</title><h1>Spring range</h1>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", landing)
    return app


@pytest.fixture(scope="module")
def stack(web_settings, localstripe_url):
    settings, tracker_port = web_settings
    admin_port = free_port()
    target = f"http://127.0.0.1:{admin_port}"
    with Stack(settings, admin_port, tracker_port, {"attacker": attacker_app(target), "shop": shop_app()}) as running:
        # localstripe delivers signed webhooks for the payments the browser confirms.
        requests.post(f"{localstripe_url}/_config/webhooks/oros-webapp-{admin_port}",
                      data={"url": f"{running.admin_url}/v1/webhooks/stripe", "secret": WEBHOOK_SECRET},
                      timeout=10).raise_for_status()
        yield running
