"""Request header values made safe to store, hash and encode, once, where a service reads them.

aiohttp decodes header bytes as UTF-8 with ``surrogateescape``: a byte that
is not UTF-8 (a Latin-1 "é", 0xE9) arrives as a lone surrogate (U+DCE9).
orjson refuses to encode such a string and ``str.encode()`` raises on it, so
one stray byte in a User-Agent used to turn a click into a 500. ``text``
gives the value with each such byte as U+FFFD; ``bearer`` takes a credential
only when it is plain token characters, so a bad byte is a 401.
"""

from __future__ import annotations

import re

# RFC 6750's b64token: what API keys (``oros.apikeys``) and JWTs are made of.
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")


def text(value: str | None) -> str | None:
    """``value`` with every byte that was not UTF-8 replaced by U+FFFD (None stays None)."""
    # isascii() reads a flag CPython keeps on every str: the redirect's common case costs nothing.
    if value is None or value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def bearer(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <token>`` header, or None when there is none or it is malformed."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN_RE.fullmatch(token):
        return None
    return token
