"""A settler SIGKILLed at random points, ten times, then run to the end: every billable event paid once.

The settler runs as a subprocess with its own chDB directory (chDB opens a
directory from one process only); this file is also that subprocess's
entry point: ``python tests/test_settle_kill.py load|settle|reconcile``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from factories import now_ms

HERE = Path(__file__).resolve()


def _worker(command: str, path: str | None) -> int:
    from ingest.writer import insert_events
    from oros.events import Event
    from oros.migrate import migrate_clickhouse
    from oros.settings import Settings
    from settler.reconcile import run_reconcile_command
    from settler.run import settle_once

    settings = Settings.from_env()
    if command == "load":
        migrate_clickhouse(settings)
        insert_events(settings, map(Event.decode, Path(path).read_bytes().splitlines()))
        return 0
    if command == "settle":
        print(settle_once(settings)["events_paid"])
        return 0
    return run_reconcile_command(settings)


@pytest.mark.slow
def test_killed_settler_pays_every_billable_event_once(world, tmp_path, spawn):
    rng = random.Random(4)
    env = {**os.environ, "DATABASE_URL": world.settings.database_url, "REDIS_URL": world.settings.redis_url,
           "CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}", "OROS_REDIS_PREFIX": world.settings.redis_prefix,
           "OROS_CLICKHOUSE_DATABASE": "killtest", "PYTHONPATH": str(HERE.parent.parent)}

    def start(command: str, *args: str) -> subprocess.Popen:
        return spawn([sys.executable, str(HERE), command, *args], env=env,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    expected: dict[str, int] = {}
    total = 0
    for round_no in range(10):
        # Each round brings new work, so every kill can land inside a run that is paying.
        events = []
        for n in range(8):
            budget = rng.choice(["500.00", "150.00", "90.00"])
            campaign = world.campaign(fund=budget, payout="0.50")
            creators = [world.creator(campaign) for _ in range(3)]
            events += [world.click(campaign, creators[i % 3], ts_ms=now_ms() - 60_000 + i,
                                   ip=f"10.{round_no}.{n}.{i}") for i in range(250)]
            expected[campaign] = min(250, int(Decimal(budget) / Decimal("0.50")))
        total += len(events)
        (tmp_path / "events.jsonl").write_bytes(b"\n".join(e.encode() for e in events))
        loader = start("load", str(tmp_path / "events.jsonl"))
        assert loader.wait(timeout=180) == 0, loader.stderr.read()
        proc = start("settle")
        time.sleep(rng.uniform(0.5, 3.0))
        proc.kill()  # SIGKILL, wherever it is
        proc.wait(timeout=60)
    final = start("settle")
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err

    paid = {r["campaign_id"]: r["n"] for r in world.pg.execute(
        "SELECT campaign_id::text AS campaign_id, count(*) AS n FROM events WHERE status = 'paid' GROUP BY 1")}
    assert paid == expected
    assert world.pg.execute("SELECT count(*) AS n FROM events").fetchone()["n"] == total
    for campaign, n in expected.items():
        row = world.campaign_row(campaign)
        assert row["funded_budget"] - row["remaining_budget"] == Decimal("0.50") * n
    reconciler = start("reconcile")
    out, err = reconciler.communicate(timeout=300)
    assert reconciler.returncode == 0, out.decode() + err.decode()
    # Killed runs were marked failed by the next run that took the lock.
    assert world.pg.execute("SELECT count(*) AS n FROM settlement_runs WHERE status = 'running'").fetchone()["n"] == 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
