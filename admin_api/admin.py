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
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
import psycopg
from aiohttp import web
from pydantic import BaseModel, BeforeValidator, RootModel, field_validator, model_validator

from oros.connections import as_user
from oros.httperrors import ApiError, conflict, invalid, not_found
from oros.jobs import OwnerJobs
from oros.money import fmt
from oros.wire import Amount, Money, OneOf, Text, Uuid, refuse

from . import idempotency
from .auth import caller
from .pages import Page, PageQuery, page
from .payload import parse, parse_query, path_id, respond
from .routing import Routes
from .typedefs import JOBS, PG_POOL, READ_POOL, SETTINGS
from .users import User, load_user

routes = Routes()

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
WALLET_KEYS = ("platform", "user_id", "wallet_id")  # how a leg may name its wallet, the first given wins


class KycIn(BaseModel):
    status: OneOf(*KYC_STATUSES)


class FundingIn(BaseModel):
    amount: Amount()
    reference: Text(200)


def _leg_list(raw: object) -> object:
    if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_LEGS or not all(isinstance(x, dict) for x in raw):
        refuse(f"must be a list of 2 to {MAX_LEGS} objects")
    return raw


class Leg(BaseModel):
    """One side of an adjustment; its wallet is a platform wallet, a user's main wallet, or a wallet by id."""

    direction: OneOf("credit", "debit")
    amount: Amount()
    platform: OneOf(*ADJUSTABLE_PLATFORM) = None
    user_id: Uuid = None
    wallet_id: Uuid = None

    @model_validator(mode="before")
    @classmethod
    def _one_wallet(cls, leg: Any) -> Any:
        """Keep the first of ``WALLET_KEYS`` the leg gives; without any, ``wallet_id`` is refused as missing."""
        if not isinstance(leg, dict):
            return leg
        named = next((key for key in WALLET_KEYS if key in leg), "wallet_id")
        return {**{k: v for k, v in leg.items() if k not in WALLET_KEYS}, named: leg.get(named)}

    def wallet(self) -> dict:
        return {key: getattr(self, key) for key in WALLET_KEYS if getattr(self, key) is not None}


class AdjustmentIn(BaseModel):
    reason: Text(500)
    legs: Annotated[list[Leg], BeforeValidator(_leg_list)]

    @field_validator("legs")
    @classmethod
    def _balanced(cls, legs: list[Leg]) -> list[Leg]:
        if sum(leg.amount if leg.direction == "credit" else -leg.amount for leg in legs) != 0:
            refuse("must balance: credits must equal debits")
        return legs


class ManualFunding(BaseModel):
    """The funding"""

    id: Uuid
    campaign_id: Uuid
    amount: Money
    method: Literal["manual", "stripe"]
    reference: str | None
    stripe_payment_intent_id: str | None
    status: Literal["pending", "succeeded", "failed"]
    transfer_id: Uuid | None
    created_by: Uuid | None
    created_at: datetime
    succeeded_at: datetime | None


class Entry(BaseModel):
    id: Uuid
    wallet_id: Uuid
    transfer_id: Uuid
    source_type: str
    amount: Money
    direction: Literal["credit", "debit"]
    status: str
    description: str | None
    metadata: dict
    created_at: datetime


class Adjustment(BaseModel):
    """The transfer"""

    transfer_id: Uuid
    reason: str
    entries: list[Entry]


class Check(BaseModel):
    name: str
    ok: bool
    detail: str


class Reconciliation(BaseModel):
    """The checks"""

    ok: bool
    checks: list[Check]


class SettlementReport(RootModel[dict[str, Any]]):
    """Its report"""


RUN_KINDS = ("settle", "release_holds", "reconcile")  # settlement_runs.kind (0004)


class RunsQuery(PageQuery):
    kind: OneOf(*RUN_KINDS) | None = None  # one kind only, e.g. the last reconcile for finance's page


class Run(BaseModel):
    id: Uuid
    kind: Literal[RUN_KINDS]
    status: Literal["running", "succeeded", "failed"]
    dry_run: bool
    watermark_from: datetime | None
    watermark_to: datetime | None
    events_seen: int
    events_paid: int
    events_rejected: int
    amount_paid: Money
    fees: Money
    rejected_by_reason: dict
    report: dict
    error: str | None
    started_at: datetime
    finished_at: datetime | None


class Released(BaseModel):
    """How many ledger entries settled"""

    released: int


async def _admin(request: web.Request):
    return (await caller(request)).require("admin")


@routes.post("/v1/admin/users/{id}/kyc", "Set a user's KYC status", body=KycIn, responses={200: User})
async def set_kyc(request: web.Request) -> web.Response:
    who = await _admin(request)
    user_id = path_id(request)
    status = (await parse(KycIn, request)).status
    async with as_user(request.app[PG_POOL], who.id) as conn:
        try:
            async with conn.transaction():
                await conn.execute("SELECT oros_set_kyc(%(id)s, %(status)s)", {"id": user_id, "status": status})
        except psycopg.errors.NoDataFound:
            raise not_found("user") from None
        user = await load_user(conn, user_id)
    return respond(user)


