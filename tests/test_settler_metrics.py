"""The settler serves Prometheus /metrics and /healthz: in process, and as ``oros settler --metrics-port``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from oros import probes
from oros.settings import STRIPE_API_KEY
from settler.metrics import SettlerMetrics, timed
from settler.reconcile import Check

from processes import free_port

ROOT = Path(__file__).resolve().parent.parent
# test_completeness.py is also a script: ``load FILE`` writes events into ClickHouse from a process of its own.
LOADER = Path(__file__).resolve().with_name("test_completeness.py")


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


REPORT = {"events_paid": 3, "rejected_by_reason": {"bot": 2, "duplicate_click": 1}, "amount_paid": "1.50",
          "completeness": {"late_events": 1, "undecided_next_run": 4}}


async def test_runs_events_money_and_reconcile_are_exported(aiohttp_client):
    metrics = SettlerMetrics()
    timed(metrics, "settle", lambda: REPORT)
    timed(metrics, "reconcile",
          lambda: [Check("transfers_balance", False, "x"), Check("no_negative_balances", True, "")])
    client = await aiohttp_client(probes.create_app(metrics.registry, metrics.health))

    got = samples(await (await client.get("/metrics")).text())

    assert got[("oros_settler_runs_total", (("job", "settle"), ("outcome", "succeeded")))] == 1
    assert got[("oros_settler_runs_total", (("job", "settle"), ("outcome", "failed")))] == 0
    assert got[("oros_settler_events_total", (("outcome", "paid"), ("reason", "")))] == 3
    assert got[("oros_settler_events_total", (("outcome", "rejected"), ("reason", "bot")))] == 2
    assert got[("oros_settler_amount_paid_total", ())] == 1.5
    assert got[("oros_settler_late_events_total", ())] == 1
    assert got[("oros_settler_undecided_events", ())] == 4
    assert got[("oros_settler_reconcile_failures_total", ())] == 1
    assert got[("oros_settler_reconcile_failing_checks", ())] == 1
    assert got[("oros_settler_run_seconds_count", (("job", "settle"),))] == 1
    assert got[("oros_settler_last_success_timestamp_seconds", (("job", "settle"),))] > 0
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["reconcile_failing"] == ["transfers_balance"]


async def test_healthz_is_503_while_a_jobs_last_run_failed(aiohttp_client):
    metrics = SettlerMetrics()
    client = await aiohttp_client(probes.create_app(metrics.registry, metrics.health))
    assert (await client.get("/healthz")).status == 200

    def down():
        raise ConnectionError("ClickHouse is down")

    try:
        timed(metrics, "settle", down)
    except ConnectionError:
        pass
    health = await client.get("/healthz")
    body = await health.json()
    assert health.status == 503 and body["jobs"]["settle"]["error"] == "ConnectionError: ClickHouse is down"
    got = samples(await (await client.get("/metrics")).text())
    assert got[("oros_settler_runs_total", (("job", "settle"), ("outcome", "failed")))] == 1
    timed(metrics, "settle", lambda: REPORT)
    assert (await client.get("/healthz")).status == 200


def test_oros_settler_serves_metrics_while_it_settles(world, tmp_path, spawn):
    campaign = world.campaign(payout="0.50", fund="10.00")
    creator = world.creator(campaign)
    click = world.click(campaign, creator)
    env = {**os.environ, "DATABASE_URL": world.settings.database_url, "REDIS_URL": world.settings.redis_url,
           "CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}", "OROS_REDIS_PREFIX": world.settings.redis_prefix,
           "OROS_CLICKHOUSE_DATABASE": "metrics", "OROS_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT),
           "OROS_SETTLE_INTERVAL_S": "1", "OROS_RECONCILE_INTERVAL_S": "1",
           STRIPE_API_KEY: world.settings.stripe_api_key}
    line = {"event": json.loads(click.encode()), "ingested_at": "2026-01-01T00:00:00+00:00"}
    (tmp_path / "events.jsonl").write_text(json.dumps(line))
    loaded = subprocess.run([sys.executable, str(LOADER), "load", str(tmp_path / "events.jsonl")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    port = free_port()
    # spawn: stopped (SIGKILL if SIGTERM is not enough) and reaped whatever happens below
    proc = spawn([sys.executable, "-m", "oros_cli", "settler", "--metrics-port", str(port)], env=env,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    got = _wait_for_metrics(proc, port, lambda s: s.get(
        ("oros_settler_runs_total", (("job", "reconcile"), ("outcome", "succeeded"))), 0) >= 1
        and s.get(("oros_settler_events_total", (("outcome", "paid"), ("reason", "")))) == 1)
    assert got[("oros_settler_amount_paid_total", ())] == 0.5
    assert got[("oros_settler_reconcile_failing_checks", ())] == 0
    health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["ok"] is True
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert world.decision(click)["status"] == "paid"


def _wait_for_metrics(proc: subprocess.Popen, port: int, ready, deadline_s: float = 120) -> dict:
    """Scrape until ``ready(samples)``; a bound on the wait, not a measurement."""
    deadline = time.monotonic() + deadline_s
    got: dict = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            got = samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
        except requests.ConnectionError:
            got = {}
        if got and ready(got):
            return got
        time.sleep(0.2)
    raise AssertionError(f"settler metrics never got ready: {got}")
