"""``oros dev`` as a real process: its own secrets, the embedded Stripe, card funding end to end.

Each test starts ``oros dev`` on free ports with its own data directory and
chDB, against this test's Postgres database and Redis prefix, and stops it by
PID. localstripe is its child: it must be gone once ``oros dev`` is, whether
``oros dev`` stopped cleanly or was killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest
import requests

from oros import embedded
from oros.settings import STRIPE_API_KEY
from oros.stripe_gateway import stripe_client
from settler.reconcile import reconcile

from processes import stop_process
from stripe_events import FIVE_MILLION_CENTS, signed, succeeded_event

START_S = 120
PASSWORD = "correct horse battery"


@dataclass
class Dev:
    proc: subprocess.Popen
    data_dir: Path
    admin_url: str
    output: Path

    def services(self) -> dict:
        return orjson.loads((self.data_dir / embedded.SERVICES_FILE).read_bytes())

    def printed(self) -> str:
        return self.output.read_text()


def dev_env(settings, root: Path) -> dict[str, str]:
    """This test's servers and nothing from the caller's OROS_/STRIPE_ variables: no secret is given."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OROS_", "STRIPE_"))}
    return {
        **base,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "CLICKHOUSE_URL": f"chdb://{root / 'chdb'}",  # chDB is single-process: never the test's own
        "OROS_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "OROS_REDIS_PREFIX": settings.redis_prefix,
        "OROS_DATA_DIR": str(root / "data"),
    }