@routes.post("/v1/admin/campaigns/{id}/funding", "Record funds received off-Stripe for a campaign", body=FundingIn,
             headers=(idempotency.IDEMPOTENCY_KEY,), responses={201: ManualFunding})
async def fund(request: web.Request) -> web.Response:
    """Record money received off-Stripe (a wire, a cheque): escrow and the campaign's budget rise."""
    who = await _admin(request)
    campaign_id = path_id(request)
    body = await parse(FundingIn, request)

    async def record(conn) -> dict:
        try:
            async with conn.transaction():
                return await (await conn.execute(
                    f"SELECT {FUNDING_COLUMNS} FROM oros_admin_fund_campaign(%(c)s, %(amount)s, %(ref)s)",
                    {"c": campaign_id, "amount": body.amount, "ref": body.reference},
                )).fetchone()
        except psycopg.errors.NoDataFound:
            raise not_found("campaign") from None
        except psycopg.errors.ObjectNotInPrerequisiteState:
            raise conflict("campaign_completed", "a completed campaign cannot be funded", "status") from None
        except psycopg.errors.NumericValueOutOfRange:
            raise invalid("amount", "amount would overflow the campaign budget") from None

    return await idempotency.once(request, who.id, record)


@routes.post("/v1/admin/adjustments", "Post a balanced, settled ledger adjustment with a reason", body=AdjustmentIn,
             headers=(idempotency.IDEMPOTENCY_KEY,), responses={201: Adjustment})
async def adjust(request: web.Request) -> web.Response:
    """A balanced, settled transfer with a reason: corrections, goodwill credits, chargebacks."""
    who = await _admin(request)
    body = await parse(AdjustmentIn, request)
    legs = [{**leg.wallet(), "direction": leg.direction, "amount": fmt(leg.amount)} for leg in body.legs]

    async def post(conn) -> dict:
        try:
            async with conn.transaction():
                rows = await (await conn.execute(
                    f"SELECT {LEDGER_COLUMNS} FROM oros_post_adjustment(%(reason)s, %(legs)s::jsonb)",
                    {"reason": body.reason, "legs": orjson.dumps(legs).decode()},
                )).fetchall()
        except psycopg.errors.InvalidParameterValue as exc:
            raise invalid(exc.diag.column_name or "legs", exc.diag.message_primary or "invalid leg") from None
        except psycopg.errors.CheckViolation as exc:
            if exc.diag.constraint_name not in ("positive_available", "positive_pending"):
                raise
            raise ApiError(422, "insufficient_funds", "the adjustment would make a balance negative", "legs") from None
        return {"transfer_id": rows[0]["transfer_id"], "reason": body.reason, "entries": rows}

    return await idempotency.once(request, who.id, post)


async def owner_job(request: web.Request, command: str) -> OwnerJobs:
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


@routes.get("/v1/admin/reconcile", "Check the money invariants", responses={200: Reconciliation})
async def reconcile(request: web.Request) -> web.Response:
    jobs = await owner_job(request, "oros reconcile")
    checks = await asyncio.to_thread(jobs.reconcile, request.app[SETTINGS])
    return respond({"ok": all(c.ok for c in checks), "checks": checks})


@routes.post("/v1/admin/settlements", "Run a settlement now", responses={200: SettlementReport})
async def settle(request: web.Request) -> web.Response:
    jobs = await owner_job(request, "oros settle --once")
    return respond(await asyncio.to_thread(jobs.settle, request.app[SETTINGS]))


@routes.get("/v1/admin/settlements", "Settlement runs (and the scheduler's holds releases and reconciles), newest"
            " first; `kind` keeps one kind", query=RunsQuery, responses={200: Page[Run]})
async def list_settlements(request: web.Request) -> web.Response:
    who = await _admin(request)
    query = parse_query(RunsQuery, request)
    where, params = ["true"], {"limit": query.limit + 1, "kind": query.kind}
    if query.kind is not None:
        where.append("kind = %(kind)s")
    if query.cursor is not None:
        where.append("(started_at, id) < (%(after_at)s, %(after_id)s)")
        params.update(after_at=query.cursor[0], after_id=query.cursor[1])
    # A report of past runs: lag is harmless (POST /v1/admin/settlements answers with its own run).
    async with as_user(request.app[READ_POOL], who.id) as conn:
        rows = await (await conn.execute(
            f"SELECT {RUN_COLUMNS} FROM settlement_runs WHERE {' AND '.join(where)}"
            f" ORDER BY started_at DESC, id DESC LIMIT %(limit)s",
            params,
        )).fetchall()
    return respond(page(rows, query.limit, key="started_at"))


@routes.post("/v1/admin/holds/release", "Release every hold that is due now", responses={200: Released})
async def release_holds(request: web.Request) -> web.Response:
    jobs = await owner_job(request, "oros release-holds --once")
    return respond({"released": await asyncio.to_thread(jobs.release_holds, request.app[SETTINGS])})
