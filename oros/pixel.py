"""The pixel signature: what a business page signs, and how it is checked.

``sig = hex(HMAC-SHA256(pixel secret, "cid|type|order_id|value"))`` over the
values the pixel records: the click id as the tracker wrote it (lower-case
UUID), the type (``conversion`` when the pixel names none), the order id and
the value with two decimals, each empty when absent. Only the order id is
free text, and the value never holds a ``|``, so the last ``|`` always starts
the value: two different pixels never share a message.

The tracker only records ``sig``; the settler checks it against the
secrets the campaign's business held when the pixel arrived (README,
"The pixel recipe"; docs/security.md, "Pixel").
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

SECRET_PREFIX = "oros_px_"
SIG_RE = re.compile(r"[0-9a-f]{64}")  # hex of a SHA-256 HMAC, lower case


def message(click_id: str, event_type: str, order_id: str | None, value: str | None) -> bytes:
    return f"{click_id}|{event_type}|{order_id or ''}|{value or ''}".encode()


def sign(secret: str, click_id: str, event_type: str, order_id: str | None = None, value: str | None = None) -> str:
    """The ``sig`` a business page sends (what the README's recipe computes)."""
    return hmac.new(secret.encode(), message(click_id, event_type, order_id, value), hashlib.sha256).hexdigest()


def signed_by(candidates: list[str], sig: str, msg: bytes) -> bool:
    """Whether one of the secrets signed ``msg``; each comparison in constant time."""
    ok = False
    for secret in candidates:
        expected = hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()
        ok |= hmac.compare_digest(expected, sig)
    return ok


def new_secret() -> str:
    """256 random bits; the prefix lets secret scanners recognise a leaked one."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)
