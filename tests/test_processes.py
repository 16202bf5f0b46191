"""The session's guard against processes the tests leave running (tests/processes.py, tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Run in a process of its own: the guard kills every descendant of the process it runs in, and this one's
# are the session's services.
LEAVES_TWO = f"""
import json, subprocess, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from processes import adopt_orphans, left_running
adopt_orphans()
subprocess.Popen(["sleep", "1001"], stdout=subprocess.DEVNULL)  # a child nobody stops
subprocess.run(["sh", "-c", "sleep 1002 >/dev/null & exit 0"], check=True)  # an orphan: its parent is gone
first = left_running(grace_s=0.5)
print(json.dumps([sorted(first.values()), left_running(grace_s=0)]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_left_child_and_an_orphan_are_found_killed_and_reaped(spawn):
    proc = spawn([sys.executable, "-c", LEAVES_TWO], stdout=subprocess.PIPE, text=True)
    first, second = json.loads(proc.communicate(timeout=60)[0])
    assert proc.returncode == 0
    assert first == ["sleep 1001", "sleep 1002"]
    assert second == {}  # killed, and reaped: no zombie counts either
