"""Admin endpoints: KYC, off-Stripe funding, ledger adjustments, and the settler's jobs on demand.

Money operations run as the database owner once the caller is known to be an
admin (they touch platform wallets no user role may write); every movement
still goes through the ledger's balanced-transfer trigger.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import orjson
import psycopg
from aiohttp import web

from oros.connections import as_user

from . import idempotency
from . import openapi as oa
from .auth import caller
from .errors import ApiError, conflict, invalid, not_found
from .payload import amount, choice, cursor, limit, page, path_id, read_json, respond, text, uuid_field
from .typedefs import PG_POOL, SETTINGS
from .users import USER, load_user

routes = web.RouteTableDef()

KYC_STATUSES = ("pending", "approved", "rejected")
# Escrow moves only with a campaign's budget (escrow = sum of remaining_budget),
# so a free-standing adjustment may not touch it.
ADJUSTABLE_PLATFORM = ("fees", "clearing")
MAX_LEGS = 20
FUNDING_COLUMNS = """id, campaign_id, amount, method, reference, stripe_payment_intent_id, status, transfer_id,
    created_by, created_at, succeeded_at"""
RUN_COLUMNS = """id, kind, status, dry_run, watermark_from, watermark_to, events_seen, events_paid, events_rejected,
    amount_paid, fees, rejected_by_reason, report, error, started_at, finished_at"""
LEDGER_COLUMNS = "id, wallet_id, transfer_id, source_type, amount, direction, status, description, metadata, created_at"


async def _admin(request: web.Request):
    return (await caller(request)).require("admin")


@routes.post("/v1/admin/users/{id}/kyc")
async def set_kyc(request: web.Request) -> web.Response:
    await _admin(request)
    user_id = path_id(request)
    status = choice(await read_json(request), "status", KYC_STATUSES)
    async with request.app[PG_POOL].connection() as conn, conn.transaction():
        updated = await conn.execute(
            "UPDATE users SET kyc_status = %(status)s WHERE id = %(id)s AND NOT is_system",
            {"status": status, "id": user_id},
        )
        if updated.rowcount == 0:
            raise not_found("user")
        user = await load_user(conn, user_id)
    return respond(user)


@routes.post("/v1/admin/campaigns/{id}/funding")
async def fund(request: web.Request) -> web.Response:
    """Record money received off-Stripe (a wire, a cheque): escrow and the campaign's budget rise."""
    who = await _admin(request)
    campaign_id = path_id(request)
    body = await read_json(request)
    value = amount(body, "amount")
    reference = text(body, "reference", required=True, max_len=200)
    idem = await idempotency.request_key(request)
    async with request.app[PG_POOL].connection() as conn, conn.transaction():
        if (prior := await idempotency.replay(conn, who.id, idem)) is not None:
            return prior
        campaign = await (await conn.execute(
            "SELECT status, funded_budget FROM campaigns WHERE id = %(id)s FOR UPDATE", {"id": campaign_id}
        )).fetchone()
        if campaign is None:
            raise not_found("campaign")
        if campaign["status"] == "completed":
            raise conflict("campaign_completed", "a completed campaign cannot be funded", "status")
        if campaign["funded_budget"] + value > Decimal("9999999999.99"):
            raise invalid("amount", "amount would overflow the campaign budget")
        funding_id = (await (await conn.execute(
            "SELECT oros_fund_campaign(%(c)s, %(amount)s, 'manual', %(ref)s, %(by)s) AS id",
            {"c": campaign_id, "amount": value, "ref": reference, "by": who.id},
        )).fetchone())["id"]
        row = await (await conn.execute(
            f"SELECT {FUNDING_COLUMNS} FROM campaign_fundings WHERE id = %(id)s", {"id": funding_id}
        )).fetchone()
        await idempotency.remember(conn, who.id, idem, 201, row)
    return respond(row, 201)


async def _leg_wallet(conn, leg: dict, i: int) -> str:
    """A leg names its wallet by wallet_id, by user_id (their main wallet) or by platform purpose."""
    field = f"legs[{i}]"
    if "platform" in leg:
        purpose = leg["platform"]
        if purpose not in ADJUSTABLE_PLATFORM:
            raise invalid(f"{field}.platform", f"platform must be one of {', '.join(ADJUSTABLE_PLATFORM)}")
        sql, params = "SELECT oros_platform_wallet(%(p)s) AS id", {"p": purpose}
    elif "user_id" in leg:
        user_id = uuid_field(leg, "user_id")
        sql, params = ("SELECT w.id FROM wallets w JOIN users u ON u.id = w.user_id"
                       " WHERE w.user_id = %(u)s AND w.purpose = 'main' AND NOT u.is_system"), {"u": user_id}
    else:
        wallet_id = uuid_field(leg, "wallet_id")
        sql, params = "SELECT id FROM wallets WHERE id = %(w)s AND purpose <> 'escrow'", {"w": wallet_id}
    row = await (await conn.execute(sql, params)).fetchone()
    if row is None or row["id"] is None:
        raise invalid(field, f"{field} names no adjustable wallet")
    return row["id"]


