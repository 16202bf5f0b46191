"""Share links: ``POST /v1/links/{code}/shares``, a supporter's own link to a creator's link.

A share link is a tracking link with the link's campaign, creator and
destination and the caller as ``supporter_id``; the events through it carry
the supporter end to end, and each one paid earns the supporter
``share_pct`` of the payout, out of the creator's net (the settler,
sql/postgres/0111; docs/supporters.md, "Share links"). One per link and
supporter: asking again answers the same link (``200``; the first answer is
``201``), a share of a share link is a share of its creator's link.
``oros_open_share`` (0110, 0160, 0180) checks who may share what and records
the keyed hash of the caller's address (IPv6: its /64) with the key's
fingerprint (and the address itself where the deployment keeps addresses): a
click from there earns the supporter nothing. Asking again after the key was
rotated hashes the address anew.
It runs as the API's role, not the request role: the percent and the address
are the deployment's terms, which a caller of the function could otherwise
forge (0160). ``GET /v1/me/shares`` lists the caller's share links with
what each earned (RLS: a supporter reads only its own share links and
rewards, sql/postgres/0110).
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime

import psycopg
from aiohttp import web
from pydantic import BaseModel, Field

from oros.clientip import ip_hash, ip_hash_key, ip_hash_key_id
from oros.connections import act_as, as_user
from oros.httperrors import ApiError, conflict, not_found
from oros.links import CODE_RE, LINK_SQL, LinkInfo
from oros.wire import Code, Money, Uuid

from . import names
from .auth import caller
from .campaigns import CODE_ATTEMPTS, CODE_BYTES, _publish
from .pages import Page, PageQuery, fetch_page
from .payload import parse_query, respond
from .routing import Routes
from .typedefs import CLIENT_IP, PG_POOL, SETTINGS

log = logging.getLogger(__name__)
routes = Routes()

_OPEN_SQL = """
SELECT id, code, url, campaign_id, creator_id, supporter_id, shared_from, share_pct, destination_url, created_at,
       created_at = now() AS created  -- made by this transaction (now() is its start), not found made before
  FROM oros_open_share(%(supporter)s, %(code)s, %(new_code)s, %(tracker_url)s, %(pct)s, %(ip_hash)s, %(ip)s,
                       %(ip_key)s)
"""

# Why a caller may not share a link, as the API answers it (oros_share_blocker's codes).
BLOCKERS = {
    "live_link": "a live event's link cannot be shared (its sales are the event's, at its commission; docs/live.md)",
    "own_link": "a creator cannot share its own link (the reward would be paid out of its own earnings)",
    "own_campaign": "a business cannot share a link of its own campaign",
    "campaign_member": "a creator of the campaign cannot share its links (rewards are paid out of creators' earnings)",
    "campaign_not_active": "only a link of an active campaign can be shared",
    "creator_not_accepted": "the link's creator is no longer accepted on its campaign",
}


# The caller's share links (RLS: 0110's tracking_links_supporter, 0007's rewards_owner) with what each earned.
_MINE_SQL = """
SELECT * FROM (
  SELECT l.id, l.code, l.url, l.campaign_id, l.creator_id, l.supporter_id, l.shared_from, l.share_pct,
         l.destination_url, l.created_at, l.click_count, l.conversion_count, c.title AS campaign_title,
         earned.rewards, earned.rewards_amount
    FROM tracking_links l LEFT JOIN campaigns c ON c.id = l.campaign_id
    -- A reward a refund took back whole stays a row at 0.00 (0111): it no longer counts as earned.
    CROSS JOIN LATERAL (
      SELECT count(*) FILTER (WHERE r.amount > 0) AS rewards, coalesce(sum(r.amount), 0) AS rewards_amount
        FROM rewards r WHERE r.tracking_link_id = l.id AND r.user_id = l.supporter_id AND r.source = 'share') AS earned
   WHERE l.supporter_id = %(me)s AND l.shared_from IS NOT NULL) AS mine