def wait_until(predicate, what: str, timeout_s: float = START_S, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        assert proc is None or proc.poll() is None, f"the process exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return result


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # Field 4 of /proc/<pid>/stat, after the parenthesised command name.
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running, and not a zombie nobody reaped yet."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def oros_dev(env: dict[str, str], root: Path, port, *args: str):
    tracker_port, admin_port = port(), port()
    output = root / "dev.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oros_cli", "--log-level", "WARNING", "dev", "--tracker-port", str(tracker_port),
             "--admin-port", str(admin_port), *args],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    dev = Dev(proc, Path(env["OROS_DATA_DIR"]), f"http://127.0.0.1:{admin_port}", output)
    try:
        wait_until(lambda: "Ctrl-C stops" in dev.printed(), "oros dev to be ready", proc=proc)
        yield dev
    finally:
        strays = children(proc.pid)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        for pid in strays:  # only if the test failed before checking they went
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def localstripe_pid(dev: Dev) -> int:
    pids = [pid for pid in children(dev.proc.pid)
            if b"oros.localstripe_child" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(pids) == 1, pids
    return pids[0]


def api(dev_or_url, method: str, path: str, token: str | None = None, expect: int = 200, **body) -> dict:
    url = dev_or_url.admin_url if isinstance(dev_or_url, Dev) else dev_or_url
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.request(method, f"{url}{path}", json=body or None, headers=headers, timeout=30)
    assert response.status_code == expect, (method, path, response.status_code, response.text)
    return response.json()


def business_with_campaign(dev: Dev) -> tuple[str, str]:
    token = api(dev, "POST", "/v1/auth/signup", expect=201, email="shop@example.com", password=PASSWORD,
                roles=["business"])["token"]
    campaign = api(dev, "POST", "/v1/campaigns", token, expect=201, title="Card funded", objective="click",
                   payout_per_action="0.50", total_budget="75.00", destination_url="https://shop.example.com")
    return token, campaign["id"]


def test_dev_funds_a_campaign_by_card_and_takes_localstripe_down_with_it(settings, tmp_path, port, spawn):
    env = {**dev_env(settings, tmp_path), "OROS_SETTLE_INTERVAL_S": "1"}
    with oros_dev(env, tmp_path, port) as dev:
        # One process, one scrape: ingest's and the settler's metrics on the admin API's /metrics.
        settled = re.compile(r'^oros_settler_runs_total\{job="settle",outcome="succeeded"\} [1-9]', re.M)
        wait_until(lambda: settled.search(page := requests.get(f"{dev.admin_url}/metrics", timeout=5).text)
                   and "oros_ingest_events_total" in page, "a settle run counted on the admin API's /metrics", 60)
        stripe_pid = localstripe_pid(dev)
        stripe_base = dev.services()["stripe_api_base"]
        secrets_file = dev.data_dir / embedded.SECRETS_FILE
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        dev_secrets = orjson.loads(secrets_file.read_bytes())
        token, campaign = business_with_campaign(dev)

        # The business pays by card: the intent from the API, confirmed at localstripe as Stripe.js would.
        funding = api(dev, "POST", f"/v1/campaigns/{campaign}/fund", token, expect=201, amount="75.00")
        client = stripe_client(replace(settings, stripe_api_base=stripe_base,
                                       stripe_api_key=dev_secrets[STRIPE_API_KEY]))
        method = client.v1.payment_methods.create({"type": "card", "card": {
            "number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
        client.v1.payment_intents.update(funding["payment_intent_id"], {"payment_method": method.id})
        client.v1.payment_intents.confirm(funding["payment_intent_id"])

        wait_until(lambda: api(dev, "GET", f"/v1/campaigns/{campaign}", token)["remaining_budget"] == "75.00",
                   "localstripe's webhook to credit the campaign", 30)
        assert all(check.ok for check in reconcile(settings))

        # What the old built-in secret signs is worthless against a dev stack.
        forged = succeeded_event("evt_old_default", "pi_forged", FIVE_MILLION_CENTS, {"oros_campaign_id": campaign})
        resp = requests.post(f"{dev.admin_url}/v1/webhooks/stripe", data=forged,
                             headers=signed(forged, "whsec_oros_dev"), timeout=30)
        assert resp.status_code == 400
        assert api(dev, "GET", f"/v1/campaigns/{campaign}", token)["remaining_budget"] == "75.00"

        # A command attached to the running dev (no server URL, no secret given) shares its stack and secrets.
        attached_port = port()
        attached_env = {k: v for k, v in env.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        attached_env["CLICKHOUSE_URL"] = f"chdb://{tmp_path / 'attached-chdb'}"
        attached = spawn([sys.executable, "-m", "oros_cli", "admin", "--port", str(attached_port)],
                         env=attached_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        attached_url = f"http://127.0.0.1:{attached_port}"

        def answers() -> bool:
            with contextlib.suppress(requests.ConnectionError):
                return requests.get(f"{attached_url}/healthz", timeout=5).status_code == 200
            return False

        wait_until(answers, "the attached admin API", proc=attached)
        assert api(attached_url, "GET", f"/v1/campaigns/{campaign}", token)["remaining_budget"] == "75.00"
        stop_process(attached)

        # One dev stack per data directory.
        second = subprocess.run(
            [sys.executable, "-m", "oros_cli", "dev", "--tracker-port", str(port()),
             "--admin-port", str(port())], env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and f"pid {dev.proc.pid}" in second.stderr, second.stderr

        os.kill(dev.proc.pid, signal.SIGTERM)
        assert dev.proc.wait(timeout=60) == 0
        assert not alive(stripe_pid)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{stripe_base}/v1/balance", auth=("sk_test_x", ""), timeout=5)


def test_demo_is_funded_by_card_and_localstripe_dies_when_dev_is_killed(settings, pg, tmp_path, port):
    with oros_dev(dev_env(settings, tmp_path), tmp_path, port, "--demo") as dev:
        stripe_pid = localstripe_pid(dev)
        assert "funded by card through it" in dev.printed()
        funding = pg.execute("SELECT f.method, f.status, f.amount, c.remaining_budget, c.status AS campaign_status"
                             " FROM campaign_fundings f JOIN campaigns c ON c.id = f.campaign_id").fetchall()
        assert [dict(row) for row in funding] == [{"method": "stripe", "status": "succeeded",
                                                   "amount": 100, "remaining_budget": 100,
                                                   "campaign_status": "active"}]

        os.kill(dev.proc.pid, signal.SIGKILL)
        dev.proc.wait(timeout=60)
        wait_until(lambda: not alive(stripe_pid), "localstripe to follow its killed parent", 30)
        # The kernel dropped the dead dev's lock with it: the data directory is free again.
        assert not embedded.dev_running(dev.data_dir)


def test_demo_recipes_pay_a_membership_and_a_monthly_tip_through_localstripe(settings, tmp_path, port):
    """The subscriptions of oros dev's localstripe (oros/localstripe_billing.py) from the outside: the
    printed curl recipes fund the campaign and activate the demo creator's membership; a supporter's
    monthly tip is booked by localstripe's own webhook."""
    with oros_dev(dev_env(settings, tmp_path), tmp_path, port, "--demo") as dev:
        printed = dev.printed()
        tokens = dict(re.findall(r"^export (OROS_\w+_TOKEN)=(\S+)$", printed, re.M))
        recipe = printed.split("(localstripe takes any sk_ key):\n", 1)[1].split("Ctrl-C stops.", 1)[0]
        ran = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe], env={**os.environ, **tokens},
                             capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        [membership] = orjson.loads(ran.stdout[ran.stdout.rindex('{"items"'):])["items"]
        assert (membership["membership_type"], membership["status"]) == ("creator_plus", "active")
        campaign = re.search(r"^  campaign   (\S+)", printed, re.M).group(1)
        funded = api(dev, "GET", f"/v1/campaigns/{campaign}", tokens["OROS_BUSINESS_TOKEN"])
        assert funded["remaining_budget"] == "150.00"

        creator = api(dev, "GET", "/v1/me", tokens["OROS_CREATOR_TOKEN"])
        supporter = api(dev, "POST", "/v1/auth/signup", expect=201, email="fan@example.com", password=PASSWORD,
                        roles=["supporter"])["token"]
        tip = api(dev, "POST", "/v1/tips", supporter, expect=201, to_creator_id=creator["id"], amount="5.00",
                  frequency="monthly")
        assert tip["status"] == "pending"
        stripe_settings = replace(settings, stripe_api_base=dev.services()["stripe_api_base"],
                                  stripe_api_key="sk_test_any")
        client = stripe_client(stripe_settings)
        method = client.v1.payment_methods.create({"type": "card", "card": {
            "number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
        pi = tip["client_secret"].split("_secret_")[0]
        client.v1.payment_intents.update(pi, {"payment_method": method.id})
        client.v1.payment_intents.confirm(pi)

        [booked] = wait_until(lambda: api(dev, "GET", "/v1/tips?direction=sent", supporter)["items"],
                              "localstripe's invoice.payment_succeeded to book the monthly tip", 30)
        # creator_plus caps the creator's fee at 8%, but tips start at 5 (OROS_TIP_FEE_PCT): a cap never raises.
        assert (booked["amount"], booked["platform_fee"], booked["net_amount"], booked["frequency"]) == (
            "5.00", "0.25", "4.75", "monthly")
        assert all(check.ok for check in reconcile(settings))
