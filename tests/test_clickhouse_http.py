"""ClickHouse over HTTP, production's client path, against the chDB engine in its own process.

``loadtests/chdb_server.py`` serves the engine over ClickHouse's HTTP interface (the chaos run's
ClickHouse, see its docstring); these tests use it wherever a real server is needed.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from oros.connections import clickhouse_client
from oros.migrate import migrate_clickhouse

CHDB_SERVER = Path(__file__).resolve().parent.parent / "loadtests" / "chdb_server.py"


@pytest.fixture
def http_settings(settings, tmp_path, spawn, port):
    """``settings`` with ``CLICKHOUSE_URL`` naming a ClickHouse HTTP server of this test's own."""
    chosen = port()
    spawn([sys.executable, str(CHDB_SERVER), "--path", str(tmp_path / "chdb"), "--port", str(chosen)])
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{chosen}/ping", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    http = replace(settings, clickhouse_url=f"http://127.0.0.1:{chosen}/")
    migrate_clickhouse(http)
    return http


def test_threads_query_through_the_shared_client_at_once(http_settings):
    """The settler's settle and reconcile jobs, and the admin API's report threads, share one client per process."""
    def query(n: int) -> int:
        # Each query takes a while, so the threads' requests are in flight together: a client
        # keeping one session refuses a second query while the first is running.
        query = clickhouse_client(http_settings).query("SELECT sleep(0.05), {n:UInt32}", parameters={"n": n})
        return query.result_rows[0][1]

    with ThreadPoolExecutor(4) as threads:
        assert list(threads.map(query, range(24))) == list(range(24))
