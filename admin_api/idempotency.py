"""``Idempotency-Key`` for requests that move money: a retry returns the first answer.

The first response is stored in ``idempotency_keys`` inside the same
transaction as the money movement, so a crash leaves both or neither.
``replay`` first takes a transaction lock on (caller, key), so where the
lookup, the movement and ``remember`` share one transaction, a concurrent
request with the same key waits for the first to commit and then gets its
stored answer: the money moves once. Where they cannot share one (Stripe
funding calls Stripe in between) the second request blocks on the primary key
in ``remember`` instead, fails and is rolled back whole (409, retry it to get
the stored answer).
"""

from __future__ import annotations

import hashlib

import psycopg
from aiohttp import web

from oros import idempotency
from oros.idempotency import HEADER
from oros.locks import IDEMPOTENCY_CLASS

from .errors import ApiError, conflict, invalid
from .payload import dumps, respond


OPENAPI_PARAMETER = {
    "name": HEADER, "in": "header", "required": False,
    "schema": {"type": "string", "pattern": idempotency.PATTERN},
    "description": "Retrying with the same key returns the first response instead of repeating the request.",
}


async def request_key(request: web.Request) -> tuple[str, str] | None:
    """``(key, request hash)`` when the client sent a key; the hash ties the key to this exact request."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not idempotency.valid(key):
        raise invalid(HEADER, idempotency.PROBLEM)
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode() + await request.read()).hexdigest()
    return key, digest


async def replay(conn: psycopg.AsyncConnection, user_id: str, idem: tuple[str, str] | None) -> web.Response | None:
    """The stored response for this key, if any; 422 if the key was used for a different request."""
    if idem is None:
        return None
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%(class)s, hashtext(%(lock)s))",
        {"class": IDEMPOTENCY_CLASS, "lock": f"{user_id}:{idem[0]}"},
    )
    row = await (await conn.execute(
        "SELECT request_hash, status_code, response FROM idempotency_keys WHERE user_id = %(u)s AND key = %(k)s",
        {"u": user_id, "k": idem[0]},
    )).fetchone()
    if row is None:
        return None
    if row["request_hash"] != idem[1]:
        raise ApiError(422, "idempotency_key_reused", f"this {HEADER} was used for a different request", HEADER)
    return respond(row["response"], row["status_code"])


async def remember(conn: psycopg.AsyncConnection, user_id: str, idem: tuple[str, str] | None,
                   status: int, body: dict) -> None:
    """Store the response in the caller's transaction (no-op without a key)."""
    if idem is None:
        return
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response)"
                " VALUES (%(u)s, %(k)s, %(h)s, %(s)s, %(r)s::jsonb)",
                {"u": user_id, "k": idem[0], "h": idem[1], "s": status, "r": dumps(body).decode()},
            )
    except psycopg.errors.UniqueViolation:
        raise conflict("request_in_progress", f"a request with this {HEADER} was processed concurrently; retry it",
                       HEADER) from None
