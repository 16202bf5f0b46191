"""``Idempotency-Key`` for requests that move money: a retry returns the first answer.

Every money endpoint answers through ``once``: look the key up, move the
money, store the first response, answer. The response is stored in
``idempotency_keys`` inside the same transaction as the money movement, so a
crash leaves both or neither. The lookup first takes a transaction lock on
(caller, key), so where the lookup, the movement and the store share one
transaction, a concurrent request with the same key waits for the first to
commit and then gets its stored answer: the money moves once. Where they cannot share one (Stripe
funding calls Stripe in between) the second request blocks on the primary key
of the store instead, fails and is rolled back whole (409, retry it to get
the stored answer).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from aiohttp import web

from oros import idempotency
from oros.connections import as_user
from oros.httperrors import ApiError, conflict, invalid
from oros.idempotency import HEADER
from oros.locks import IDEMPOTENCY_CLASS
from oros.wire import IdempotencyKey

from .payload import dumps, respond
from .routing import Header
from .typedefs import PG_POOL

IDEMPOTENCY_KEY = Header(HEADER, IdempotencyKey, description=(
    "Retrying with the same key returns the first response instead of repeating the request."))


def derived_id(namespace: uuid.UUID, user_id: str, key: str | None) -> str:
    """The id a money request creates: with an ``Idempotency-Key`` derived from (caller, key) in the kind's
    ``namespace``, so a retry names the same row (and the same Stripe idempotency key); random without one."""
    return str(uuid.uuid5(namespace, f"{user_id}:{key}") if key else uuid.uuid4())


async def once(request: web.Request, user_id: str, act: Callable[..., Awaitable[Any]], *,
               status: int | Callable[[Any], int] = 201,
               before: Callable[[str | None], Awaitable[Any]] | None = None) -> web.Response:
    """Answer ``act(conn)``'s body with ``status``, done once per ``Idempotency-Key`` of ``user_id``.

    ``status`` may be a function of the body (a report that was already recorded answers 200, a new one 202);
    a replay answers the status stored with the body.

    ``act`` runs as the caller in the transaction that looked the key up and then stores its answer;
    an exception rolls all of it back and stores nothing (a refusal is evaluated again on retry).
    ``before(key)``, when given, runs between the lookup and ``act`` outside any transaction (a call to
    Stripe), and ``act(conn, before's result)`` then runs in a transaction of its own.
    """
    key = await _request_key(request)
    pool = request.app[PG_POOL]
    async with as_user(pool, user_id) as conn:
        if (prior := await _replay(conn, user_id, key)) is not None:
            return prior
        if before is None:
            return await _answer(conn, user_id, key, status, await act(conn))
    prepared = await before(key[0] if key else None)
    async with as_user(pool, user_id) as conn:
        return await _answer(conn, user_id, key, status, await act(conn, prepared))


async def _answer(conn: psycopg.AsyncConnection, user_id: str, key: tuple[str, str] | None,
                  status: int | Callable[[Any], int], body: Any) -> web.Response:
    if callable(status):
        status = status(body)
    await _remember(conn, user_id, key, status, body)
    return respond(body, status)


async def _request_key(request: web.Request) -> tuple[str, str] | None:
    """``(key, request hash)`` when the client sent a key; the hash ties the key to this exact request."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not idempotency.valid(key):
        raise invalid(HEADER, idempotency.PROBLEM)
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode() + await request.read()).hexdigest()
    return key, digest


async def _replay(conn: psycopg.AsyncConnection, user_id: str, idem: tuple[str, str] | None) -> web.Response | None:
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


async def _remember(conn: psycopg.AsyncConnection, user_id: str, idem: tuple[str, str] | None,
                   status: int, body: Any) -> None:
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
