"""Admin endpoints: KYC, off-Stripe funding, ledger adjustments, and the settler's jobs on demand.

Writes run as the admin (``as_user``) through SQL functions that check
``auth.is_admin()`` themselves (``oros_set_kyc``, ``oros_admin_fund_campaign``,
``oros_post_adjustment``); every movement still goes through the ledger's
balanced-transfer trigger. The settler's jobs run only when the entrypoint
handed the app the settler's ``OwnerJobs`` and the API connects as the schema
owner; otherwise (compose) they answer 503 naming the settler command.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson
import psycopg
from aiohttp import web

from oros.connections import as_user
from oros.jobs import OwnerJobs
from oros.money import fmt

from . import idempotency
from . import openapi as oa
from .auth import caller
from .errors import ApiError, conflict, invalid, not_found
from .payload import amount, choice, cursor, limit, page, path_id, read_json, respond, text, uuid_field
from .typedefs import JOBS, PG_POOL, READ_POOL, SETTINGS
from .users import USER, load_user

routes = web.RouteTableDef()

KYC_STATUSES = ("pending", "approved", "rejected")
# Escrow moves only with a campaign's budget (escrow = sum of remaining_budget),
# so a free-standing adjustment may not touch it.
ADJUSTABLE_PLATFORM = ("fees", "clearing")
MAX_LEGS = 20
# Whether this process's database role owns the schema (the settler's jobs write as the owner).
_OWNS_SCHEMA_SQL = ("SELECT pg_has_role(relowner, 'USAGE') AS owner FROM pg_class"
                    " WHERE oid = 'public.ledger_entries'::regclass")
FUNDING_COLUMNS = """id, campaign_id, amount, method, reference, stripe_payment_intent_id, status, transfer_id,
    created_by, created_at, succeeded_at"""
RUN_COLUMNS = """id, kind, status, dry_run, watermark_from, watermark_to, events_seen, events_paid, events_rejected,
    amount_paid, fees, rejected_by_reason, report, error, started_at, finished_at"""
LEDGER_COLUMNS = "id, wallet_id, transfer_id, source_type, amount, direction, status, description, metadata, created_at"


async def _admin(request: web.Request):
    return (await caller(request)).require("admin")


@routes.post("/v1/admin/users/{id}/kyc")
async def set_kyc(request: web.Request) -> web.Response:
    who = await _admin(request)
    user_id = path_id(request)
    status = choice(await read_json(request), "status", KYC_STATUSES)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        try:
            async with conn.transaction():
                await conn.execute("SELECT oros_set_kyc(%(id)s, %(status)s)", {"id": user_id, "status": status})
        except psycopg.errors.NoDataFound:
            raise not_found("user") from None
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
    async with as_user(request.app[PG_POOL], who.id) as conn:
        if (prior := await idempotency.replay(conn, who.id, idem)) is not None:
            return prior
        try:
            async with conn.transaction():
                row = await (await conn.execute(
                    f"SELECT {FUNDING_COLUMNS} FROM oros_admin_fund_campaign(%(c)s, %(amount)s, %(ref)s)",
                    {"c": campaign_id, "amount": value, "ref": reference},
                )).fetchone()
        except psycopg.errors.NoDataFound:
            raise not_found("campaign") from None
        except psycopg.errors.ObjectNotInPrerequisiteState:
            raise conflict("campaign_completed", "a completed campaign cannot be funded", "status") from None
        except psycopg.errors.NumericValueOutOfRange:
            raise invalid("amount", "amount would overflow the campaign budget") from None
        await idempotency.remember(conn, who.id, idem, 201, row)
    return respond(row, 201)


def _legs(body: dict) -> list[dict]:
    """The legs as ``oros_post_adjustment`` takes them; each refusal here names its field (SQL checks again)."""
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
        parsed.append({**_leg_wallet(leg, i), "direction": direction, "amount": fmt(value)})
    if balance != 0:
        raise invalid("legs", "credits must equal debits")
    return parsed


def _leg_wallet(leg: dict, i: int) -> dict:
    """A leg names its wallet by platform purpose, else by user_id (their main wallet), else by wallet_id."""
    if "platform" in leg:
        if leg["platform"] not in ADJUSTABLE_PLATFORM:
            raise invalid(f"legs[{i}].platform", f"platform must be one of {', '.join(ADJUSTABLE_PLATFORM)}")
        return {"platform": leg["platform"]}
    if "user_id" in leg:
        return {"user_id": uuid_field(leg, "user_id")}
    return {"wallet_id": uuid_field(leg, "wallet_id")}


@routes.post("/v1/admin/adjustments")
async def adjust(request: web.Request) -> web.Response:
    """A balanced, settled transfer with a reason: corrections, goodwill credits, chargebacks."""
    who = await _admin(request)
    body = await read_json(request)
    reason = text(body, "reason", required=True, max_len=500)
    legs = _legs(body)
    idem = await idempotency.request_key(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        if (prior := await idempotency.replay(conn, who.id, idem)) is not None:
            return prior
        try:
            async with conn.transaction():
                rows = await (await conn.execute(
                    f"SELECT {LEDGER_COLUMNS} FROM oros_post_adjustment(%(reason)s, %(legs)s::jsonb)",
                    {"reason": reason, "legs": orjson.dumps(legs).decode()},
                )).fetchall()
        except psycopg.errors.InvalidParameterValue as exc:
            raise invalid(exc.diag.column_name or "legs", exc.diag.message_primary or "invalid leg") from None
        except psycopg.errors.CheckViolation as exc:
            if exc.diag.constraint_name not in ("positive_available", "positive_pending"):
                raise
            raise ApiError(422, "insufficient_funds", "the adjustment would make a balance negative", "legs") from None
        result = {"transfer_id": rows[0]["transfer_id"], "reason": reason, "entries": rows}
        await idempotency.remember(conn, who.id, idem, 201, result)
    return respond(result, 201)


async def _owner_job(request: web.Request, command: str) -> OwnerJobs:
    """The settler's jobs, when this API has them and connects as the schema owner (embedded ``oros dev``)."""
    await _admin(request)
    jobs = request.app[JOBS]
    if jobs is not None:
        async with request.app[PG_POOL].connection() as conn:
            if (await (await conn.execute(_OWNS_SCHEMA_SQL)).fetchone())["owner"]:
                return jobs
    raise ApiError(503, "runs_in_settler",
                   f"this API does not run the settler's jobs (its database role does not own the schema);"
                   f" the settler process runs this job on its schedule, or run `{command}` where it runs")


