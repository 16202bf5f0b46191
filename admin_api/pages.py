"""Lists: newest first, one keyset page at a time, ``{"items", "next_cursor"}``.

The cursor is opaque to clients: the ``(created_at, id)`` (or ``started_at``)
of the last row of the previous page, base64url-encoded.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel

from oros.events import canonical_uuid
from oros.wire import QueryWhole, refuse, rule

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

T = TypeVar("T")


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """An opaque keyset cursor: the (created_at, id) of the last row of a page."""
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(raw: object) -> tuple[datetime, str] | None:
    if not raw:
        return None
    try:
        stamp, _, row_id = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().partition("|")
        after = datetime.fromisoformat(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        after = None
    row_id = canonical_uuid(row_id) if after is not None else None
    if row_id is None:
        refuse("is malformed; pass next_cursor from the previous page")
    return after, row_id


Cursor = rule(tuple, _cursor, {"type": "string", "description": "next_cursor of the previous page"})


class PageQuery(BaseModel):
    """``limit`` and ``cursor``: a list's query; extend it with the list's filters."""

    limit: QueryWhole(1, MAX_LIMIT) = DEFAULT_LIMIT
    cursor: Cursor = None


class Page(BaseModel, Generic[T]):
    """One page of a list, newest first; ``next_cursor`` is null on the last."""

    items: list[T]
    next_cursor: str | None


async def fetch_page(conn, select: str, where: list[str], params: dict, query: PageQuery) -> dict:
    """One keyset page of ``select`` (``SELECT … FROM …``) filtered by ``where``, newest first."""
    where, params = list(where), {**params, "limit": query.limit + 1}
    if query.cursor is not None:
        where.append("(created_at, id) < (%(after_at)s, %(after_id)s)")
        params.update(after_at=query.cursor[0], after_id=query.cursor[1])
    rows = await (await conn.execute(
        f"{select} WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT %(limit)s", params,
    )).fetchall()
    return page(rows, query.limit)


def page(rows: list[dict], size: int, *, key: str = "created_at") -> dict:
    """``{"items", "next_cursor"}`` from ``size + 1`` fetched rows (the extra one says "more")."""
    more = len(rows) > size
    rows = rows[:size]
    next_cursor = encode_cursor(rows[-1][key], str(rows[-1]["id"])) if more else None
    return {"items": rows, "next_cursor": next_cursor}
