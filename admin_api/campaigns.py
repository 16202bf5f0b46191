"""Campaigns, the creators who join them, and their tracking links.

Lifecycle: ``draft`` -> ``active`` (only when funded for at least one action
and before ``end_date``) <-> ``paused``; ``completed`` is final, set by the
settler when the budget is spent or by the business ending the campaign.
Once a campaign has been active, the terms creators joined on
(``payout_per_action``, ``start_date``) are fixed; see docs/api.md.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

import psycopg
import redis.exceptions
from aiohttp import web
from pydantic import BaseModel, Field

from oros.connections import as_user
from oros.httperrors import ApiError, conflict, forbidden, invalid, not_found
from oros.links import CAMPAIGN_CODES_SQL, LINK_SQL, LinkInfo, publish
from oros.wire import Amount, Code, Flag, Hashtags, HttpUrl, Money, OneOf, Text, Timestamp, Uuid, refuse, rule

from . import memberships, names
from .auth import Caller, caller, has_credentials
from .pages import Page, PageQuery, fetch_page
from .payload import parse, parse_query, path_id, respond
from .routing import Routes
from .typedefs import PG_POOL, REDIS, SETTINGS

log = logging.getLogger(__name__)
routes = Routes()

OBJECTIVES = ("click", "conversion", "sale")
STATUSES = ("draft", "active", "paused", "completed")
MAX_PAYOUT = Decimal("99999999.99")  # DECIMAL(10,2)
CODE_BYTES = 6  # 8 URL-safe characters, 48 random bits: unguessable, and retried on the rare collision
CODE_ATTEMPTS = 5

CAMPAIGN_COLUMNS = """id, business_id, title, description, hashtags, objective, payout_per_action, destination_url,
    allowed_destination_hosts, total_budget, remaining_budget, funded_budget, status, start_date, end_date,
    pixel_billable, created_at, updated_at"""
MEMBER_COLUMNS = "id, campaign_id, creator_id, status, total_earned, accepted_at, created_at"
LINK_COLUMNS = ("id, campaign_id, creator_id, code, url, destination_url, disabled_at, click_count, conversion_count,"
                " created_at")
MAX_HOSTS = 20  # allowed_destination_hosts; each is checked as a host name by the database (0032)

# What may change in each status. Creators joined an active campaign on its
# payout and start, so those are fixed once it has gone live. pixel_billable
# is the business's risk to take or drop at any time (the settler reads it
# when it settles).
EDITABLE = {
    "draft": {"title", "description", "hashtags", "payout_per_action", "destination_url", "allowed_destination_hosts",
              "total_budget", "start_date", "end_date", "pixel_billable"},
    "active": {"title", "description", "hashtags", "destination_url", "allowed_destination_hosts", "total_budget",
               "end_date", "pixel_billable"},
    "paused": {"title", "description", "hashtags", "destination_url", "allowed_destination_hosts", "total_budget",
               "end_date", "pixel_billable"},
    "completed": set(),
}

# LinkInfo for every link of a campaign the tracker may resolve, reusing its own query per code.
CAMPAIGN_LINK_INFOS_SQL = (
    "SELECT info.* FROM tracking_links t CROSS JOIN LATERAL ("
    + LINK_SQL.replace("%(code)s", "t.code")
    + ") info WHERE t.campaign_id = %(campaign_id)s"
)


def now() -> datetime:
    return datetime.now(UTC)


async def optional_caller(request: web.Request) -> Caller | None:
    """The campaign listing is public: anonymous callers see active campaigns only."""
    if not has_credentials(request):
        return None
    return await caller(request)


def _hosts(raw: object) -> list[str]:
    """The list's shape; whether each is a host name, and the destination among them, is the database's rule."""
    if (not isinstance(raw, list) or not 1 <= len(raw) <= MAX_HOSTS
            or not all(isinstance(h, str) and 1 <= len(h) <= 253 for h in raw)):
        refuse(f"must be null or a list of 1 to {MAX_HOSTS} host names")
    return [h.strip() for h in raw]


Hosts = rule(list[str], _hosts, {
    "type": "array", "minItems": 1, "maxItems": MAX_HOSTS,
    "items": {"type": "string", "minLength": 1, "maxLength": 253},
    "description": "hosts a link may go to (exact match); null: the destination_url's host"})
Title = Text(200)
Objective = OneOf(*OBJECTIVES)
Payout = Amount(MAX_PAYOUT)


class CampaignPatch(BaseModel):
    """The campaign's fields; one left out keeps its value. What may change depends on the status (docs/api.md);
    ``objective`` never changes."""

    title: Title = None
    description: Text(10000, min_len=0) | None = None
    hashtags: Hashtags | None = None  # null: none
    objective: Objective = None
    payout_per_action: Payout = None
    total_budget: Amount() = None
    destination_url: HttpUrl() = None
    allowed_destination_hosts: Hosts | None = None
    start_date: Timestamp() | None = None
    end_date: Timestamp() | None = None
    pixel_billable: Flag = Field(None, description="pay pixels without a sig (default false)")

    def changes(self) -> dict:
        fields = self.model_dump(exclude_unset=True)
        if "hashtags" in fields:
            fields["hashtags"] = fields["hashtags"] or []
        return fields


class CampaignIn(CampaignPatch):
    """A new campaign: the seed's columns and its landing page."""

    title: Title
    objective: Objective
    payout_per_action: Payout
    total_budget: Amount()
    destination_url: HttpUrl()


