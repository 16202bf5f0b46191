"""A completed campaign's unspent budget given back: ``POST /v1/campaigns/{id}/refund-unspent``, and its refunds.

``oros_refund_unspent`` (sql/postgres/0106) decides and books it all in one
transaction, as the caller (the campaign's business, or an admin): the
boosters' unspent money pro rata to what each boost still holds, the rest
to the business's fundings newest first; escrow and the budget fall to 0.
The card refunds it issued are then sent to Stripe (``oros.issued_refunds``,
in a thread: it is the settler's refunds job's code too, which retries any
that failed). The answer lists the refunds as booked (``pending``: to be
sent to Stripe); ``GET /v1/campaigns/{id}/refunds`` shows where each stands.
An ``Idempotency-Key`` returns the first answer to a retry; without one, a
second call finds nothing left to give back (``refunds: []``), unless money
came back into the campaign since.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from decimal import Decimal
from typing import Literal

import orjson
import psycopg
from aiohttp import web
from pydantic import BaseModel, Field

from oros import issued_refunds
from oros.connections import as_user
from oros.httperrors import ApiError, not_found
from oros.money import fmt
from oros.wire import Money, Uuid

from . import idempotency
from .auth import caller
from .pages import Page, PageQuery, fetch_page
from .payload import parse_query, path_id, respond
from .routing import Routes
from .typedefs import PG_POOL, SETTINGS

log = logging.getLogger(__name__)

routes = Routes()

REASONS = ("unspent", "campaign_not_active", "budget_overflow")
STATUSES = ("pending", "succeeded", "manual")
REFUND_COLUMNS = """id, campaign_id, reason, funding_id, boost_id, boost_intent_id, payment_intent_id, amount, status,
    note, stripe_refund_id, attempts, last_error, created_at, finished_at"""
_REFUND_SQL = f"SELECT {REFUND_COLUMNS} FROM oros_refund_unspent(%(id)s)"
_VISIBLE_SQL = "SELECT business_id::text AS business_id FROM campaigns WHERE id = %(id)s"
# Why refund-unspent cannot run now (oros_refund_unspent's hints), as the API answers it.
BLOCKERS = {
    "campaign_not_completed": "only a completed campaign gives its unspent budget back; complete it first",
    "settlement_pending": "the campaign's last events are not settled yet; retry after the next settlement",
}
RETRY_AFTER_S = 60  # about one settlement interval


class IssuedRefund(BaseModel):
    """A refund OROS issued: to a card through Stripe, or for finance to return by hand (manual)"""

    id: Uuid
    campaign_id: Uuid
    reason: Literal[REASONS]
    funding_id: Uuid | None = Field(description="the business's funding it goes back to")
    boost_id: Uuid | None = Field(description="the boost it goes back to")
    boost_intent_id: Uuid | None = Field(description="a boost refunded at once, never credited")
    payment_intent_id: str | None
    amount: Money
    status: Literal[STATUSES]
    note: str | None = Field(description="why it is manual")
    stripe_refund_id: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


class UnspentRefunded(BaseModel):
    """What was given back, as booked"""

    campaign_id: Uuid
    refunded: Money
    to_boosters: Money
    to_business: Money
    refunds: list[IssuedRefund]


@routes.post("/v1/campaigns/{id}/refund-unspent", "Give a completed campaign's unspent budget back (its business): "
             "boosters' unspent money pro rata, the rest to the business's card payments, newest first",
             headers=(idempotency.IDEMPOTENCY_KEY,), responses={200: UnspentRefunded})
async def refund_unspent(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business")
    campaign_id = path_id(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        campaign = await (await conn.execute(_VISIBLE_SQL, {"id": campaign_id})).fetchone()
    if campaign is None or (campaign["business_id"] != who.id and not who.is_admin):
        raise not_found("campaign")

    async def act(conn: psycopg.AsyncConnection) -> dict:
        try:
            async with conn.transaction():
                rows = await (await conn.execute(_REFUND_SQL, {"id": campaign_id})).fetchall()
        except psycopg.errors.ObjectNotInPrerequisiteState as exc:
            code = exc.diag.message_hint
            raise ApiError(409, code, BLOCKERS[code], "status",
                           retry_after_s=RETRY_AFTER_S if code == "settlement_pending" else None) from None
        except psycopg.errors.NoDataFound:
            raise not_found("campaign") from None
        boosters = sum((r["amount"] for r in rows if r["boost_id"] is not None), Decimal("0.00"))
        total = sum((r["amount"] for r in rows), Decimal("0.00"))
        return {"campaign_id": campaign_id, "refunded": fmt(total), "to_boosters": fmt(boosters),
                "to_business": fmt(total - boosters), "refunds": [_refund(r) for r in rows]}

    answer = await idempotency.once(request, who.id, act, status=200)
    await send_refunds(request, [r["id"] for r in _booked(answer)])
    return answer


def _booked(answer: web.Response) -> list[dict]:
    """The refunds an answer (this request's, or the stored first one) left for Stripe."""
    refunds = orjson.loads(answer.body).get("refunds", []) if answer.status == 200 else []
    return [r for r in refunds if r["status"] == "pending"]


async def send_refunds(request: web.Request, ids: list[str]) -> None:
    """Send issued refunds to Stripe now; whatever fails stays pending for the settler's refunds job."""
    pending = [str(i) for i in ids]
    if not pending:
        return
    try:
        await asyncio.to_thread(issued_refunds.send, request.app[SETTINGS], pending)
    except (psycopg.Error, OSError):
        log.warning("sending refunds failed; the refunds job retries them", exc_info=True,
                    extra={"refunds": pending})


def _refund(row: dict) -> dict:
    return {**row, "amount": fmt(row["amount"])}


@routes.get("/v1/campaigns/{id}/refunds", "Refunds issued for a campaign, newest first (its business; a booster "
            "sees its own)", query=PageQuery, responses={200: Page[IssuedRefund]})
async def list_refunds(request: web.Request) -> web.Response:
    who = await caller(request)
    campaign_id = path_id(request)
    query = parse_query(PageQuery, request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        page = await fetch_page(conn, f"SELECT {REFUND_COLUMNS} FROM issued_refunds", ["campaign_id = %(c)s"],
                                {"c": campaign_id}, query)
    page["items"] = [_refund(r) for r in page["items"]]
    return respond(page)
