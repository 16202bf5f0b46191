"""Admin work queues for the finance pages: users by KYC status, withdrawals by status.

Read as the admin under RLS (admins read every row); each is one keyset
page, newest first, like every list of the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

from oros.connections import as_user
from oros.wire import OneOf, Uuid

from .admin import KYC_STATUSES
from .auth import caller
from .pages import Page, PageQuery, fetch_page
from .payload import parse_query, respond
from .routing import Routes
from .typedefs import PG_POOL
from .users import SELF_ROLES
from .wallets import WITHDRAWAL_COLUMNS, WITHDRAWAL_STATUSES, Withdrawal

routes = Routes()

_USERS_SELECT = """
SELECT id, email, username, display_name, kyc_status, created_at,
       ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = users.id ORDER BY r.role) AS roles,
       (SELECT p.stripe_account_id FROM creator_profiles p WHERE p.user_id = users.id) AS stripe_account_id
  FROM users"""

_WITHDRAWALS_SELECT = f"""
SELECT {WITHDRAWAL_COLUMNS},
       (SELECT w.user_id FROM wallets w WHERE w.id = withdrawals.wallet_id) AS user_id,
       (SELECT u.email FROM wallets w JOIN users u ON u.id = w.user_id WHERE w.id = withdrawals.wallet_id) AS email
  FROM withdrawals"""


class UsersQuery(PageQuery):
    kyc_status: OneOf(*KYC_STATUSES) = None
    role: OneOf(*SELF_ROLES, "admin") = None


class WithdrawalsQuery(PageQuery):
    status: OneOf(*WITHDRAWAL_STATUSES) = None


class AdminUser(BaseModel):
    id: Uuid
    email: str
    username: str | None
    display_name: str | None
    kyc_status: Literal[KYC_STATUSES]
    roles: list[str]
    stripe_account_id: str | None
    created_at: datetime


class AdminWithdrawal(Withdrawal):
    user_id: Uuid
    email: str


@routes.get("/v1/admin/users", "Users, newest first, by KYC status and role (the KYC queue: "
            "kyc_status=pending&role=creator)", query=UsersQuery, responses={200: Page[AdminUser]})
async def list_users(request: web.Request) -> web.Response:
    """The KYC queue is ``?kyc_status=pending&role=creator``: creators cannot withdraw until approved."""
    who = (await caller(request)).require("admin")
    query = parse_query(UsersQuery, request)
    where, params = ["NOT is_system"], {}
    if query.kyc_status is not None:
        where.append("kyc_status = %(kyc)s")
        params["kyc"] = query.kyc_status
    if query.role is not None:
        where.append("EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = users.id AND r.role = %(role)s)")
        params["role"] = query.role
    async with as_user(request.app[PG_POOL], who.id) as conn:
        return respond(await fetch_page(conn, _USERS_SELECT, where, params, query))


@routes.get("/v1/admin/withdrawals", "Every creator's withdrawals, newest first, by status (to pay: "
            "status=requested)", query=WithdrawalsQuery, responses={200: Page[AdminWithdrawal]})
async def list_withdrawals(request: web.Request) -> web.Response:
    """Withdrawals to pay are ``?status=requested``; ``failed`` ones say why (``failure_reason``)."""
    who = (await caller(request)).require("admin")
    query = parse_query(WithdrawalsQuery, request)
    where, params = ["true"], {}
    if query.status is not None:
        where.append("status = %(status)s")
        params["status"] = query.status
    async with as_user(request.app[PG_POOL], who.id) as conn:
        return respond(await fetch_page(conn, _WITHDRAWALS_SELECT, where, params, query))
