"""Live shopping: a creator's live events, their live links, and the sales made during them (docs/live.md).

A creator accepted on an active campaign schedules a live event; the event
and its live link (a tracking link bound to it, to the campaign's landing
page) are opened together by ``oros_open_live_event`` (sql/postgres/0115),
which checks the caller again. ``start``, ``end`` and ``cancel`` move it
along scheduled → live → ended (or scheduled → canceled) on the database's
clock; the campaign's business may set a commission percent while it is
scheduled. Viewers arrive through the live link and are clicks like any
other. Sales: the business posts them with its API key (appended to the
event stream with the live link, as the tracker appends a conversion), or a
Stripe checkout carries a click through the live link; the settler pays
them (``settler.live``). The event's parties list its paid sales, and its
business refunds one whole from its session (a ``refund`` event appended to
the stream, as the tracker's conversions API appends one; the settler
reverses the sale while its commission is held). Nothing here moves money.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

import psycopg
from aiohttp import web
from pydantic import BaseModel, Field

from oros import clickindex, orders, stream
from oros.connections import as_user
from oros.events import Event, uuid7_str
from oros.httperrors import ApiError, conflict, forbidden, invalid, not_found
from oros.links import LINK_SQL, LinkInfo, publish
from oros.money import fmt, plain_decimal_text
from oros.wire import Amount, Money, OneOf, OrderId, Text, Timestamp, Uuid, refuse, rule

from . import idempotency, names, reports
from .auth import caller
from .campaigns import CODE_ATTEMPTS, CODE_BYTES, optional_caller
from .pages import Page, PageQuery, fetch_page
from .payload import parse, parse_query, path_id, respond
from .routing import Routes
from .typedefs import PG_POOL, READ_POOL, REDIS, SETTINGS

log = logging.getLogger(__name__)
routes = Routes()

STATUSES = ("scheduled", "live", "ended", "canceled")
# What the ledger books: one currency (docs/stripe.md); a subset of the currencies oros.events accepts.
CURRENCIES = ("USD",)
# The edges' clocks against the database's: a live link's first clicks may be stamped a little before it exists.
CLOCK_SKEW = timedelta(minutes=5)

EVENT_COLUMNS = """e.id, e.creator_id, e.campaign_id, e.title, e.status, e.scheduled_at, e.started_at, e.ended_at,
    e.commission_pct, e.created_at, l.link_id, l.code, l.url"""
EVENT_SQL = f"""
SELECT {EVENT_COLUMNS}, c.business_id FROM live_events e
  JOIN live_event_links l ON l.live_event_id = e.id
  LEFT JOIN campaigns c ON c.id = e.campaign_id
 WHERE e.id = %(id)s
"""
_OPEN_SQL = "SELECT oros_open_live_event(%(campaign)s, %(title)s, %(starts_at)s, %(code)s, %(url)s) AS id"
_MOVE_SQL = "SELECT oros_move_live_event(%(id)s, %(to)s)"
_COMMISSION_SQL = "SELECT oros_set_live_commission(%(id)s, %(pct)s)"
# What the settler paid (RLS: the creator's, the campaign's business's).
_SALES_SQL = """
SELECT count(*) FILTER (WHERE status = 'paid') AS paid, count(*) FILTER (WHERE status = 'refunded') AS refunded,
       coalesce(sum(amount) FILTER (WHERE status = 'paid'), 0) AS gmv, coalesce(sum(commission), 0) AS commission,
       coalesce(sum(commission - platform_fee), 0) AS creator_net
  FROM live_sales WHERE live_event_id = %(id)s
