"""``oros ingest`` SIGKILLed in the middle of a split: nothing lost, nothing read twice.

chDB opens a data directory from one process only, so the ingest process
and the one that finishes after it each own the directory in turn, and the
test reads ClickHouse through the second. The kill lands at a known point:
ClickHouse fails the insert of one part (a materialized view throws for the
trap event), so the first ingester sits in its retry, half way through
isolating the batch's bad entries, with parts inserted, parts dead-lettered
and the rest pending, while ``/healthz`` says degraded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ingest_stream import TRAP_UA, append, dead_letters, events, pending, refused_by_clickhouse_only
from processes import free_port

HERE = Path(__file__).resolve()


def _worker(command: str) -> int:
    import asyncio

    from ingest.consumer import Ingester
    from oros.connections import clickhouse_client
    from oros.migrate import migrate_clickhouse
    from oros.settings import Settings

    from ingest_stream import clear_trap, set_trap

    settings = Settings.from_env()
    migrate_clickhouse(settings)
    ch = clickhouse_client(settings)
    if command == "setup":
        set_trap(ch)
        return 0
    clear_trap(ch)

    async def drain() -> int:
        survivor = Ingester(settings, "survivor", claim_idle_ms=0)
        try:
            return await survivor.drain_once()
        finally:
            await survivor.close()

    asyncio.run(drain())
    ids = [r[0] for r in ch.query("SELECT toString(event_id) FROM events LIMIT 1 BY event_id").result_rows]
    print(json.dumps({"read_once": ids, "rows": ch.query("SELECT count() FROM events").result_rows[0][0]}))
    return 0


@pytest.mark.slow
async def test_sigkill_during_a_split_loses_and_doubles_nothing(settings, redis, tmp_path, spawn):
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}", "OROS_CLICKHOUSE_DATABASE": "killtest",
           "OROS_REDIS_PREFIX": settings.redis_prefix, "OROS_DATA_DIR": str(tmp_path),
           "PYTHONPATH": f"{HERE.parent.parent}:{HERE.parent}"}

    def run(*args: str) -> subprocess.Popen:  # stopped and reaped after the test, whatever happens in it
        return spawn([sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    setup = run(str(HERE), "setup")
    err = setup.communicate(timeout=120)[1]  # not wait(): a full stderr pipe would block it
    assert setup.returncode == 0, err.decode()[-2000:]
    evs = events(2_000)
    bad = set(range(3, 2_000, 50))
    entries = [refused_by_clickhouse_only(e) if i in bad else e for i, e in enumerate(evs)]
    trap = events(1, user_agent=TRAP_UA)[0]
    entries.insert(1_500, trap)
    await append(redis, settings, entries)

    port = free_port()
    ingest = run("-m", "oros_cli", "ingest", "--metrics-port", str(port))
    deadline = time.monotonic() + 120
    while _health(port).get("status") != "degraded":
        assert ingest.poll() is None and time.monotonic() < deadline, ingest.stderr.read().decode()[-2000:]
        time.sleep(0.1)
    part_way = len(await dead_letters(redis, settings))
    assert 0 < part_way < len(bad) and await pending(redis, settings) > 0
    os.kill(ingest.pid, signal.SIGKILL)
    ingest.wait(timeout=30)

    finish = run(str(HERE), "finish")
    out, err = finish.communicate(timeout=300)
    assert finish.returncode == 0, err.decode()[-2000:]
    result = json.loads(out.decode().splitlines()[-1])
    good = [e.event_id for i, e in enumerate(evs) if i not in bad] + [trap.event_id]
    assert sorted(result["read_once"]) == sorted(good)
    dead = await redis.xrange(settings.keys.dead_letter)
    assert len(dead) == len(bad) == len({fields[b"id"] for _, fields in dead})
    assert await pending(redis, settings) == 0 and await redis.xlen(settings.keys.stream) == 0


def _health(port: int) -> dict:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
    except requests.ConnectionError:
        return {}


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
