"""`oros migrate` gives exactly the checked-in schema (tests/schema/*.txt): a schema change is reviewed, not implied."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "schema"))
from snapshot import (
    CLICKHOUSE_SNAPSHOT,
    FUNCTIONS_SNAPSHOT,
    POSTGRES_SNAPSHOT,
    clickhouse_lines,
    function_lines,
    postgres_lines,
)

UPDATE = "run `.venv/bin/python tests/schema/snapshot.py --update` and commit the snapshot with the migration"


def _same(snapshot: Path, lines: list[str]) -> None:
    expected = snapshot.read_text().splitlines()
    diff = list(difflib.unified_diff(expected, lines, str(snapshot.name), "migrated", lineterm="", n=0))
    assert not diff, "\n".join(diff[:80] + [UPDATE])


def test_postgres_schema_is_the_snapshot(pg):
    _same(POSTGRES_SNAPSHOT, postgres_lines(pg))


def test_every_function_body_is_the_snapshot(pg):
    """A reader finds each function's current body in one file (functions.txt), whichever migration wrote it."""
    _same(FUNCTIONS_SNAPSHOT, function_lines(pg))


def test_clickhouse_schema_is_the_snapshot(ch, settings):
    _same(CLICKHOUSE_SNAPSHOT, clickhouse_lines(ch, settings.clickhouse_database))