"""
_PAID_ORDER_SQL = "SELECT event_id::text FROM live_sales WHERE live_event_id = %(id)s AND order_id = %(order)s"
SALE_COLUMNS = "id, live_event_id, order_id, amount, currency, commission, platform_fee, status, created_at"
_SALE_SQL = f"SELECT {SALE_COLUMNS} FROM live_sales WHERE id = %(sale)s AND live_event_id = %(id)s"
_HOLDS_SQL = "SELECT id, held_until FROM oros_live_sale_holds(%(ids)s::uuid[])"


def _pct(raw: object) -> Decimal | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        refuse("must be a decimal string or a whole number, or null")
    if isinstance(raw, str) and not plain_decimal_text(raw):
        refuse("must be a decimal string of ASCII digits")
    try:
        value = Decimal(str(raw))
    except ArithmeticError:
        refuse("must be a decimal number")
    if not value.is_finite() or value <= 0 or value > 100 or value != round(value, 2):
        refuse("must be a percent above 0 and at most 100, with at most two decimals")
    return value


Percent = rule(Decimal, _pct, {"anyOf": [{"type": "string", "pattern": r"^\d{1,3}(\.\d{1,2})?$"},
                                         {"type": "integer", "minimum": 1, "maximum": 100}, {"type": "null"}]})


class LiveEventIn(BaseModel):
    campaign_id: Uuid
    title: Text(200)
    starts_at: Timestamp(range(2000, 3000)) = Field(description="when the event is scheduled to start")


class LiveEventPatch(BaseModel):
    commission_pct: Percent = Field(description="the campaign's business only, while the event is scheduled: "
                                                "pay this percent of each sale's amount instead of the campaign's "
                                                "payout per sale; null pays the payout")


class LiveLink(BaseModel):
    code: str
    url: str = Field(description="the live link viewers arrive through")


class LiveEvent(BaseModel):
    """A live event as everyone sees it"""

    id: Uuid
    creator_id: Uuid
    creator_name: str | None = Field(None, description="the creator's display name, else username (null when it "
                                                       "has neither)")
    campaign_id: Uuid | None
    title: str
    status: Literal[STATUSES]
    scheduled_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    created_at: datetime
    link: LiveLink


class Viewers(BaseModel):
    clicks: int = Field(description="every click through the live link (ClickHouse, as it happens)")
    unique: int = Field(description="unique visitors among the clicks the settler decided")
    bot: int


class LiveSales(BaseModel):
    reported: int = Field(description="sales reported through the live link (ClickHouse, before settlement)")
    reported_value: Money
    paid: int = Field(description="sales the settler paid and no refund took back whole")
    refunded: int
    gmv: Money = Field(description="the amount of the paid sales")
    commission: Money = Field(description="what the campaign pays for them, refunds deducted")
    creator_net: Money = Field(description="the creator's part of the commission, after the platform fee")


class LiveEventDetail(LiveEvent):
    """The creator and the campaign's business also see the commission, the viewers and the sales"""

    commission_pct: Money | None = None
    viewers: Viewers | None = None
    sales: LiveSales | None = None


class LiveEventsQuery(PageQuery):
    status: OneOf(*STATUSES) = None


class LiveSaleIn(BaseModel):
    order_id: OrderId
    amount: Amount()
    currency: OneOf(*CURRENCIES) = "USD"
    click_id: Uuid = Field(None, description="the buyer's click through the live link (oros_cid), if known")


class LiveSale(BaseModel):
    """A sale the settler paid (its creator and the campaign's business see them)"""

    id: Uuid
    live_event_id: Uuid
    order_id: str
    amount: Money
    currency: str
    commission: Money = Field(description="what it pays now, refunds deducted")
    platform_fee: Money
    status: Literal["pending", "paid", "refunded"] = Field(description="refunded: a refund took all of it")
    created_at: datetime
    held_until: datetime | None = Field(
        description="until when its commission is held, so a refund reverses it (until the hold is released, "
                    "even when this time has passed); null once it was released (a refund then stands: "
                    "refund_after_hold) or nothing is left of it")


class LiveSaleRefundAccepted(BaseModel):
    event_id: Uuid = Field(description="the refund event; the next settlement reverses the sale while its "
                                       "commission is held (after the hold it stands: refund_after_hold)")
    duplicate: bool = Field(False, description="the sale's full refund was already recorded: event_id is that "
                                               "refund's")


class LiveSaleAccepted(BaseModel):
    event_id: Uuid
    duplicate: bool = Field(False, description="the order was already paid as a sale of this event")


def _public(row: dict) -> dict:
    return {**{k: row[k] for k in ("id", "creator_id", "creator_name", "campaign_id", "title", "status",
                                   "scheduled_at", "started_at", "ended_at", "created_at")},
            "link": {"code": row["code"], "url": row["url"]}}


async def _event(conn, event_id: str, *, named: bool = False) -> dict:
    """The event; ``named`` adds its creator's name (for an answer that shows it)."""
    row = await (await conn.execute(EVENT_SQL, {"id": event_id})).fetchone()
    if row is None:
        raise not_found("live event")
    return (await names.attach(conn, [row], "creator_id", "creator_name"))[0] if named else row


def _refused(exc: psycopg.Error, what: str) -> ApiError:
    """What a lifecycle function's refusal means to the caller."""
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return forbidden(what)
    return conflict("invalid_state", exc.diag.message_primary, "status")


@routes.post("/v1/live-events", "Schedule a live event and its live link (creator accepted on the active campaign)",
             body=LiveEventIn, responses={201: LiveEvent})
