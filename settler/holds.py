"""Release held creator earnings: pending credits whose ``hold_until`` has passed become settled.

The rule lives in SQL (``oros_release_holds``); settling a pending credit
moves it from ``pending_balance`` to ``available_balance`` by the ledger's
balance trigger. The fee leg of the same transfer carries the same hold.
The due legs are locked in id order first, then their wallets at once: the
lock order every writer that takes held money back keeps (sql/postgres/0161).
Then what a user owes the platform (a receivable) is repaid from what was
just released (``oros_sweep_receivables``), in a transaction of its own: it
locks receivables first, as every receivable writer does
(sql/postgres/0075), which the release's own wallet locks would invert.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from oros.connections import pg_connect
from oros.settings import Settings

from . import state

log = logging.getLogger(__name__)


def release_due(settings: Settings, now: datetime | None = None) -> int:
    """Settle every pending credit due at ``now``; return how many ledger entries moved."""
    now = now or datetime.now(UTC)
    with pg_connect(settings) as conn, conn.transaction():
        count = conn.execute("SELECT oros_release_holds(%s) AS n", (now,)).fetchone()["n"]
        state.record_run(conn, "release_holds", ok=True, seen=count, report={"released": count})
    with pg_connect(settings) as conn, conn.transaction():
        swept = conn.execute("SELECT oros_sweep_receivables() AS amount").fetchone()["amount"]
    log.info("holds released", extra={"entries": count, "receivables_repaid": str(swept)})
    return count


def run_release_command(settings: Settings) -> int:
    """``oros release-holds --once``."""
    print(f"released {release_due(settings)} ledger entries")
    return 0