def _legs(body: dict) -> list[dict]:
    legs = body.get("legs")
    if not isinstance(legs, list) or not 2 <= len(legs) <= MAX_LEGS or not all(isinstance(x, dict) for x in legs):
        raise invalid("legs", f"legs must be a list of 2 to {MAX_LEGS} objects")
    parsed, balance = [], Decimal(0)
    for i, leg in enumerate(legs):
        direction = leg.get("direction")
        if direction not in ("credit", "debit"):
            raise invalid(f"legs[{i}].direction", "direction must be credit or debit")
        try:
            value = amount(leg, "amount")
        except ApiError as exc:
            raise invalid(f"legs[{i}].amount", exc.message) from None
        balance += value if direction == "credit" else -value
        parsed.append({**leg, "direction": direction, "amount": value})
    if balance != 0:
        raise invalid("legs", "credits must equal debits")
    return parsed


@routes.post("/v1/admin/adjustments")
async def adjust(request: web.Request) -> web.Response:
    """A balanced, settled transfer with a reason: corrections, goodwill credits, chargebacks."""
    who = await _admin(request)
    body = await read_json(request)
    reason = text(body, "reason", required=True, max_len=500)
    legs = _legs(body)
    transfer_id = str(uuid.uuid4())
    metadata = orjson.dumps({"reason": reason, "admin_id": who.id}).decode()
    async with request.app[PG_POOL].connection() as conn:
        try:
            async with conn.transaction():
                wallets = [await _leg_wallet(conn, leg, i) for i, leg in enumerate(legs)]
                # One statement: the ledger trigger checks the whole transfer balances.
                values = ", ".join(
                    f"(%(w{i})s, %(t)s, 'adjustment', %(a{i})s, %(d{i})s, 'settled', %(reason)s, %(meta)s::jsonb)"
                    for i in range(len(legs))
                )
                params = {"t": transfer_id, "reason": reason, "meta": metadata}
                for i, (leg, wallet) in enumerate(zip(legs, wallets)):
                    params.update({f"w{i}": wallet, f"a{i}": leg["amount"], f"d{i}": leg["direction"]})
                rows = await (await conn.execute(
                    "INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, amount, direction, status,"
                    f" description, metadata) VALUES {values} RETURNING {LEDGER_COLUMNS}",
                    params,
                )).fetchall()
        except psycopg.errors.CheckViolation as exc:
            if exc.diag.constraint_name not in ("positive_available", "positive_pending"):
                raise
            raise ApiError(422, "insufficient_funds", "the adjustment would make a balance negative", "legs") from None
    return respond({"transfer_id": transfer_id, "reason": reason, "entries": rows}, 201)


@routes.get("/v1/admin/reconcile")
async def reconcile(request: web.Request) -> web.Response:
    await _admin(request)
    # Imported on use: the settler loads ClickHouse machinery the API otherwise never needs.
    from settler.reconcile import reconcile as run_reconcile

    checks = await asyncio.to_thread(run_reconcile, request.app[SETTINGS])
    return respond({"ok": all(c.ok for c in checks), "checks": checks})


@routes.post("/v1/admin/settlements")
async def settle(request: web.Request) -> web.Response:
    await _admin(request)
    from settler.run import settle_once

    return respond(await asyncio.to_thread(settle_once, request.app[SETTINGS]))


@routes.get("/v1/admin/settlements")
async def list_settlements(request: web.Request) -> web.Response:
    who = await _admin(request)
    size, after = limit(request), cursor(request)
    where, params = ["true"], {"limit": size + 1}
    if after is not None:
        where.append("(started_at, id) < (%(after_at)s, %(after_id)s)")
        params.update(after_at=after[0], after_id=after[1])
    async with as_user(request.app[PG_POOL], who.id) as conn:
        rows = await (await conn.execute(
            f"SELECT {RUN_COLUMNS} FROM settlement_runs WHERE {' AND '.join(where)}"
            f" ORDER BY started_at DESC, id DESC LIMIT %(limit)s",
            params,
        )).fetchall()
    return respond(page(rows, size, key="started_at"))


@routes.post("/v1/admin/holds/release")
async def release_holds(request: web.Request) -> web.Response:
    await _admin(request)
    from settler.holds import release_due

    return respond({"released": await asyncio.to_thread(release_due, request.app[SETTINGS])})