async def create_live_event(request: web.Request) -> web.Response:
    who = (await caller(request)).require("creator")
    body = await parse(LiveEventIn, request)
    settings = request.app[SETTINGS]
    async with as_user(request.app[PG_POOL], who.id) as conn:
        event_id = await _open(conn, body, settings.tracker_url)
        row = await _event(conn, event_id, named=True)
        info = await (await conn.execute(LINK_SQL, {"code": row["code"]})).fetchone()
    try:
        await publish(request.app[REDIS], settings.keys, [row["code"]], {row["code"]: LinkInfo(**info)})
    except stream.REDIS_ERRORS:  # the tracker finds the link in Postgres on its first click
        log.warning("live link publish failed", exc_info=True)
    return respond(_public(row), 201)


async def _open(conn, body: LiveEventIn, tracker_url: str) -> str:
    for _ in range(CODE_ATTEMPTS):
        code = secrets.token_urlsafe(CODE_BYTES)
        try:
            async with conn.transaction():
                return str((await (await conn.execute(_OPEN_SQL, {
                    "campaign": body.campaign_id, "title": body.title, "starts_at": body.starts_at, "code": code,
                    "url": f"{tracker_url}/{code}"})).fetchone())["id"])
        except psycopg.errors.UniqueViolation:
            log.warning("link code collision, retrying")
        except psycopg.errors.InsufficientPrivilege:
            raise forbidden("only a creator accepted on this campaign may schedule a live event on it") from None
        except psycopg.errors.ObjectNotInPrerequisiteState as exc:
            raise conflict("campaign_not_active" if exc.diag.message_hint != "no_destination" else "no_destination",
                           exc.diag.message_primary, "campaign_id") from None
    raise ApiError(503, "code_space_exhausted", "could not allocate a unique link code; retry")


@routes.get("/v1/live-events", "The caller's live events: a creator's own, a business's campaigns'",
            query=LiveEventsQuery, responses={200: Page[LiveEvent]})
async def list_live_events(request: web.Request) -> web.Response:
    who = await caller(request)
    query = parse_query(LiveEventsQuery, request)
    where = ["(creator_id = %(me)s OR campaign_id IN (SELECT id FROM campaigns WHERE business_id = %(me)s))"]
    if query.status:
        where.append("status = %(status)s")
    async with as_user(request.app[PG_POOL], who.id) as conn:
        result = await fetch_page(
            conn, f"SELECT * FROM (SELECT {EVENT_COLUMNS} FROM live_events e"
                  " JOIN live_event_links l ON l.live_event_id = e.id) AS mine",
            where, {"me": who.id, "status": query.status}, query)
        await names.attach(conn, result["items"], "creator_id", "creator_name")
    return respond({**result, "items": [_public(r) for r in result["items"]]})


@routes.get("/v1/live-events/{id}", "One live event; its creator and the campaign's business also see its "
            "commission, viewers and sales, as they happen", responses={200: LiveEventDetail}, access="optional")
async def get_live_event(request: web.Request) -> web.Response:
    who = await optional_caller(request)
    event_id = path_id(request)
    async with as_user(request.app[READ_POOL], who.id if who else None) as conn:
        row = await _event(conn, event_id, named=True)
        party = who is not None and (who.is_admin or who.id in (str(row["creator_id"]), str(row["business_id"])))
        if not party or row["campaign_id"] is None:
            return respond(_public(row))
        sold = await (await conn.execute(_SALES_SQL, {"id": event_id})).fetchone()
        stats = reports.link_query(str(row["campaign_id"]), str(row["link_id"]), row["created_at"] - CLOCK_SKEW,
                                   datetime.now(UTC) + CLOCK_SKEW)
        decided = await reports.decisions(conn, stats)
    with reports.stats_gate.admit(who.id):
        totals = await reports.totals(request, stats, decided)
    return respond({
        **_public(row), "commission_pct": fmt(row["commission_pct"]),
        "viewers": {"clicks": totals["clicks"]["all"], "unique": totals["clicks"]["unique"],
                    "bot": totals["clicks"]["bot"]},
        "sales": {"reported": totals["sales"]["all"], "reported_value": totals["sales"]["value"],
                  "paid": sold["paid"], "refunded": sold["refunded"], "gmv": fmt(sold["gmv"]),
                  "commission": fmt(sold["commission"]), "creator_net": fmt(sold["creator_net"])},
    })


@routes.patch("/v1/live-events/{id}", "Set the event's commission percent (the campaign's business, while the "
              "event is scheduled)", body=LiveEventPatch, responses={200: LiveEventDetail})
