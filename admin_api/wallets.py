"""The caller's wallet, its ledger, and withdrawals.

Money moves only through SQL functions: a withdrawal is
``oros_request_withdrawal`` run as the caller, which reserves the amount at
once (a pending debit), so the database refuses an overdraft even under
concurrent requests.
"""

from __future__ import annotations

import psycopg
from aiohttp import web

from oros.connections import as_user
from oros.money import fmt

from . import idempotency
from . import openapi as oa
from .auth import caller
from .errors import ApiError, invalid, not_found
from .payload import amount, choice, cursor, fetch_page, limit, path_id, read_json, respond
from .typedefs import PG_POOL, SETTINGS

routes = web.RouteTableDef()

METHODS = ("ach", "instant", "card")
WALLET_COLUMNS = "id, user_id, purpose, currency, available_balance, pending_balance, created_at, updated_at"
LEDGER_COLUMNS = """id, wallet_id, transfer_id, source_type, source_id, amount, direction, status, hold_until,
    description, metadata, created_at"""
WITHDRAWAL_COLUMNS = """id, wallet_id, amount, method, status, stripe_transfer_id, transfer_id, failure_reason,
    created_at, processed_at"""
MAIN_WALLET = "(SELECT id FROM wallets WHERE user_id = %(me)s AND purpose = 'main')"


async def _paged(request: web.Request, table: str, columns: str, who_id: str) -> dict:
    """A keyset page of the caller's rows of ``table`` (ledger or withdrawals), newest first."""
    size, after = limit(request), cursor(request)
    async with as_user(request.app[PG_POOL], who_id) as conn:
        return await fetch_page(conn, f"SELECT {columns} FROM {table}", [f"wallet_id = {MAIN_WALLET}"],
                                {"me": who_id}, size, after)


@routes.get("/v1/wallet")
async def get_wallet(request: web.Request) -> web.Response:
    who = await caller(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute(
            f"SELECT {WALLET_COLUMNS} FROM wallets WHERE user_id = %(me)s AND purpose = 'main'", {"me": who.id}
        )).fetchone()
    if row is None:
        raise not_found("wallet")
    return respond(row)


@routes.get("/v1/wallet/ledger")
async def get_ledger(request: web.Request) -> web.Response:
    who = await caller(request)
    return respond(await _paged(request, "ledger_entries", LEDGER_COLUMNS, who.id))


@routes.get("/v1/withdrawals")
async def list_withdrawals(request: web.Request) -> web.Response:
    who = await caller(request)
    return respond(await _paged(request, "withdrawals", WITHDRAWAL_COLUMNS, who.id))


@routes.get("/v1/withdrawals/{id}")
async def get_withdrawal(request: web.Request) -> web.Response:
    who = await caller(request)
    withdrawal_id = path_id(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute(
            f"SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE id = %(id)s", {"id": withdrawal_id}
        )).fetchone()
    if row is None:
        raise not_found("withdrawal")
    return respond(row)


@routes.post("/v1/withdrawals")
async def request_withdrawal(request: web.Request) -> web.Response:
    who = (await caller(request)).require("creator")
    body = await read_json(request)
    value = amount(body, "amount")
    method = choice(body, "method", METHODS)
    minimum = request.app[SETTINGS].min_withdrawal
    if value < minimum:
        raise invalid("amount", f"the minimum withdrawal is {fmt(minimum)}")
    idem = await idempotency.request_key(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        if (prior := await idempotency.replay(conn, who.id, idem)) is not None:
            return prior
        payee = await (await conn.execute(
            "SELECT u.kyc_status, p.stripe_account_id FROM users u"
            " LEFT JOIN creator_profiles p ON p.user_id = u.id WHERE u.id = %(me)s",
            {"me": who.id},
        )).fetchone()
        if payee is None or payee["kyc_status"] != "approved":
            raise ApiError(403, "kyc_required", "identity verification (KYC) must be approved before withdrawing")
        if not payee["stripe_account_id"]:
            raise ApiError(409, "payout_account_required",
                           "set stripe_account_id on your creator profile first", "stripe_account_id")
        try:
            async with conn.transaction():
                row = await (await conn.execute(
                    f"SELECT {WITHDRAWAL_COLUMNS} FROM oros_request_withdrawal(%(amount)s, %(method)s)",
                    {"amount": value, "method": method},
                )).fetchone()
        except psycopg.errors.CheckViolation as exc:
            if exc.diag.constraint_name != "positive_available":
                raise
            raise ApiError(422, "insufficient_funds", "the amount exceeds your available balance", "amount") from None
        await idempotency.remember(conn, who.id, idem, 201, row)
    return respond(row, 201)


WALLET = oa.obj({
    "id": oa.UUID, "user_id": oa.UUID, "purpose": {"type": "string"}, "currency": {"type": "string"},
    "available_balance": oa.MONEY, "pending_balance": oa.MONEY, "created_at": oa.TIMESTAMP,
    "updated_at": oa.TIMESTAMP,
}, ["id", "available_balance", "pending_balance"])
LEDGER_ENTRY = oa.obj({
    "id": oa.UUID, "wallet_id": oa.UUID, "transfer_id": oa.UUID, "source_type": {"type": "string"},
    "source_id": oa.nullable(oa.UUID), "amount": oa.MONEY, "direction": {"enum": ["credit", "debit"]},
    "status": {"enum": ["pending", "settled", "failed", "reversed"]}, "hold_until": oa.nullable(oa.TIMESTAMP),
    "description": oa.nullable({"type": "string"}), "metadata": oa.nullable({"type": "object"}),
    "created_at": oa.TIMESTAMP,
}, ["id", "transfer_id", "amount", "direction", "status"])
WITHDRAWAL = oa.obj({
    "id": oa.UUID, "wallet_id": oa.UUID, "amount": oa.MONEY, "method": {"enum": list(METHODS)},
    "status": {"enum": ["requested", "processing", "completed", "failed"]},
    "stripe_transfer_id": oa.nullable({"type": "string"}), "transfer_id": oa.nullable(oa.UUID),
    "failure_reason": oa.nullable({"type": "string"}), "created_at": oa.TIMESTAMP,
    "processed_at": oa.nullable(oa.TIMESTAMP),
}, ["id", "amount", "method", "status"])

OPENAPI = {
    "/v1/wallet": {"get": oa.operation("The caller's wallet", {"200": oa.json_response("the wallet", WALLET)})},
    "/v1/wallet/ledger": {"get": oa.operation(
        "The caller's ledger entries, newest first", {"200": oa.json_response("entries", oa.page_of(LEDGER_ENTRY))},
        parameters=oa.PAGE_PARAMS)},
    "/v1/withdrawals": {
        "post": oa.operation(
            "Request a withdrawal; the amount is reserved at once",
            {"201": oa.json_response("the withdrawal", WITHDRAWAL)},
            body=oa.json_body(oa.obj({"amount": oa.AMOUNT, "method": {"enum": list(METHODS)}},
                                     ["amount", "method"])),
            parameters=[idempotency.OPENAPI_PARAMETER]),
        "get": oa.operation("The caller's withdrawals, newest first",
                            {"200": oa.json_response("withdrawals", oa.page_of(WITHDRAWAL))},
                            parameters=oa.PAGE_PARAMS),
    },
    "/v1/withdrawals/{id}": {"get": oa.operation(
        "One withdrawal", {"200": oa.json_response("the withdrawal", WITHDRAWAL)}, parameters=[oa.path_param()])},
}