class CampaignQuery(PageQuery):
    mine: OneOf("true", "false") = Field("false", description="true: the caller's own, in every status")
    status: OneOf(*STATUSES) = None
    hashtag: Hashtags = Field([], description="repeat to require several hashtags")


class LinkIn(BaseModel):
    destination_url: HttpUrl() | None = Field(None, description="a deep link on one of the campaign's hosts")


class Campaign(BaseModel):
    """The campaign"""

    id: Uuid
    business_id: Uuid
    title: str
    description: str | None
    hashtags: list[str]
    objective: Literal[OBJECTIVES]
    payout_per_action: Money
    destination_url: str | None
    allowed_destination_hosts: list[str] | None
    total_budget: Money
    remaining_budget: Money
    funded_budget: Money
    status: Literal[STATUSES]
    start_date: datetime | None
    end_date: datetime | None
    pixel_billable: bool
    created_at: datetime
    updated_at: datetime


class Member(BaseModel):
    """The application"""

    id: Uuid
    campaign_id: Uuid
    creator_id: Uuid
    creator_name: str | None = Field(None, description="the creator's display name, else username (null when "
                                                      "it has neither); on lists and the business's decisions")
    status: Literal["pending", "accepted", "rejected", "completed"]
    total_earned: Money
    accepted_at: datetime | None
    created_at: datetime


class Link(BaseModel):
    """The link"""

    id: Uuid
    campaign_id: Uuid
    creator_id: Uuid
    creator_name: str | None = Field(None, description="the creator's display name, else username (null when "
                                                      "it has neither); on lists")
    code: Code
    url: str
    destination_url: str
    disabled_at: datetime | None
    click_count: int
    conversion_count: int
    created_at: datetime


def _check_terms(campaign: dict) -> None:
    """Rules across fields, checked on the campaign as it would be after the change."""
    if campaign["payout_per_action"] > campaign["total_budget"]:
        raise invalid("payout_per_action", "payout_per_action may not exceed total_budget")
    if campaign["total_budget"] < campaign["funded_budget"]:
        raise invalid("total_budget", "total_budget may not drop below what was already funded")
    start, end = campaign["start_date"], campaign["end_date"]
    if start is not None and end is not None and end <= start:
        raise invalid("end_date", "end_date must be after start_date")


@routes.post("/v1/campaigns", "Create a draft campaign (business)", body=CampaignIn, responses={201: Campaign})
async def create_campaign(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business")
    fields = (await parse(CampaignIn, request)).changes()
    _check_terms({"start_date": None, "end_date": None, "funded_budget": Decimal(0), **fields})
    columns = ["business_id", *fields]
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute(
            f"INSERT INTO campaigns ({', '.join(columns)}) VALUES ({', '.join(f'%({c})s' for c in columns)})"
            f" RETURNING {CAMPAIGN_COLUMNS}",
            {**fields, "business_id": who.id},
        )).fetchone()
    return respond(row, 201)


@routes.get("/v1/campaigns", "Active campaigns (public), or the caller's own with mine=true", query=CampaignQuery,
            responses={200: Page[Campaign]}, access="optional")