async def patch_live_event(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business")
    event_id = path_id(request)
    body = await parse(LiveEventPatch, request)
    if "commission_pct" not in body.model_fields_set:
        raise invalid("commission_pct", "commission_pct is required (null pays the campaign's payout)")
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await _event(conn, event_id)
        try:
            async with conn.transaction():
                await conn.execute(_COMMISSION_SQL, {"id": event_id, "pct": body.commission_pct})
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectNotInPrerequisiteState) as exc:
            raise _refused(exc, "only the campaign's business may set the commission") from None
        row = await _event(conn, event_id, named=True)
    return respond({**_public(row), "commission_pct": fmt(row["commission_pct"])})


async def _move(request: web.Request, to: str) -> web.Response:
    who = (await caller(request)).require("creator")
    event_id = path_id(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await _event(conn, event_id)
        try:
            async with conn.transaction():
                await conn.execute(_MOVE_SQL, {"id": event_id, "to": to})
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectNotInPrerequisiteState) as exc:
            raise _refused(exc, "only the event's creator may start, end or cancel it") from None
        row = await _event(conn, event_id, named=True)
    return respond(_public(row))


@routes.post("/v1/live-events/{id}/start", "Go live (creator; a scheduled event)", responses={200: LiveEvent})
async def start(request: web.Request) -> web.Response:
    return await _move(request, "live")


@routes.post("/v1/live-events/{id}/end", "End the live event (creator; a live event)", responses={200: LiveEvent})
async def end(request: web.Request) -> web.Response:
    return await _move(request, "ended")


@routes.post("/v1/live-events/{id}/cancel", "Cancel a scheduled live event (creator)", responses={200: LiveEvent})
async def cancel(request: web.Request) -> web.Response:
    return await _move(request, "canceled")


@routes.post("/v1/live-events/{id}/sales", "Report a sale made during the live event (the campaign's business, "
             "with its API key); the settler pays it", body=LiveSaleIn, headers=(idempotency.IDEMPOTENCY_KEY,),
             responses={202: LiveSaleAccepted, 200: LiveSaleAccepted})
