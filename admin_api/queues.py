"""Admin work queues for the finance pages: users by KYC status, withdrawals by status.

Read as the admin under RLS (admins read every row); each is one keyset
page, newest first, like every list of the API.
"""

from __future__ import annotations

from aiohttp import web

from oros.connections import as_user

from . import openapi as oa
from .admin import KYC_STATUSES
from .auth import caller
from .errors import invalid
from .payload import cursor, fetch_page, limit, respond
from .users import SELF_ROLES
from .typedefs import PG_POOL
from .wallets import METHODS, WITHDRAWAL_COLUMNS

routes = web.RouteTableDef()

WITHDRAWAL_STATUSES = ("requested", "processing", "completed", "failed")

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


def _filter(request: web.Request, name: str, options: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is not None and raw not in options:
        raise invalid(name, f"{name} must be one of {', '.join(options)}")
    return raw


@routes.get("/v1/admin/users")
async def list_users(request: web.Request) -> web.Response:
    """The KYC queue is ``?kyc_status=pending&role=creator``: creators cannot withdraw until approved."""
    who = (await caller(request)).require("admin")
    kyc, role = _filter(request, "kyc_status", KYC_STATUSES), _filter(request, "role", (*SELF_ROLES, "admin"))
    size, after = limit(request), cursor(request)
    where, params = ["NOT is_system"], {}
    if kyc is not None:
        where.append("kyc_status = %(kyc)s")
        params["kyc"] = kyc
    if role is not None:
        where.append("EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = users.id AND r.role = %(role)s)")
        params["role"] = role
    async with as_user(request.app[PG_POOL], who.id) as conn:
        return respond(await fetch_page(conn, _USERS_SELECT, where, params, size, after))


@routes.get("/v1/admin/withdrawals")
async def list_withdrawals(request: web.Request) -> web.Response:
    """Withdrawals to pay are ``?status=requested``; ``failed`` ones say why (``failure_reason``)."""
    who = (await caller(request)).require("admin")
    status = _filter(request, "status", WITHDRAWAL_STATUSES)
    size, after = limit(request), cursor(request)
    where, params = ["true"], {}
    if status is not None:
        where.append("status = %(status)s")
        params["status"] = status
    async with as_user(request.app[PG_POOL], who.id) as conn:
        return respond(await fetch_page(conn, _WITHDRAWALS_SELECT, where, params, size, after))


ADMIN_USER = oa.obj({
    "id": oa.UUID, "email": {"type": "string"}, "username": oa.nullable({"type": "string"}),
    "display_name": oa.nullable({"type": "string"}), "kyc_status": {"enum": list(KYC_STATUSES)},
    "roles": {"type": "array", "items": {"type": "string"}}, "stripe_account_id": oa.nullable({"type": "string"}),
    "created_at": oa.TIMESTAMP,
}, ["id", "email", "kyc_status", "roles", "created_at"])
ADMIN_WITHDRAWAL = oa.obj({
    "id": oa.UUID, "wallet_id": oa.UUID, "user_id": oa.UUID, "email": {"type": "string"}, "amount": oa.MONEY,
    "method": {"enum": list(METHODS)}, "status": {"enum": list(WITHDRAWAL_STATUSES)},
    "stripe_transfer_id": oa.nullable({"type": "string"}), "transfer_id": oa.nullable(oa.UUID),
    "failure_reason": oa.nullable({"type": "string"}), "created_at": oa.TIMESTAMP,
    "processed_at": oa.nullable(oa.TIMESTAMP),
}, ["id", "wallet_id", "user_id", "amount", "method", "status", "created_at"])


def _query(name: str, options: tuple[str, ...]) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": {"enum": list(options)}}


OPENAPI = {
    "/v1/admin/users": {"get": oa.operation(
        "Users, newest first, by KYC status and role (the KYC queue: kyc_status=pending&role=creator)",
        {"200": oa.json_response("users", oa.page_of(ADMIN_USER))},
        parameters=[_query("kyc_status", KYC_STATUSES), _query("role", (*SELF_ROLES, "admin")), *oa.PAGE_PARAMS])},
    "/v1/admin/withdrawals": {"get": oa.operation(
        "Every creator's withdrawals, newest first, by status (to pay: status=requested)",
        {"200": oa.json_response("withdrawals", oa.page_of(ADMIN_WITHDRAWAL))},
        parameters=[_query("status", WITHDRAWAL_STATUSES), *oa.PAGE_PARAMS])},
}