FUNDING = oa.obj({
    "id": oa.UUID, "campaign_id": oa.UUID, "amount": oa.MONEY, "method": {"enum": ["manual", "stripe"]},
    "reference": oa.nullable({"type": "string"}), "stripe_payment_intent_id": oa.nullable({"type": "string"}),
    "status": {"enum": ["pending", "succeeded", "failed"]}, "transfer_id": oa.nullable(oa.UUID),
    "created_by": oa.nullable(oa.UUID), "created_at": oa.TIMESTAMP, "succeeded_at": oa.nullable(oa.TIMESTAMP),
}, ["id", "campaign_id", "amount", "status"])
LEG = {"type": "object", "required": ["direction", "amount"], "properties": {
    "wallet_id": oa.UUID, "user_id": oa.UUID, "platform": {"enum": list(ADJUSTABLE_PLATFORM)},
    "direction": {"enum": ["credit", "debit"]}, "amount": oa.AMOUNT}}
ENTRY = oa.obj({
    "id": oa.UUID, "wallet_id": oa.UUID, "transfer_id": oa.UUID, "source_type": {"type": "string"},
    "amount": oa.MONEY, "direction": {"enum": ["credit", "debit"]}, "status": {"type": "string"},
    "description": oa.nullable({"type": "string"}), "metadata": {"type": "object"}, "created_at": oa.TIMESTAMP,
}, ["id", "wallet_id", "amount", "direction"])
RUN = oa.obj({
    "id": oa.UUID, "kind": {"type": "string"}, "status": {"type": "string"}, "dry_run": {"type": "boolean"},
    "watermark_from": oa.nullable(oa.TIMESTAMP), "watermark_to": oa.nullable(oa.TIMESTAMP),
    "events_seen": {"type": "integer"}, "events_paid": {"type": "integer"}, "events_rejected": {"type": "integer"},
    "amount_paid": oa.MONEY, "fees": oa.MONEY, "rejected_by_reason": {"type": "object"}, "report": {"type": "object"},
    "error": oa.nullable({"type": "string"}), "started_at": oa.TIMESTAMP, "finished_at": oa.nullable(oa.TIMESTAMP),
}, ["id", "kind", "status"])
RECONCILE = oa.obj({"ok": {"type": "boolean"}, "checks": {"type": "array", "items": oa.obj(
    {"name": {"type": "string"}, "ok": {"type": "boolean"}, "detail": {"type": "string"}},
    ["name", "ok", "detail"])}}, ["ok", "checks"])
ANY_OBJECT = {"type": "object"}

OPENAPI = {
    "/v1/admin/users/{id}/kyc": {"post": oa.operation(
        "Set a user's KYC status", {"200": oa.json_response("the user", USER)},
        body=oa.json_body(oa.obj({"status": {"enum": list(KYC_STATUSES)}}, ["status"])),
        parameters=[oa.path_param()])},
    "/v1/admin/campaigns/{id}/funding": {"post": oa.operation(
        "Record funds received off-Stripe for a campaign", {"201": oa.json_response("the funding", FUNDING)},
        body=oa.json_body(oa.obj({"amount": oa.AMOUNT, "reference": {"type": "string", "minLength": 1}},
                                 ["amount", "reference"])),
        parameters=[oa.path_param(), idempotency.OPENAPI_PARAMETER])},
    "/v1/admin/adjustments": {"post": oa.operation(
        "Post a balanced, settled ledger adjustment with a reason",
        {"201": oa.json_response("the transfer", oa.obj(
            {"transfer_id": oa.UUID, "reason": {"type": "string"}, "entries": {"type": "array", "items": ENTRY}},
            ["transfer_id", "reason", "entries"]))},
        body=oa.json_body(oa.obj({"reason": {"type": "string", "minLength": 1},
                                  "legs": {"type": "array", "minItems": 2, "items": LEG}}, ["reason", "legs"])))},
    "/v1/admin/reconcile": {"get": oa.operation(
        "Check the money invariants", {"200": oa.json_response("the checks", RECONCILE)})},
    "/v1/admin/settlements": {
        "post": oa.operation("Run a settlement now", {"200": oa.json_response("its report", ANY_OBJECT)}),
        "get": oa.operation("Settlement runs, newest first",
                            {"200": oa.json_response("runs", oa.page_of(RUN))}, parameters=oa.PAGE_PARAMS),
    },
    "/v1/admin/holds/release": {"post": oa.operation(
        "Release every hold that is due now", {"200": oa.json_response(
            "how many ledger entries settled", oa.obj({"released": {"type": "integer"}}, ["released"]))})},
}
