"""The settler's bookkeeping has one owner (settler/state.py): the watermark upsert was written twice (the settle
run's and the disabled links' publish), the mark read twice, the run record inserted in three modules."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from settler import state
from settler.holds import release_due
from settler.post import DISABLED_STATE
from settler.reconcile import reconcile_and_record
from settler.run import settle_once

T = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_mark_only_moves_forward(pg):
    assert state.read_mark(pg, "test") is None
    state.advance_mark(pg, "test", T)
    state.advance_mark(pg, "test", T - timedelta(hours=1))  # a slower run finishing late
    assert state.read_mark(pg, "test") == T
    state.advance_mark(pg, "test", T + timedelta(seconds=1))
    assert state.read_mark(pg, "test") == T + timedelta(seconds=1)


def test_a_run_is_opened_then_finished_or_failed(pg):
    ok, bad = str(uuid.uuid4()), str(uuid.uuid4())
    for run_id in (ok, bad):
        state.open_run(pg, run_id, "settle", dry_run=True, watermark_from=T)
    state.finish_run(pg, ok, watermark_to=T, seen=3, paid=2, rejected=1, amount=Decimal("2.00"), fees=Decimal("0.20"),
                     by_reason={"bot": 1}, report={"run_id": ok, "id": uuid.UUID(ok)})
    state.fail_run(pg, bad, "x" * 3000)
    rows = {r["id"]: r for r in pg.execute("SELECT id::text AS id, status, dry_run, events_paid, amount_paid,"
                                           " rejected_by_reason, report, length(error) AS error FROM settlement_runs")}
    assert (rows[ok]["status"], rows[ok]["dry_run"], rows[ok]["events_paid"], rows[ok]["amount_paid"]) == (
        "succeeded", True, 2, Decimal("2.00"))
    assert rows[ok]["rejected_by_reason"] == {"bot": 1} and rows[ok]["report"] == {"run_id": ok, "id": ok}
    assert (rows[bad]["status"], rows[bad]["error"]) == ("failed", 2000)
    state.open_run(pg, str(uuid.uuid4()), "settle", dry_run=False, watermark_from=None)
    state.fail_interrupted(pg, "settle")
    assert pg.execute("SELECT count(*) AS n FROM settlement_runs WHERE status = 'running'").fetchone()["n"] == 0


def test_every_job_records_its_runs_and_marks_through_it(world):
    settle_once(world.settings)
    release_due(world.settings)
    reconcile_and_record(world.settings)
    kinds = world.pg.execute("SELECT kind, status FROM settlement_runs ORDER BY started_at").fetchall()
    assert [(r["kind"], r["status"]) for r in kinds] == [
        ("settle", "succeeded"), ("release_holds", "succeeded"), ("reconcile", "succeeded")]
    assert state.read_mark(world.pg, DISABLED_STATE) is None  # nothing disabled: nothing published
