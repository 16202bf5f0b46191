"""The chaos run's short form (``loadtests/chaos.py --duration 30``): the whole stack under faults, then the books;
and the run leaves nothing behind when it is stopped or killed.

The run itself starts and stops every process (its own Redis and ClickHouse included) and checks
everything; this test holds it to its exit status and its closing line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

CHAOS = Path(__file__).resolve().parent.parent / "loadtests" / "chaos.py"
# The run fails itself past --timeout; stopping its stack takes at most 2 x PROCESS_STOP_S (15 s) more.
SHORT = ["--duration", "30", "--fault-every", "2", "--rate", "200", "--seed", "12", "--timeout", "120"]
SHORT_WAIT_S = 120 + 2 * 15 + 30
LINE = re.compile(
    r"^chaos: ([\d,]+) clicks attempted, ([\d,]+) sent, ([\d,]+) acked \([\d.]+%\), ([\d,]+) shed \(503/429\), "
    r"([\d,]+) failed \(no answer\), ([\d,]+) refused, ([\d,]+) unsent \(driver at its limit\); "
    r"unacked within bounds \([^)]*\); ([\d,]+) in ClickHouse, ([\d,]+) lost; "
    r"billable paid exactly once \(([\d,]+)\); reconcile ok; (\d+) faults injected$", re.MULTILINE)


def _number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.slow
def test_chaos_run_loses_nothing_and_pays_once(base_settings, spawn):
    env = {**os.environ, "DATABASE_URL": base_settings.database_url}  # the server the suite uses
    proc = spawn([sys.executable, str(CHAOS), *SHORT], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                 text=True)
    out, _ = proc.communicate(timeout=SHORT_WAIT_S)
    assert proc.returncode == 0, out[-6000:]
    attempted, sent, acked, shed, failed, refused, unsent, in_clickhouse, lost, billable, faults = (
        _number(n) for n in LINE.search(out).groups())
    assert acked > 1000 and in_clickhouse == acked and lost == 0
    assert attempted == sent + unsent and sent == acked + shed + failed + refused
    # The unacknowledged clicks are bounded per fault by the run itself; overall, most are acked.
    assert shed <= sent // 100 and refused == 0 and acked >= 0.9 * attempted, out[-3000:]
    assert billable > 100
    assert faults >= 5, out[-3000:]


def _processes_of(work: str) -> list[int]:
    """Every live process started for the run in ``work`` (each carries its data directory)."""
    marker = f"OROS_DATA_DIR={work}/data".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _start(spawn, env: dict) -> tuple[subprocess.Popen, str, str, list[str]]:
    """A long chaos run, read up to the line saying its services started: it, its work dir, database, lines.
    Started by ``spawn``, so a failure here stops it too (it would otherwise run on for 600 s)."""
    proc = spawn([sys.executable, str(CHAOS), "--duration", "600"], env=env, stdout=subprocess.PIPE,
                 stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if re.match(r"chaos: \d+ services started", line) or "FAILED" in line:
            break
    work, database = re.search(r"work dir (\S+), database (\S+)", lines[0]).groups()
    assert "services started" in lines[-1], "".join(lines)
    return proc, work, database, lines


def _database_exists(base_settings, name: str) -> bool:
    with psycopg.connect(base_settings.database_url) as conn:
        return conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()[0] == 1


def _gone(work: str, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := _processes_of(work)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_stopped_or_killed_run_leaves_nothing_behind(base_settings, spawn):
    """SIGKILLed: its processes die with it, and the next run removes its database and work dir.
    SIGTERMed (what the spawn fixture does to the test above when it times out): everything stops and goes."""
    env = {**os.environ, "DATABASE_URL": base_settings.database_url}
    killed, killed_work, killed_db, _ = _start(spawn, env)
    killed.kill()
    killed.wait(timeout=30)
    assert _gone(killed_work, 30) == []  # the kernel's parent-death signal, then the tracker workers' own
    assert Path(killed_work).exists() and _database_exists(base_settings, killed_db)  # nobody was left to clean
    stopped, work, database, lines = _start(spawn, env)
    swept = "".join(line for line in lines if "left by a run that was killed" in line)
    assert f"removed {killed_work}," in swept and f"removed {killed_db}," in swept, swept
    assert not Path(killed_work).exists() and not _database_exists(base_settings, killed_db)
    assert _processes_of(work) and _database_exists(base_settings, database)
    stopped.send_signal(signal.SIGTERM)
    out = stopped.communicate(timeout=60)[0]
    assert stopped.returncode == 128 + signal.SIGTERM, out
    assert "interrupted" in out and _processes_of(work) == [] and not Path(work).exists()
    assert not _database_exists(base_settings, database)
