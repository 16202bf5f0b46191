"""SQL files shipped with OROS: Postgres and ClickHouse migrations, loaded by name."""

from __future__ import annotations

from importlib.resources import files


def migrations(kind: str) -> list[tuple[str, str]]:
    """``(name, text)`` of every migration for ``kind`` ("postgres" or "clickhouse"), in order."""
    folder = files(__name__).joinpath(kind)
    found = sorted(p for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(p.name.removesuffix(".sql"), p.read_text()) for p in found]
