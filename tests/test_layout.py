"""The dependency direction is checked, not only described: entrypoints -> apps -> the shared package.

The contracts live in pyproject.toml (``[tool.importlinter]``); import-linter
builds the import graph of the source tree and reports each import that breaks one.
"""

from __future__ import annotations

import sys
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("oros", "oros_cli", "tracker", "ingest", "settler", "admin_api", "webhooks")


def test_the_import_contracts_hold(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    assert status == 0, capsys.readouterr().out


def test_a_broken_contract_is_reported(tmp_path, capsys, monkeypatch):
    """The check can fail: the shared package importing an app breaks it."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "oros" / "bad.py").write_text("import settler\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] in PACKAGES]:  # find the copies, not the real tree
        monkeypatch.delitem(sys.modules, name)
    status = lint_imports(config_filename=str(tmp_path / "pyproject.toml"), no_cache=True, no_logo=True)
    assert status != 0
    assert "oros.bad -> settler" in capsys.readouterr().out
