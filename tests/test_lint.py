"""Lint is part of the test run (CI runs the README's test command): ruff on the Python tree, sqlfluff on sql/.

Their rules live beside the code they check: ``[tool.ruff]`` in pyproject.toml; ``.sqlfluff`` (Postgres, with
the reason for each rule left out), ``sql/clickhouse/.sqlfluff`` (ClickHouse) and ``.sqlfluffignore``.
Each check is also shown to fail on a bad file, so a linter that silently checks nothing cannot pass.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQLFLUFF_CONFIGS = (".sqlfluff", "sql/clickhouse/.sqlfluff")
# sqlfluff parses each file in Python (about 20 s of CPU for sql/): one worker per core of a 2-core box.
SQLFLUFF_PROCESSES = "2"


def ruff(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)


def sqlfluff(root: Path) -> dict[str, list[str]]:
    """``sqlfluff lint sql`` run from ``root`` (sqlfluff reads its configs from there down to each file):
    each linted file with its findings as ``CODE line:pos description``."""
    result = subprocess.run(
        [sys.executable, "-m", "sqlfluff", "lint", "sql", "--format", "json", "--processes", SQLFLUFF_PROCESSES],
        cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 1: findings; anything else: it broke
    return {file["filepath"]: [f"{v['code']} {v['start_line_no']}:{v['start_line_pos']} {v['description']}"
                               for v in file["violations"]] for file in json.loads(result.stdout)}


def test_ruff_finds_nothing():
    result = ruff(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_reports_a_bad_file(tmp_path):
    # An unused import, a zip that could drop items, a long line, a function named like a class, a stale noqa.
    (tmp_path / "bad.py").write_text("import os\n\n\ndef Pairs(a, b):  # noqa: E731\n"
                                     "    return list(zip(a, b))  # " + "x" * 120 + "\n")
    result = ruff(tmp_path / "bad.py")
    assert result.returncode == 1
    assert all(code in result.stdout for code in ("F401", "B905", "E501", "N802", "RUF100")), result.stdout


def test_sqlfluff_finds_nothing():
    found = sqlfluff(ROOT)
    assert {path: problems for path, problems in found.items() if problems} == {}
    # Every migration was linted but the ones .sqlfluffignore names: a bad glob or config would pass silently.
    ignored = {line for line in (ROOT / ".sqlfluffignore").read_text().splitlines() if line and line[0] != "#"}
    every = {str(path.relative_to(ROOT)) for path in (ROOT / "sql").glob("*/*.sql")}
    assert set(found) == every - ignored and ignored <= every


def test_sqlfluff_reports_a_bad_file_in_each_dialect(tmp_path):
    for name in SQLFLUFF_CONFIGS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "sql/postgres").mkdir()
    # Lower-case keywords (CP01) and a space before a comma (LT01) in both folders. Each file also shows its
    # folder's dialect is the one applied: Postgres's :: cast parses (no PRS), and FINAL is a ClickHouse
    # keyword (so a lower-case one is CP01 at column 34), where Postgres would read a table alias.
    (tmp_path / "sql/postgres/0001_bad.sql").write_text("select id::text , now() from users;\n")
    (tmp_path / "sql/clickhouse/0001_bad.sql").write_text("SELECT event_id , ts FROM events final;\n")
    found = sqlfluff(tmp_path)
    postgres, clickhouse = found["sql/postgres/0001_bad.sql"], found["sql/clickhouse/0001_bad.sql"]
    assert {p.split()[0] for p in postgres} == {"CP01", "LT01"}, postgres
    assert {p.split()[0] for p in clickhouse} == {"CP01", "LT01"}, clickhouse
    assert any(p.startswith("CP01 1:34 ") for p in clickhouse), clickhouse
