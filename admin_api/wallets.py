"""The caller's wallet, its ledger, and withdrawals.

Money moves only through SQL functions: a withdrawal is
``oros_request_withdrawal`` run as the caller, which reserves the amount at
once (a pending debit), so the database refuses an overdraft even under
concurrent requests.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import psycopg
from aiohttp import web
from pydantic import BaseModel

from oros.connections import as_user
from oros.httperrors import ApiError, invalid, not_found
from oros.money import fmt
from oros.wire import Amount, Money, OneOf, Uuid

from . import idempotency
from .auth import caller
from .pages import Page, PageQuery, fetch_page
from .payload import parse, parse_query, path_id, respond
from .routing import Routes
from .typedefs import PG_POOL, SETTINGS

routes = Routes()

METHODS = ("ach", "instant", "card")
WITHDRAWAL_STATUSES = ("requested", "processing", "completed", "failed")
WALLET_COLUMNS = "id, user_id, purpose, currency, available_balance, pending_balance, created_at, updated_at"
LEDGER_COLUMNS = """id, wallet_id, transfer_id, source_type, source_id, amount, direction, status, hold_until,
    description, metadata, created_at"""
WITHDRAWAL_COLUMNS = """id, wallet_id, amount, method, status, stripe_transfer_id, transfer_id, failure_reason,
    created_at, processed_at"""
MAIN_WALLET = "(SELECT id FROM wallets WHERE user_id = %(me)s AND purpose = 'main')"


class WithdrawalIn(BaseModel):
    amount: Amount()
    method: OneOf(*METHODS)


class Wallet(BaseModel):
    """The wallet"""

    id: Uuid
    user_id: Uuid
    purpose: str
    currency: str
    available_balance: Money
    pending_balance: Money
    created_at: datetime
    updated_at: datetime


class LedgerEntry(BaseModel):
    """The ledger entry"""

    id: Uuid
    wallet_id: Uuid
    transfer_id: Uuid
    source_type: str
    source_id: Uuid | None
    amount: Money
    direction: Literal["credit", "debit"]
    status: Literal["pending", "settled", "failed", "reversed"]
    hold_until: datetime | None
    description: str | None
    metadata: dict | None
    created_at: datetime


class Withdrawal(BaseModel):
    """The withdrawal"""

    id: Uuid
    wallet_id: Uuid
    amount: Money
    method: Literal[METHODS]
    status: Literal[WITHDRAWAL_STATUSES]
    stripe_transfer_id: str | None
    transfer_id: Uuid | None
    failure_reason: str | None
    created_at: datetime
    processed_at: datetime | None


async def _paged(request: web.Request, table: str, columns: str, who_id: str) -> dict:
    """A keyset page of the caller's rows of ``table`` (ledger or withdrawals), newest first."""
    query = parse_query(PageQuery, request)
    async with as_user(request.app[PG_POOL], who_id) as conn:
        return await fetch_page(conn, f"SELECT {columns} FROM {table}", [f"wallet_id = {MAIN_WALLET}"],
                                {"me": who_id}, query)


@routes.get("/v1/wallet", "The caller's wallet", responses={200: Wallet})
async def get_wallet(request: web.Request) -> web.Response:
    who = await caller(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute(
            f"SELECT {WALLET_COLUMNS} FROM wallets WHERE user_id = %(me)s AND purpose = 'main'", {"me": who.id}
        )).fetchone()
    if row is None:
        raise not_found("wallet")
    return respond(row)


@routes.get("/v1/wallet/ledger", "The caller's ledger entries, newest first", query=PageQuery,
            responses={200: Page[LedgerEntry]})
async def get_ledger(request: web.Request) -> web.Response:
    who = await caller(request)
    return respond(await _paged(request, "ledger_entries", LEDGER_COLUMNS, who.id))


@routes.get("/v1/withdrawals", "The caller's withdrawals, newest first", query=PageQuery,
            responses={200: Page[Withdrawal]})
async def list_withdrawals(request: web.Request) -> web.Response:
    who = await caller(request)
    return respond(await _paged(request, "withdrawals", WITHDRAWAL_COLUMNS, who.id))


@routes.get("/v1/withdrawals/{id}", "One withdrawal", responses={200: Withdrawal})
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


@routes.post("/v1/withdrawals", "Request a withdrawal; the amount is reserved at once", body=WithdrawalIn,
             headers=(idempotency.IDEMPOTENCY_KEY,), responses={201: Withdrawal})
async def request_withdrawal(request: web.Request) -> web.Response:
    # Creators withdraw earnings and tips; supporters their rewards (docs/supporters.md).
    who = (await caller(request)).require("creator", "supporter")
    body = await parse(WithdrawalIn, request)
    minimum = request.app[SETTINGS].min_withdrawal
    if body.amount < minimum:
        raise invalid("amount", f"the minimum withdrawal is {fmt(minimum)}")

    async def withdraw(conn) -> dict:
        payee = await (await conn.execute(
            "SELECT u.kyc_status, p.stripe_account_id FROM users u"
            " LEFT JOIN creator_profiles p ON p.user_id = u.id WHERE u.id = %(me)s",
            {"me": who.id},
        )).fetchone()
        if payee is None or payee["kyc_status"] != "approved":
            raise ApiError(403, "kyc_required", "identity verification (KYC) must be approved before withdrawing")
        if not payee["stripe_account_id"]:
            raise ApiError(409, "payout_account_required",
                           "set your payout account first (PUT /v1/me/payout-account)", "stripe_account_id")
        try:
            async with conn.transaction():
                return await (await conn.execute(
                    f"SELECT {WITHDRAWAL_COLUMNS} FROM oros_request_withdrawal(%(amount)s, %(method)s)",
                    {"amount": body.amount, "method": body.method},
                )).fetchone()
        except psycopg.errors.CheckViolation as exc:
            if exc.diag.constraint_name != "positive_available":
                raise
            raise ApiError(422, "insufficient_funds", "the amount exceeds your available balance", "amount") from None

    return await idempotency.once(request, who.id, withdraw)