async def report_sale(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business")
    if who.via != "api_key":
        raise forbidden("report live sales with the business's API key")
    event_id = path_id(request)
    body = await parse(LiveSaleIn, request)

    async def record(conn: psycopg.AsyncConnection) -> dict:
        # Appended inside the key's transaction: a concurrent retry with the same key waits and gets this answer.
        return await _append_sale(request, conn, who.id, event_id, body)

    return await idempotency.once(request, who.id, record, status=lambda answer: 200 if answer["duplicate"] else 202)


async def _append_sale(request: web.Request, conn: psycopg.AsyncConnection, business_id: str, event_id: str,
                       body: LiveSaleIn) -> dict:
    """Append the sale to the event stream (or name the paid one): the answer to the business."""
    row = await _event(conn, event_id)
    if row["business_id"] is None or str(row["business_id"]) != business_id:
        raise forbidden("only the campaign's business may report the event's sales")
    if row["status"] in ("scheduled", "canceled"):
        raise conflict("invalid_state", f"live event {event_id} is {row['status']}: it has no sales", "status")
    paid = await (await conn.execute(_PAID_ORDER_SQL, {"id": event_id, "order": body.order_id})).fetchone()
    if paid is not None:
        return {"event_id": paid["event_id"], "duplicate": True}
    redis, settings = request.app[REDIS], request.app[SETTINGS]
    if body.click_id is not None:
        click = await clickindex.lookup(redis, settings.keys, body.click_id)
        if click is None or click.get("link_id") != str(row["link_id"]):
            raise invalid("click_id", "click_id is not a recorded click through this live event's link")
    ts_ms = time.time_ns() // 1_000_000
    sale = Event(
        event_id=uuid7_str(ts_ms), event_type="sale", ts_ms=ts_ms, campaign_id=str(row["campaign_id"]),
        link_id=str(row["link_id"]), creator_id=str(row["creator_id"]), business_id=business_id,
        click_id=body.click_id, order_id=body.order_id, value=fmt(body.amount), currency=body.currency,
        source="api", metadata={"live_event_id": event_id},
    )
    try:
        await stream.append_durably(redis, settings, [sale.encode()])
    except stream.REDIS_ERRORS:
        raise ApiError(503, "unavailable", "could not record the sale; retry shortly") from None
    return {"event_id": sale.event_id, "duplicate": False}


@routes.get("/v1/live-events/{id}/sales", "The event's paid sales, newest first (its creator and the campaign's "
            "business; others see none)", query=PageQuery, responses={200: Page[LiveSale]})
async def list_sales(request: web.Request) -> web.Response:
    who = await caller(request)
    event_id = path_id(request)
    query = parse_query(PageQuery, request)
    async with as_user(request.app[READ_POOL], who.id) as conn:
        await _event(conn, event_id)
        # RLS: live_sales are the event's creator's and the campaign's business's.
        result = await fetch_page(conn, f"SELECT {SALE_COLUMNS} FROM live_sales", ["live_event_id = %(id)s"],
                                  {"id": event_id}, query)
        holds = await _holds(conn, [row["id"] for row in result["items"]])
    for row in result["items"]:
        row["held_until"] = holds.get(row["id"])
    return respond(result)


async def _holds(conn: psycopg.AsyncConnection, sale_ids: list) -> dict:
    """Until when each sale's commission is held (sql/postgres/0190): absent once it was released."""
    if not sale_ids:
        return {}
    rows = await (await conn.execute(_HOLDS_SQL, {"ids": sale_ids})).fetchall()
    return {row["id"]: row["held_until"] for row in rows if row["held_until"] is not None}


@routes.post("/v1/live-events/{id}/sales/{sale_id}/refund", "Refund a paid live sale whole (the campaign's "
             "business, signed in or with its API key); the next settlement reverses it while its commission is "
             "held", headers=(idempotency.IDEMPOTENCY_KEY,),
             responses={202: LiveSaleRefundAccepted, 200: LiveSaleRefundAccepted})
async def refund_sale(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business")
    event_id, sale_id = path_id(request), path_id(request, "sale_id")

    async def record(conn: psycopg.AsyncConnection) -> dict:
        return await _append_refund(request, conn, who.id, event_id, sale_id)

    return await idempotency.once(request, who.id, record, status=lambda answer: 200 if answer["duplicate"] else 202)


async def _append_refund(request: web.Request, conn: psycopg.AsyncConnection, business_id: str, event_id: str,
                         sale_id: str) -> dict:
    """Append a full refund of the sale's order to the event stream, once: the answer to the business."""
    row = await _event(conn, event_id)
    sale = await (await conn.execute(_SALE_SQL, {"id": event_id, "sale": sale_id})).fetchone()
    if sale is None:  # RLS: another party's sale is not found
        raise not_found("live sale")
    if row["business_id"] is None or str(row["business_id"]) != business_id:
        raise forbidden("only the campaign's business may refund the event's sales")
    if sale["status"] != "paid":
        raise conflict("already_refunded", f"live sale {sale_id} is {sale['status']}: nothing is left to refund",
                       "status")
    # Held until released (sql/postgres/0190 owns the rule, the settler asks the same function): a hold whose
    # end has passed is still held until the release job moves the money, so the refund still reverses it.
    if sale["id"] not in await _holds(conn, [sale["id"]]):
        # The settler would record it rejected and move nothing: say so now rather than accept it.
        raise conflict("refund_after_hold", f"the commission of live sale {sale_id} is no longer held: the sale "
                       "stands", "held_until")
    redis, settings = request.app[REDIS], request.app[SETTINGS]
    ts_ms = time.time_ns() // 1_000_000
    # No value: refunded in full. The settler finds the sale by its order, campaign and business (settler.refunds).
    refund = Event(
        event_id=uuid7_str(ts_ms), event_type="refund", ts_ms=ts_ms, campaign_id=str(row["campaign_id"]),
        business_id=business_id, order_id=sale["order_id"], currency=sale["currency"], source="api",
        metadata={"live_event_id": event_id, "live_sale_id": sale_id},
    )
    # One full refund a sale: a second request (another Idempotency-Key, another tab) names the first instead
    # of appending a refund the settler would refuse. Claimed in the sale's campaign, as the settler matches it.
    order_key = orders.refund_key(settings.keys, business_id, sale["order_id"], None, str(row["campaign_id"]))
    ttl = orders.ttl_s(settings.attribution_days, settings.hold_days)
    unrecorded = ApiError(503, "unavailable", "could not record the refund; retry shortly")
    try:
        first = await orders.claim(redis, order_key, refund.event_id, ts_ms, ttl)
    except stream.REDIS_ERRORS:
        raise unrecorded from None
    if first is not None:
        return {"event_id": first, "duplicate": True}
    try:
        await stream.append_durably(redis, settings, [refund.encode()])
    except stream.REDIS_ERRORS:
        await orders.released(redis, order_key)
        raise unrecorded from None
    await orders.recorded(redis, order_key, refund.event_id, ttl)
    return {"event_id": refund.event_id, "duplicate": False}