"""


class ShareLink(BaseModel):
    """The caller's share link: clicks through it pay the creator, and the supporter ``share_pct`` of each payout"""

    code: Code
    url: str
    id: Uuid
    campaign_id: Uuid
    creator_id: Uuid
    supporter_id: Uuid
    shared_from: Uuid = Field(description="the creator's link it shares")
    share_pct: Money = Field(description="the percent of each payout through it the supporter earns, out of the "
                                         "creator's net (OROS_SHARE_PCT when the link was made)")
    destination_url: str
    created_at: datetime
    creator_name: str | None = Field(None, description="the creator's display name, else username (null when it "
                                                       "has neither)")


class MyShareLink(ShareLink):
    """One of the caller's share links and what it earned so far"""

    campaign_title: str | None = Field(description="null when the campaign is not visible to the caller")
    click_count: int = Field(description="paid clicks through it, as of the last settlement")
    conversion_count: int = Field(description="paid conversions and sales through it, as of the last settlement")
    rewards: int = Field(description="share rewards earned through it")
    rewards_amount: Money = Field(description="their amount (refunds deducted)")


@routes.get("/v1/me/shares", "The caller's share links, newest first, with their paid clicks and rewards "
            "(supporter)", query=PageQuery, responses={200: Page[MyShareLink]})
async def list_shares(request: web.Request) -> web.Response:
    who = (await caller(request)).require("supporter")
    query = parse_query(PageQuery, request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        result = await fetch_page(conn, _MINE_SQL, ["true"], {"me": who.id}, query)
        await names.attach(conn, result["items"], "creator_id", "creator_name")
    return respond(result)


@routes.post("/v1/links/{code}/shares", "Share a creator's link (supporter): your own link to it; each paid event "
             "through it earns you share_pct of the payout. Asking again returns the same link",
             params={"code": Code}, responses={201: ShareLink, 200: ShareLink})
async def create_share(request: web.Request) -> web.Response:
    who = (await caller(request)).require("supporter")
    code = request.match_info["code"]
    if not CODE_RE.match(code):
        raise not_found("link")
    settings = request.app[SETTINGS]
    address = request.app[CLIENT_IP](request)
    key = ip_hash_key(settings.ip_hash_key)
    params = {
        "supporter": who.id, "code": code, "tracker_url": settings.tracker_url, "pct": settings.share_pct,
        "ip_hash": ip_hash(address, key) if address else None, "ip_key": ip_hash_key_id(key),
        # Kept only where events keep addresses (docs/security.md, "IP addresses").
        "ip": None if settings.anonymize_ip else address,
    }
    async with request.app[PG_POOL].connection() as conn, conn.transaction():
        row = await _open(conn, params)
        if row is None:
            raise not_found("link")
        await act_as(conn, who.id)  # the API's role made it; the link is read back as the caller
        info = await (await conn.execute(LINK_SQL, {"code": row["code"]})).fetchone()
        await names.attach(conn, [row], "creator_id", "creator_name")
    if row.pop("created"):
        await _publish(request, [row["code"]], {row["code"]: LinkInfo(**info)})
        return respond(row, 201)
    return respond(row)


async def _open(conn: psycopg.AsyncConnection, params: dict) -> dict | None:
    """The caller's share link, made with a fresh random code unless it has one (a taken code is drawn again)."""
    for _ in range(CODE_ATTEMPTS):
        try:
            async with conn.transaction():
                return await (await conn.execute(_OPEN_SQL, {**params, "new_code": secrets.token_urlsafe(CODE_BYTES)}
                                                 )).fetchone()
        except psycopg.errors.UniqueViolation:
            log.warning("share link code collision, retrying")
        except psycopg.errors.ObjectNotInPrerequisiteState as exc:
            raise _blocked(exc.diag.message_hint) from None
    raise ApiError(503, "code_space_exhausted", "could not allocate a unique link code; retry")


def _blocked(code: str | None) -> ApiError:
    if code not in BLOCKERS:
        return not_found("link")
    return conflict(code, BLOCKERS[code], "status" if code == "campaign_not_active" else None)
