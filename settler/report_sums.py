"""Fold the report sums' deltas (Postgres ``event_hours``, sql/postgres/0140) into one row per key.

The triggers append a delta per key and statement, never update a row, so that settlements posting
campaigns at once never wait on each other there; left alone, the deltas would grow with every run.
Folding is one statement (what it deletes is what it sums), so it may run at any time beside them.
"""

from __future__ import annotations

from oros.connections import pg_connect
from oros.settings import Settings


def fold_report_sums(settings: Settings) -> int:
    """Fold every delta row; return how many rows fewer the table holds."""
    with pg_connect(settings, autocommit=True) as conn:
        return conn.execute("SELECT oros_fold_event_hours() AS removed").fetchone()["removed"]