async def list_campaigns(request: web.Request) -> web.Response:
    """Active campaigns (the public listing), or with ``mine=true`` the caller's own in any status."""
    who = await optional_caller(request)
    query = parse_query(CampaignQuery, request)
    mine = query.mine == "true"
    if mine and who is None:
        raise ApiError(401, "unauthorized", "mine=true needs a login")
    where, params = ["true"], {}
    if mine:
        where.append("business_id = %(me)s")
        params["me"] = who.id
    if query.status is not None or not mine:
        where.append("status = %(status)s")
        params["status"] = query.status or "active"
    if query.hashtag:
        where.append("hashtags @> %(tags)s::text[]")  # served by the GIN index on hashtags
        params["tags"] = query.hashtag
    async with as_user(request.app[PG_POOL], who.id if who else None) as conn:
        return respond(await fetch_page(conn, f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns", where, params, query))


async def _visible(conn, campaign_id: str, *, lock: bool = False) -> dict:
    """The campaign if RLS lets the caller see it; otherwise 404 (existence is not revealed)."""
    row = await (await conn.execute(
        f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = %(id)s" + (" FOR UPDATE" if lock else ""),
        {"id": campaign_id},
    )).fetchone()
    if row is None:
        raise not_found("campaign")
    return row


async def _owned(conn, who: Caller, campaign_id: str, *, lock: bool = False) -> dict:
    """The caller's own campaign: 404 when invisible, 403 when visible (active) but someone else's.

    With ``lock`` RLS applies the UPDATE policy too, so someone else's campaign is simply not found.
    """
    row = await _visible(conn, campaign_id, lock=lock)
    if str(row["business_id"]) != who.id:
        raise forbidden("only the campaign's business may do this")
    return row


@routes.get("/v1/campaigns/{id}", "One campaign", responses={200: Campaign}, access="optional")
async def get_campaign(request: web.Request) -> web.Response:
    who = await optional_caller(request)
    async with as_user(request.app[PG_POOL], who.id if who else None) as conn:
        row = await _visible(conn, path_id(request))
    return respond(row)


@routes.patch("/v1/campaigns/{id}", "Change a campaign (what may change depends on its status)", body=CampaignPatch,
              responses={200: Campaign})
async def patch_campaign(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business")
    campaign_id = path_id(request)
    fields = (await parse(CampaignPatch, request)).changes()
    async with as_user(request.app[PG_POOL], who.id) as conn:
        current = await _owned(conn, who, campaign_id, lock=True)
        locked = sorted(set(fields) - EDITABLE[current["status"]])
        if locked:
            raise conflict("not_editable", f"{locked[0]} cannot change while the campaign is {current['status']}",
                           locked[0])
        _check_terms({**current, **fields})
        if fields.get("end_date") is not None and current["status"] != "draft" and fields["end_date"] <= now():
            raise invalid("end_date", "end_date must be in the future")
        row = current
        if fields:
            assignments = ", ".join(f"{c} = %({c})s" for c in fields)
            row = await (await conn.execute(
                f"UPDATE campaigns SET {assignments} WHERE id = %(id)s RETURNING {CAMPAIGN_COLUMNS}",
                {**fields, "id": campaign_id},
            )).fetchone()
        moved = {"destination_url", "allowed_destination_hosts"} & set(fields)
        links = await _campaign_links(conn, campaign_id) if moved else ([], {})
    await _publish(request, *links)
    return respond(row)


async def _campaign_links(conn, campaign_id: str) -> tuple[list[str], dict[str, LinkInfo]]:
    """Every code of the campaign, and the LinkInfo of those still enabled (the others are dropped)."""
    codes = [r["code"] for r in await (await conn.execute(CAMPAIGN_CODES_SQL, {"campaign_id": campaign_id}))
             .fetchall()]
    rows = await (await conn.execute(CAMPAIGN_LINK_INFOS_SQL, {"campaign_id": campaign_id})).fetchall()
    return codes, {r["code"]: LinkInfo(**r) for r in rows}


async def _publish(request: web.Request, codes: list[str], infos: dict[str, LinkInfo]) -> None:
    """Refresh the trackers' view of these links after our transaction committed (a code without info is dropped).

    Postgres is already right, so a failed publish is logged rather than
    failing the request, and nothing depends on it succeeding: the settler
    bills by Postgres (status history; a link disabled at an event's time
    pays nothing, ``link_disabled``), and every settle run publishes again
    each link disabled since its last successful publish
    (``settler.post.publish_links``), so a tracker stops serving it within
    one settle interval of Redis coming back.
    """
    try:
        await publish(request.app[REDIS], request.app[SETTINGS].keys, codes, infos)
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException):
        log.warning("link publish failed", exc_info=True, extra={"codes": len(codes)})


async def _set_status(request: web.Request, allowed_from: tuple[str, ...], to: str) -> web.Response:
    who = (await caller(request)).require("business")
    campaign_id = path_id(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        current = await _owned(conn, who, campaign_id, lock=True)
        if current["status"] == to:
            return respond(current)
        if current["status"] not in allowed_from:
            raise conflict("invalid_transition", f"a {current['status']} campaign cannot become {to}", "status")
        if to == "active":
            await memberships.ensure_may_activate(conn, current)
            _check_activatable(current)
        row = await (await conn.execute(
            f"UPDATE campaigns SET status = %(status)s WHERE id = %(id)s RETURNING {CAMPAIGN_COLUMNS}",
            {"status": to, "id": campaign_id},
        )).fetchone()
        links = await _campaign_links(conn, campaign_id)
    await _publish(request, *links)
    return respond(row)


def _check_activatable(campaign: dict) -> None:
    if campaign["remaining_budget"] < campaign["payout_per_action"]:
        raise conflict("insufficient_budget", "fund the campaign with at least one payout before activating it",
                       "remaining_budget")
    if campaign["end_date"] is not None and campaign["end_date"] <= now():
        raise conflict("campaign_ended", "end_date has passed; extend it before activating", "end_date")


@routes.post("/v1/campaigns/{id}/activate", "Activate a funded campaign", responses={200: Campaign})
async def activate(request: web.Request) -> web.Response:
    return await _set_status(request, ("draft", "paused"), "active")


@routes.post("/v1/campaigns/{id}/pause", "Pause an active campaign", responses={200: Campaign})
async def pause(request: web.Request) -> web.Response:
    return await _set_status(request, ("active",), "paused")


@routes.post("/v1/campaigns/{id}/complete", "End a campaign for good (its unspent budget stays in escrow)",
             responses={200: Campaign})
async def complete(request: web.Request) -> web.Response:
    """The business ends its campaign for good; events after this are not billable."""
    return await _set_status(request, ("draft", "active", "paused"), "completed")


@routes.post("/v1/campaigns/{id}/creators", "Apply to an active campaign (creator)", responses={201: Member})
async def join(request: web.Request) -> web.Response:
    """A creator applies to an active campaign; the business then accepts or rejects."""
    who = (await caller(request)).require("creator")
    campaign_id = path_id(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        campaign = await _visible(conn, campaign_id)
        if campaign["status"] != "active":
            raise conflict("campaign_not_active", "only an active campaign takes applications", "status")
        try:
            async with conn.transaction():
                row = await (await conn.execute(
                    f"INSERT INTO campaign_creators (campaign_id, creator_id) VALUES (%(c)s, %(u)s)"
                    f" RETURNING {MEMBER_COLUMNS}",
                    {"c": campaign_id, "u": who.id},
                )).fetchone()
        except psycopg.errors.UniqueViolation:
            raise conflict("already_applied", "you already applied to this campaign") from None
    return respond(row, 201)


@routes.get("/v1/campaigns/{id}/creators", "Applications to a campaign", query=PageQuery,
            responses={200: Page[Member]})
async def list_creators(request: web.Request) -> web.Response:
    """The business sees every applicant; a creator sees only their own application (RLS)."""
    return await _list_of_campaign(request, "campaign_creators", MEMBER_COLUMNS)


async def _decide(request: web.Request, status: str) -> web.Response:
    who = (await caller(request)).require("business")
    campaign_id, creator_id = path_id(request), path_id(request, "creator_id")
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await _owned(conn, who, campaign_id)
        row = await (await conn.execute(
            f"UPDATE campaign_creators SET status = %(status)s::text,"
            f" accepted_at = CASE WHEN %(status)s::text = 'accepted' THEN now() ELSE accepted_at END"
            f" WHERE campaign_id = %(c)s AND creator_id = %(u)s AND status IN ('pending', 'accepted', 'rejected')"
            f" RETURNING {MEMBER_COLUMNS}",
            {"status": status, "c": campaign_id, "u": creator_id},
        )).fetchone()
        if row is not None:
            await names.attach(conn, [row], "creator_id", "creator_name")
    if row is None:
        raise not_found("application")
    return respond(row)


@routes.post("/v1/campaigns/{id}/creators/{creator_id}/accept", "Accept a creator (the campaign's business)",
             responses={200: Member})
async def accept(request: web.Request) -> web.Response:
    return await _decide(request, "accepted")


@routes.post("/v1/campaigns/{id}/creators/{creator_id}/reject", "Reject a creator (the campaign's business)",
             responses={200: Member})
async def reject(request: web.Request) -> web.Response:
    return await _decide(request, "rejected")


@routes.post("/v1/campaigns/{id}/links", "Create a tracking link (accepted creator)", body=LinkIn, body_required=False,
             responses={201: Link})
async def create_link(request: web.Request) -> web.Response:
    who = (await caller(request)).require("creator")
    campaign_id = path_id(request)
    destination = (await parse(LinkIn, request)).destination_url
    settings = request.app[SETTINGS]
    async with as_user(request.app[PG_POOL], who.id) as conn:
        campaign = await _visible(conn, campaign_id)
        member = await (await conn.execute(
            "SELECT status FROM campaign_creators WHERE campaign_id = %(c)s AND creator_id = %(u)s",
            {"c": campaign_id, "u": who.id},
        )).fetchone()
        if member is None or member["status"] != "accepted":
            raise forbidden("only a creator accepted on this campaign may create links")
        if campaign["status"] == "completed":
            raise conflict("campaign_completed", "the campaign has ended", "status")
        destination = destination or campaign["destination_url"]
        if destination is None:
            raise invalid("destination_url", "the campaign has no destination_url; give one")
        row = await _insert_link(conn, campaign_id, who.id, destination, settings.tracker_url)
        info = await (await conn.execute(LINK_SQL, {"code": row["code"]})).fetchone()
    await _publish(request, [row["code"]], {row["code"]: LinkInfo(**info)})
    return respond(row, 201)


async def _insert_link(conn, campaign_id: str, creator_id: str, destination: str, tracker_url: str) -> dict:
    """Insert with a fresh random code, retrying (in a savepoint) if the code is already taken."""
    for _ in range(CODE_ATTEMPTS):
        code = secrets.token_urlsafe(CODE_BYTES)
        try:
            async with conn.transaction():
                return await (await conn.execute(
                    f"INSERT INTO tracking_links (campaign_id, creator_id, code, url, destination_url)"
                    f" VALUES (%(c)s, %(u)s, %(code)s, %(url)s, %(dest)s) RETURNING {LINK_COLUMNS}",
                    {"c": campaign_id, "u": creator_id, "code": code, "url": f"{tracker_url}/{code}",
                     "dest": destination},
                )).fetchone()
        except psycopg.errors.UniqueViolation:
            log.warning("link code collision, retrying")
    raise ApiError(503, "code_space_exhausted", "could not allocate a unique link code; retry")


@routes.get("/v1/campaigns/{id}/links", "Links of a campaign", query=PageQuery, responses={200: Page[Link]})
async def list_links(request: web.Request) -> web.Response:
    """A creator sees their own links; the business sees every link of its campaign (RLS)."""
    return await _list_of_campaign(request, "tracking_links", LINK_COLUMNS)


async def _list_of_campaign(request: web.Request, table: str, columns: str) -> web.Response:
    """One cursor page of a campaign's rows in ``table``, newest first, as RLS lets the caller see them."""
    who = await caller(request)
    campaign_id = path_id(request)
    query = parse_query(PageQuery, request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await _visible(conn, campaign_id)
        result = await fetch_page(conn, f"SELECT {columns} FROM {table}", ["campaign_id = %(c)s"], {"c": campaign_id},
                                  query)
        await names.attach(conn, result["items"], "creator_id", "creator_name")
    return respond(result)
