"""A realistic mix against a running tracker: clicks on many links, then conversions and pixels.

Needs links that exist and an API key of the business that owns them:

    OROS_BENCH_CODES=code1,code2,...  OROS_BENCH_API_KEY=oros_live_...  \\
    .venv/bin/locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 \\
        --headless -u 200 -r 50 -t 60s

(``oros dev --demo`` prints a code and an API key; the admin API creates more.)
Mix per simulated visitor: 20 clicks (a few from link-preview bots, a few
HEADs), 1 in 10 clicks converts through the API, 1 in 20 through the pixel,
and 1 in 50 posts a repeated order id (answered ``duplicate: true``). Every
response is checked against the contract, so a run doubles as a soak test.
"""

from __future__ import annotations

import os
import random
import uuid
from urllib.parse import parse_qsl, urlsplit

from locust import HttpUser, between, task

CODES = [code for code in os.environ.get("OROS_BENCH_CODES", "").split(",") if code]
API_KEY = os.environ.get("OROS_BENCH_API_KEY", "")
BROWSERS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36",
]
BOTS = ["facebookexternalhit/1.1", "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "Twitterbot/1.0"]


class Visitor(HttpUser):
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        if not CODES:
            raise RuntimeError("set OROS_BENCH_CODES to a comma-separated list of link codes")
        self.user_agent = random.choice(BROWSERS)
        self.click_ids: list[str] = []
        self.orders: list[str] = []

    @task(20)
    def click(self) -> None:
        code = random.choice(CODES)
        bot = random.random() < 0.05
        headers = {"User-Agent": random.choice(BOTS) if bot else self.user_agent}
        method = "HEAD" if random.random() < 0.02 else "GET"
        query = "?utm_source=locust&utm_medium=social" if random.random() < 0.5 else ""
        with self.client.request(
            method, f"/{code}{query}", headers=headers, allow_redirects=False, name="/{code}", catch_response=True
        ) as response:
            if response.status_code != 302:
                response.failure(f"expected 302, got {response.status_code}")
                return
            click_id = dict(parse_qsl(urlsplit(response.headers["Location"]).query)).get("oros_cid")
            if not click_id:
                response.failure("no oros_cid in Location")
            elif not bot and method == "GET":
                self.click_ids = (self.click_ids + [click_id])[-20:]

    @task(2)
    def convert_by_api(self) -> None:
        if not self.click_ids or not API_KEY:
            return
        order_id = f"locust-{uuid.uuid4().hex[:12]}"
        self.orders.append(order_id)
        body = {"click_id": random.choice(self.click_ids), "type": "sale", "value": "19.90", "currency": "EUR",
                "order_id": order_id}
        with self.client.post(
            "/v1/conversions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, catch_response=True
        ) as response:
            if response.status_code != 202:
                response.failure(f"expected 202, got {response.status_code}: {response.text[:200]}")

    @task(1)
    def convert_by_pixel(self) -> None:
        if not self.click_ids:
            return
        cid = random.choice(self.click_ids)
        with self.client.get(
            f"/px.gif?cid={cid}&type=conversion&order_id=px-{uuid.uuid4().hex[:12]}",
            name="/px.gif",
            catch_response=True,
        ) as response:
            if response.status_code != 200 or response.headers.get("Content-Type") != "image/gif":
                response.failure(f"expected a GIF, got {response.status_code}")

    @task(1)
    def repeat_an_order(self) -> None:
        if not self.orders or not self.click_ids or not API_KEY:
            return
        body = {"click_id": self.click_ids[0], "type": "sale", "value": "19.90", "order_id": self.orders[0]}
        with self.client.post(
            "/v1/conversions",
            json=body,
            headers={"Authorization": f"Bearer {API_KEY}"},
            name="/v1/conversions (repeat)",
            catch_response=True,
        ) as response:
            # The first post of that order may have gone to another campaign's click: 202 or 200 are both fine.
            if response.status_code not in (200, 202):
                response.failure(f"expected 200 duplicate, got {response.status_code}")
