"""Wire types for request and response models (pydantic): each is one rule that both validates and documents.

A request model's field validates with the rule its owner module keeps
(``oros.money.parse_amount``, ``oros.events.canonical_uuid``,
``oros.links.CODE_RE``, ``oros.idempotency``) and describes itself with the
JSON Schema the OpenAPI document shows, so what is checked and what is
documented are written once, side by side. A refusal is a
``PydanticCustomError`` of type ``invalid`` whose message is a predicate
("must be …"); the caller prefixes the field's path (``legs[1].amount must
be positive``), so the same type words its errors the same everywhere.

Values come from ``orjson.loads``: a JSON number with a fraction is a float,
which no money type accepts (no float ever holds money).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, NoReturn
from urllib.parse import urlparse

from pydantic import PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from . import idempotency
from .events import ORDER_ID_RE, ORDER_ID_RULE, canonical_uuid
from .links import CODE_RE
from .money import MAX_AMOUNT, AmountError, parse_amount

INVALID = "invalid"  # the error type of every refusal here
MAX_URL_LEN = 2048
_INT_DIGITS = len(str(int(MAX_AMOUNT)))


def refuse(predicate: str) -> NoReturn:
    """Refuse the value: ``predicate`` completes a sentence whose subject is the field."""
    raise PydanticCustomError(INVALID, predicate)


def rule(base: Any, check, schema: dict) -> Any:
    """A type validated by ``check(raw) -> value`` (which calls ``refuse``), documented by ``schema``."""
    return Annotated[base, PlainValidator(check), WithJsonSchema(schema)]


def _uuid(raw: object) -> str:
    return canonical_uuid(raw) or refuse("must be a UUID string (8-4-4-4-12 hex digits)")


def _code(raw: object) -> str:
    if isinstance(raw, str) and CODE_RE.match(raw):
        return raw
    refuse(f"must match {CODE_RE.pattern}")


def _idempotency_key(raw: object) -> str:
    if isinstance(raw, str) and idempotency.valid(raw):
        return raw
    refuse(idempotency.PROBLEM.removeprefix(idempotency.HEADER + " "))


def _order_id(raw: object) -> str:
    if isinstance(raw, str) and ORDER_ID_RE.match(raw):
        return raw
    refuse(f"must be {ORDER_ID_RULE}")


UUID_SCHEMA = {"type": "string", "format": "uuid"}
Uuid = rule(str, _uuid, UUID_SCHEMA)
Code = rule(str, _code, {"type": "string", "pattern": CODE_RE.pattern})
OrderId = rule(str, _order_id, {"type": "string", "pattern": ORDER_ID_RE.pattern})  # oros.events owns the rule
IdempotencyKey = rule(str, _idempotency_key, {"type": "string", "pattern": idempotency.PATTERN})
# Money in a response: a decimal string with exactly two places ("12.50"); oros.money.fmt writes it.
Money = Annotated[Decimal, WithJsonSchema({"type": "string", "pattern": rf"^-?\d{{1,{_INT_DIGITS}}}\.\d{{2}}$",
                                           "examples": ["12.50"]})]


def Amount(maximum: Decimal = MAX_AMOUNT) -> Any:  # noqa: N802 - a type, spelled like one
    """A positive amount in a request, at most ``maximum``: a decimal string with at most two places, or an
    integer; never a float, NaN or Infinity (``oros.money.parse_amount``)."""

    def check(raw: object) -> Decimal:
        try:
            value = parse_amount(raw)
        except AmountError as exc:
            refuse(str(exc))
        if value > maximum:
            refuse(f"must be at most {maximum}")
        return value

    digits = len(str(int(maximum)))
    positive = rf"^([1-9]\d{{0,{digits - 1}}}(\.\d{{1,2}})?|0\.(0[1-9]|[1-9]\d?))$"
    return rule(Decimal, check, {"anyOf": [
        {"type": "string", "pattern": positive, "examples": ["12.50"]},
        {"type": "integer", "minimum": 1, "maximum": int(maximum)},
    ]})


def Text(max_len: int, min_len: int = 1) -> Any:  # noqa: N802
    """A string, stripped, of ``min_len`` to ``max_len`` characters, without NUL."""

    def check(raw: object) -> str:
        if not isinstance(raw, str):
            refuse("must be a string")
        value = raw.strip()
        if not min_len <= len(value) <= max_len:
            refuse(f"must be {min_len} to {max_len} characters")
        if "\x00" in value:
            refuse("must not contain NUL characters")
        return value

    return rule(str, check, {"type": "string", "minLength": min_len, "maxLength": max_len})


def OneOf(*options: str) -> Any:  # noqa: N802
    """One of ``options``, exactly."""

    def check(raw: object) -> str:
        if raw in options:
            return raw
        refuse(f"must be one of {', '.join(options)}")

    return rule(str, check, {"type": "string", "enum": list(options)})


def _flag(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    refuse("must be true or false")


# A JSON boolean, nothing else: not 0, 1 or "true".
Flag = rule(bool, _flag, {"type": "boolean"})


def Whole(low: int, high: int) -> Any:  # noqa: N802
    """A JSON integer from ``low`` to ``high`` (not a boolean, not a float)."""

    def check(raw: object) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
            refuse(f"must be a whole number from {low} to {high}")
        return raw

    return rule(int, check, {"type": "integer", "minimum": low, "maximum": high})


def QueryWhole(low: int, high: int) -> Any:  # noqa: N802
    """A whole number from ``low`` to ``high`` in a query string: decimal digits only."""

    def check(raw: object) -> int:
        if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
            refuse(f"must be a whole number from {low} to {high}")
        return int(raw)

    return rule(int, check, {"type": "integer", "minimum": low, "maximum": high})


def HttpUrl(max_len: int = MAX_URL_LEN) -> Any:  # noqa: N802
    """An absolute http or https URL of at most ``max_len`` characters, without whitespace or control characters."""

    def check(raw: object) -> str:
        if not isinstance(raw, str) or len(raw) > max_len:
            refuse(f"must be an http(s) URL of at most {max_len} characters")
        try:
            parsed = urlparse(raw)
        except ValueError:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc or any(
            c.isspace() or ord(c) < 32 for c in raw
        ):
            refuse("must be an absolute http or https URL")
        return raw

    return rule(str, check, {"type": "string", "format": "uri", "maxLength": max_len})


def parse_timestamp(raw: object, years: range) -> datetime:
    """``raw`` as an aware datetime (UTC when it names no zone), its year in ``years``."""
    if not isinstance(raw, str):
        refuse("must be an ISO 8601 timestamp")
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        refuse("must be an ISO 8601 timestamp")
    if value.year not in years:
        refuse("is out of range")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def Timestamp(years: range = range(1970, 10000)) -> Any:  # noqa: N802
    """An ISO 8601 timestamp in a request; one without a zone is taken as UTC."""
    return rule(datetime, lambda raw: parse_timestamp(raw, years), {"type": "string", "format": "date-time"})


MAX_HASHTAGS = 30
MAX_HASHTAG_LEN = 50


def normalize_tag(tag: str) -> str:
    """Hashtags are stored lower-case without '#', so search is exact on the GIN index."""
    return tag.strip().lstrip("#").lower()


def _hashtags(raw: object) -> list[str]:
    if not isinstance(raw, list) or len(raw) > MAX_HASHTAGS:
        refuse(f"must be a list of at most {MAX_HASHTAGS} strings")
    for tag in raw:
        if not isinstance(tag, str) or not 1 <= len(tag.strip().lstrip("#")) <= MAX_HASHTAG_LEN or "\x00" in tag:
            refuse(f"must each be a string of 1 to {MAX_HASHTAG_LEN} characters")
    return sorted({normalize_tag(tag) for tag in raw})


# Hashtags, normalised (lower case, no '#'), deduplicated and sorted.
Hashtags = rule(list[str], _hashtags, {"type": "array", "maxItems": MAX_HASHTAGS,
                                       "items": {"type": "string", "minLength": 1, "maxLength": MAX_HASHTAG_LEN}})