@routes.get("/v1/admin/reconcile")
async def reconcile(request: web.Request) -> web.Response:
    jobs = await _owner_job(request, "oros reconcile")
    checks = await asyncio.to_thread(jobs.reconcile, request.app[SETTINGS])
    return respond({"ok": all(c.ok for c in checks), "checks": checks})


@routes.post("/v1/admin/settlements")
async def settle(request: web.Request) -> web.Response:
    jobs = await _owner_job(request, "oros settle --once")
    return respond(await asyncio.to_thread(jobs.settle, request.app[SETTINGS]))


@routes.get("/v1/admin/settlements")
async def list_settlements(request: web.Request) -> web.Response:
    who = await _admin(request)
    size, after = limit(request), cursor(request)
    where, params = ["true"], {"limit": size + 1}
    if after is not None:
        where.append("(started_at, id) < (%(after_at)s, %(after_id)s)")
        params.update(after_at=after[0], after_id=after[1])
    # A report of past runs: lag is harmless (POST /v1/admin/settlements answers with its own run).
    async with as_user(request.app[READ_POOL], who.id) as conn:
        rows = await (await conn.execute(
            f"SELECT {RUN_COLUMNS} FROM settlement_runs WHERE {' AND '.join(where)}"
            f" ORDER BY started_at DESC, id DESC LIMIT %(limit)s",
            params,
        )).fetchall()
    return respond(page(rows, size, key="started_at"))


@routes.post("/v1/admin/holds/release")
async def release_holds(request: web.Request) -> web.Response:
    jobs = await _owner_job(request, "oros release-holds --once")
    return respond({"released": await asyncio.to_thread(jobs.release_holds, request.app[SETTINGS])})


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
                                  "legs": {"type": "array", "minItems": 2, "items": LEG}}, ["reason", "legs"])),
        parameters=[idempotency.OPENAPI_PARAMETER])},
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
