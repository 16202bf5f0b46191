"""The settler's bookkeeping in Postgres: forward-only marks (``settler_state``) and run records (``settlement_runs``).

A mark is where a job got to (the settle watermark, the last published
disabled link), so a restart resumes rather than rescans; it only moves
forward, so a slow run finishing after a faster one cannot move it back. A
run record is what finance's page lists (``GET /v1/admin/settlements``): a
settle run is opened before it reads and finished with its report; the
one-shot jobs (hold release, reconcile) record theirs once done.
"""

from __future__ import annotations

from datetime import datetime

import orjson
import psycopg
from psycopg.types.json import Jsonb

READ_MARK = "SELECT watermark FROM settler_state WHERE name = %s"
ADVANCE_MARK = """
INSERT INTO settler_state (name, watermark) VALUES (%(name)s, %(mark)s) ON CONFLICT (name)
DO UPDATE SET watermark = greatest(settler_state.watermark, EXCLUDED.watermark), updated_at = now()
"""

# Holding the kind's lock, any run of it still marked running died mid-way.
FAIL_INTERRUPTED = """
UPDATE settlement_runs SET status = 'failed', error = 'interrupted', finished_at = now()
 WHERE kind = %s AND status = 'running'
"""
OPEN_RUN = "INSERT INTO settlement_runs (id, kind, dry_run, watermark_from) VALUES (%s, %s, %s, %s)"
FAIL_RUN = "UPDATE settlement_runs SET status = 'failed', error = %s, finished_at = now() WHERE id = %s"
FINISH_RUN = """
UPDATE settlement_runs SET status = 'succeeded', watermark_to = %(watermark_to)s, events_seen = %(seen)s,
       events_paid = %(paid)s, events_rejected = %(rejected)s, amount_paid = %(amount)s, fees = %(fees)s,
       rejected_by_reason = %(by_reason)s, report = %(report)s, finished_at = now()
 WHERE id = %(id)s
"""
RECORD_RUN = """
INSERT INTO settlement_runs (kind, status, started_at, events_seen, finished_at, report, error)
VALUES (%(kind)s, %(status)s, coalesce(%(started_at)s, now()), %(seen)s, now(), %(report)s, %(error)s)
"""


def read_mark(conn: psycopg.Connection, name: str) -> datetime | None:
    """Where the job ``name`` got to; None before its first mark."""
    row = conn.execute(READ_MARK, (name,)).fetchone()
    return row["watermark"] if row else None


def advance_mark(conn: psycopg.Connection, name: str, mark: datetime) -> None:
    """Move the job's mark to ``mark``, never back."""
    conn.execute(ADVANCE_MARK, {"name": name, "mark": mark})


def fail_interrupted(conn: psycopg.Connection, kind: str) -> None:
    """Mark the runs of ``kind`` still running as failed: call it holding the kind's lock."""
    conn.execute(FAIL_INTERRUPTED, (kind,))


def open_run(conn: psycopg.Connection, run_id: str, kind: str, *, dry_run: bool,
             watermark_from: datetime | None) -> None:
    """A run starts: recorded 'running' until ``finish_run`` or ``fail_run``."""
    conn.execute(OPEN_RUN, (run_id, kind, dry_run, watermark_from))


def fail_run(conn: psycopg.Connection, run_id: str, error: str) -> None:
    conn.execute(FAIL_RUN, (error[:2000], run_id))


def finish_run(conn: psycopg.Connection, run_id: str, *, watermark_to: datetime | None, seen: int, paid: int,
               rejected: int, amount, fees, by_reason: dict, report: dict) -> None:
    """A settle run succeeded: its counts as columns (finance's list) and its whole report."""
    conn.execute(FINISH_RUN, {
        "id": run_id, "watermark_to": watermark_to, "seen": seen, "paid": paid, "rejected": rejected,
        "amount": amount, "fees": fees, "by_reason": Jsonb(by_reason), "report": _json(report),
    })


def record_run(conn: psycopg.Connection, kind: str, *, ok: bool, report: dict, seen: int = 0,
               started_at: datetime | None = None, error: str | None = None) -> None:
    """A one-shot job's run, recorded once it is done (started ``started_at``, now by default)."""
    conn.execute(RECORD_RUN, {"kind": kind, "status": "succeeded" if ok else "failed", "started_at": started_at,
                              "seen": seen, "report": _json(report), "error": error})


def _json(report: dict) -> Jsonb:
    # Through orjson: a report holds what psycopg's json cannot dump (UUIDs, datetimes).
    return Jsonb(orjson.loads(orjson.dumps(report)))
