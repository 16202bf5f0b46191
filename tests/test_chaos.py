"""The chaos run's short form (``loadtests/chaos.py --duration 45``): the whole stack under faults, then the books.

The run itself starts and stops every process (its own Redis and ClickHouse included) and checks
everything; this test holds it to its exit status and its closing line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CHAOS = Path(__file__).resolve().parent.parent / "loadtests" / "chaos.py"
LINE = re.compile(r"^chaos: ([\d,]+) acked clicks, ([\d,]+) in ClickHouse, ([\d,]+) lost; "
                  r"billable paid exactly once \(([\d,]+)\); reconcile ok; (\d+) faults injected$", re.MULTILINE)


def _number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.slow
def test_chaos_run_loses_nothing_and_pays_once(base_settings, spawn):
    env = {**os.environ, "DATABASE_URL": base_settings.database_url}  # the server the suite uses
    proc = spawn([sys.executable, str(CHAOS), "--duration", "45", "--seed", "12"], env=env,
                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=280)
    assert proc.returncode == 0, out[-6000:]
    acked, in_clickhouse, lost, billable, faults = (_number(n) for n in LINE.search(out).groups())
    assert acked > 1000 and in_clickhouse == acked and lost == 0
    assert billable > 100
    assert faults >= 5, out[-3000:]
