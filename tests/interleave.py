"""Steps that interleave two writers deterministically: each on its own connection, in a thread, held at a known
lock by a third connection (the gate), and the ledger's rows laid out in the order that makes a scan meet them
worst. Postgres' own lock waits are the synchronisation: a step waits until so many backends wait on a lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from psycopg import sql


class Writer(threading.Thread):
    """``fn(*args)`` in a thread: what it returned, or the error that escaped it (to its caller)."""

    def __init__(self, fn: Callable, *args) -> None:
        super().__init__(daemon=True)
        self.fn, self.args = fn, args
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except Exception as exc:  # noqa: BLE001 -- the test asserts that nothing escaped
            self.error = exc

    def finish(self, timeout_s: float = 10) -> object:
        self.join(timeout_s)
        assert not self.is_alive(), f"{self.fn.__name__} still waits after {timeout_s} s"
        assert self.error is None, repr(self.error)
        return self.result


def waiting(pg) -> int:
    """How many backends of this database wait on a lock now."""
    return pg.execute("SELECT count(*) AS n FROM pg_stat_activity"
                      " WHERE datname = current_database() AND wait_event_type = 'Lock'").fetchone()["n"]


def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the writers never reached the step"
        time.sleep(0.02)


def quick_deadlocks(pg) -> None:
    """New connections to this database look for a deadlock after 100 ms (1 s by default): a test that hits one
    fails fast."""
    name = pg.execute("SELECT current_database() AS name").fetchone()["name"]
    pg.execute(sql.SQL("ALTER DATABASE {} SET deadlock_timeout = '100ms'").format(sql.Identifier(name)))


def main_wallet_first(pg, user_id: str) -> None:
    """Give the user's main wallet the lowest id of all: writers that lock wallets in id order meet it first.
    (Wallet ids are random, so which order a deployment meets is chance; this makes it the one under test.)"""
    pg.execute("UPDATE wallets SET id = '00000000-0000-4000-8000-000000000000' WHERE user_id = %s"
               " AND purpose = 'main'", (user_id,))


def lay_out(pg, ledger_ids: list[str]) -> None:
    """Rewrite ledger_entries with these rows first, in this order: the order a sequential scan meets them.

    Which order the heap holds rows in is an accident (insert order, updates, what VACUUM freed), so a writer
    that locks rows in the order it reads them may meet them in any; this makes it the worst one on purpose.
    """
    order = sql.SQL("array_position({}::uuid[], id)").format(sql.Literal(ledger_ids))
    pg.execute(sql.SQL("CREATE INDEX interleave_order ON ledger_entries (({}))").format(order))
    pg.execute("CLUSTER ledger_entries USING interleave_order")
    pg.execute("DROP INDEX interleave_order")
