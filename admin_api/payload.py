"""Request input and response output: JSON bodies, path ids, cursors, JSON responses.

Every check raises an ``ApiError`` naming the offending field, so bad input
is answered 4xx before any database work starts (and never half-writes).
"""

from __future__ import annotations

import base64
import dataclasses
import binascii
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import orjson
from aiohttp import web

from oros.events import canonical_uuid
from oros.money import AmountError, parse_amount

from .errors import ApiError, invalid

MAX_URL_LEN = 2048
DEFAULT_LIMIT = 50
MAX_LIMIT = 200


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; 400 when it is not JSON, 422 when not an object."""
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise ApiError(400, "bad_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid("body", "request body must be a JSON object")
    return body


def path_id(request: web.Request, name: str = "id") -> str:
    """A UUID path segment, canonical; a malformed one is simply not found (never a 500)."""
    raw = request.match_info[name]
    value = canonical_uuid(raw)
    if value is None:
        raise ApiError(404, "not_found", f"{name} {raw!r} not found")
    return value


def uuid_field(body: dict, name: str, *, required: bool = True) -> str | None:
    raw = body.get(name)
    if raw is None and not required:
        return None
    value = canonical_uuid(raw)
    if value is None:
        raise invalid(name, f"{name} must be a UUID string (8-4-4-4-12 hex digits)")
    return value


def text(body: dict, name: str, *, required: bool = False, max_len: int, min_len: int = 1) -> str | None:
    raw = body.get(name)
    if raw is None:
        if required:
            raise invalid(name, f"{name} is required")
        return None
    if not isinstance(raw, str):
        raise invalid(name, f"{name} must be a string")
    value = raw.strip()
    if len(value) < min_len or len(value) > max_len:
        raise invalid(name, f"{name} must be {min_len} to {max_len} characters")
    if "\x00" in value:
        raise invalid(name, f"{name} must not contain NUL characters")
    return value


def choice(body: dict, name: str, options: tuple[str, ...], *, required: bool = True) -> str | None:
    raw = body.get(name)
    if raw is None and not required:
        return None
    if raw not in options:
        raise invalid(name, f"{name} must be one of {', '.join(options)}")
    return raw


def flag(body: dict, name: str) -> bool:
    """A JSON boolean (``true``/``false``), nothing else: not 0, 1 or "true"."""
    raw = body.get(name)
    if not isinstance(raw, bool):
        raise invalid(name, f"{name} must be true or false")
    return raw


def whole(body: dict, name: str, *, default: int, low: int, high: int) -> int:
    """A JSON integer in ``low``..``high``, ``default`` when absent."""
    raw = body.get(name, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise invalid(name, f"{name} must be a whole number from {low} to {high}")
    return raw


def amount(body: dict, name: str, *, required: bool = True) -> Decimal | None:
    raw = body.get(name)
    if raw is None:
        if required:
            raise invalid(name, f"{name} is required")
        return None
    try:
        return parse_amount(raw)
    except AmountError as exc:
        raise invalid(name, f"{name}: {exc}") from None


def timestamp(body: dict, name: str) -> datetime | None:
    """An ISO 8601 timestamp in the body; one without a zone is taken as UTC."""
    raw = body.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise invalid(name, f"{name} must be an ISO 8601 timestamp")
    return parse_timestamp(raw, name, years=range(1970, 10000))


def parse_timestamp(raw: str, name: str, *, years: range) -> datetime:
    """``raw`` as an aware datetime (UTC when it names no zone), its year in ``years``; else 422 naming ``name``."""
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(name, f"{name} must be an ISO 8601 timestamp") from None
    if value.year not in years:
        raise invalid(name, f"{name} is out of range")
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def hashtags(body: dict, name: str = "hashtags") -> list[str] | None:
    raw = body.get(name)
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > 30:
        raise invalid(name, f"{name} must be a list of at most 30 strings")
    tags = []
    for tag in raw:
        if not isinstance(tag, str) or not 1 <= len(tag.strip().lstrip("#")) <= 50 or "\x00" in tag:
            raise invalid(name, f"each of {name} must be a string of 1 to 50 characters")
        tags.append(normalize_tag(tag))
    return sorted(set(tags))


def normalize_tag(tag: str) -> str:
    """Hashtags are stored lower-case without '#', so search is exact on the GIN index."""
    return tag.strip().lstrip("#").lower()


def http_url(body: dict, name: str, *, required: bool = False) -> str | None:
    raw = body.get(name)
    if raw is None:
        if required:
            raise invalid(name, f"{name} is required")
        return None
    if not isinstance(raw, str) or len(raw) > MAX_URL_LEN:
        raise invalid(name, f"{name} must be an http(s) URL of at most {MAX_URL_LEN} characters")
    try:
        parsed = urlparse(raw)
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc or any(
        c.isspace() or ord(c) < 32 for c in raw
    ):
        raise invalid(name, f"{name} must be an absolute http or https URL")
    return raw


def limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    try:
        value = int(raw)
    except ValueError:
        raise invalid("limit", "limit must be an integer") from None
    if not 1 <= value <= MAX_LIMIT:
        raise invalid("limit", f"limit must be between 1 and {MAX_LIMIT}")
    return value


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """An opaque keyset cursor: the (created_at, id) of the last row of a page."""
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor(request: web.Request) -> tuple[datetime, str] | None:
    raw = request.query.get("cursor")
    if not raw:
        return None
    try:
        stamp, _, row_id = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().partition("|")
        after = datetime.fromisoformat(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        after = None
    row_id = canonical_uuid(row_id) if after is not None else None
    if row_id is None:
        raise invalid("cursor", "cursor is malformed; pass next_cursor from the previous page")
    return after, row_id


async def fetch_page(conn, select: str, where: list[str], params: dict, size: int,
                     after: tuple[datetime, str] | None) -> dict:
    """One keyset page of ``select`` (``SELECT … FROM …``) filtered by ``where``, newest first."""
    where, params = list(where), {**params, "limit": size + 1}
    if after is not None:
        where.append("(created_at, id) < (%(after_at)s, %(after_id)s)")
        params.update(after_at=after[0], after_id=after[1])
    rows = await (await conn.execute(
        f"{select} WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT %(limit)s", params,
    )).fetchall()
    return page(rows, size)


def page(rows: list[dict], size: int, *, key: str = "created_at") -> dict:
    """``{"items", "next_cursor"}`` from ``size + 1`` fetched rows (the extra one says "more")."""
    more = len(rows) > size
    rows = rows[:size]
    next_cursor = encode_cursor(rows[-1][key], str(rows[-1]["id"])) if more else None
    return {"items": rows, "next_cursor": next_cursor}


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(data: Any) -> bytes:
    """JSON as the API writes it: Decimals as strings (money keeps its two places), UUIDs and times as strings."""
    return orjson.dumps(data, default=_default, option=orjson.OPT_PASSTHROUGH_SUBCLASS)


def respond(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json")
