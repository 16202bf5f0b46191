"""People's names beside their ids: ``oros_public_names`` (sql/postgres/0165).

A response that names a creator or business by id also carries its name
(display name, else username; ``null`` when it has neither, or is not a
creator or business), so a page can show a person instead of a UUID.
"""

from __future__ import annotations

import psycopg

_NAMES_SQL = "SELECT id::text AS id, name FROM oros_public_names(%(ids)s::uuid[])"


async def attach(conn: psycopg.AsyncConnection, rows: list[dict], id_key: str, name_key: str) -> list[dict]:
    """Set ``row[name_key]`` to the public name of ``row[id_key]`` on each row (one query for all of them)."""
    ids = sorted({str(row[id_key]) for row in rows if row.get(id_key) is not None})
    found = {}
    if ids:
        found = {r["id"]: r["name"] for r in await (await conn.execute(_NAMES_SQL, {"ids": ids})).fetchall()}
    for row in rows:
        row[name_key] = found.get(str(row[id_key])) if row.get(id_key) is not None else None
    return rows
