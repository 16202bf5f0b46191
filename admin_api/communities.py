"""Communities, their members and their posts (issue 14; the product rules are docs/supporters.md).

A creator creates communities and posts in them; any signed-in user joins and
leaves. Communities and post metadata are public. Who may read a locked
post's content is Postgres's rule, not this module's: posts are read only
through ``community_post_view`` (migration 0074), which returns ``content_url``
and ``body`` to the callers who may read them and NULL to everyone else, and
the request role cannot read those columns of the table at all. This module
only leaves the keys out of the JSON when the view says the post is not
unlocked for the caller.
"""

from __future__ import annotations

from decimal import Decimal

from aiohttp import web

from oros.connections import as_user
from oros.events import canonical_uuid

from . import openapi as oa
from .auth import caller
from .campaigns import optional_caller
from .errors import ApiError, conflict, forbidden, invalid, not_found
from .payload import (amount, choice, cursor, encode_cursor, fetch_page, flag, http_url, limit, path_id, read_json,
                      respond, text)
from .typedefs import PG_POOL

routes = web.RouteTableDef()

CONTENT_TYPES = ("text", "image", "video", "link")
# The membership tiers whose effect is reading locked posts (0070's post_unlock_tier, docs/supporters.md).
UNLOCK_TIERS = ("supporter_plus",)
MEMBER_ROLES = ("member", "supporter")
MAX_UNLOCK_PRICE = Decimal("99999999.99")  # DECIMAL(10,2)
MAX_NAME_CHARS = 100  # communities.name VARCHAR(100)
MAX_DESCRIPTION_CHARS = 5000  # 0071's community_description_length
MAX_BODY_CHARS = 20000  # 0070's post_body_length
CONTENT_KEYS = ("content_url", "body")

# The caller's own membership rides along with each community (RLS shows a user their own row).
COMMUNITY_SELECT = """SELECT id, creator_id, name, description, member_count, created_at,
    (SELECT jsonb_build_object('role', m.role, 'joined_at', m.joined_at) FROM community_members m
      WHERE m.community_id = communities.id AND m.user_id = auth.uid()) AS membership
  FROM communities"""
POST_SELECT = """SELECT id, community_id, creator_id, content_type, is_locked, min_tip_to_unlock, unlock_tier,
    created_at, unlocked, content_url, body FROM community_post_view"""
MEMBER_COLUMNS = "id, community_id, user_id, role, joined_at"


def _community_fields(body: dict) -> dict:
    return {
        "name": text(body, "name", required=True, max_len=MAX_NAME_CHARS),
        "description": text(body, "description", max_len=MAX_DESCRIPTION_CHARS, min_len=0),
    }


def _post_fields(body: dict) -> dict:
    """A post's columns from the request; a text post needs ``body``, any other type ``content_url``."""
    content_type = choice(body, "content_type", CONTENT_TYPES)
    fields = {
        "content_type": content_type,
        "content_url": http_url(body, "content_url", required=content_type != "text"),
        "body": text(body, "body", required=content_type == "text", max_len=MAX_BODY_CHARS),
        "is_locked": flag(body, "is_locked") if "is_locked" in body else False,
        "min_tip_to_unlock": amount(body, "min_tip_to_unlock", required=False),
        "unlock_tier": choice(body, "unlock_tier", UNLOCK_TIERS, required=False),
    }
    price = fields["min_tip_to_unlock"]
    if price is not None and price > MAX_UNLOCK_PRICE:
        raise invalid("min_tip_to_unlock", f"min_tip_to_unlock may be at most {MAX_UNLOCK_PRICE}")
    if fields["is_locked"] and price is None and fields["unlock_tier"] is None:
        raise invalid("min_tip_to_unlock", "a locked post needs min_tip_to_unlock, unlock_tier or both")
    if not fields["is_locked"]:
        for name in ("min_tip_to_unlock", "unlock_tier"):
            if fields[name] is not None:
                raise invalid(name, f"{name} applies only to a locked post (is_locked: true)")
    return fields


def _post(row: dict) -> dict:
    """The API's post: a post the caller may not read has no content keys (the view already nulled them)."""
    if not row["unlocked"]:
        return {k: v for k, v in row.items() if k not in CONTENT_KEYS}
    return row


async def _community(conn, community_id: str) -> dict:
    row = await (await conn.execute(f"{COMMUNITY_SELECT} WHERE id = %(id)s", {"id": community_id})).fetchone()
    if row is None:
        raise not_found("community")
    return row


@routes.post("/v1/communities")
async def create_community(request: web.Request) -> web.Response:
    who = (await caller(request)).require("creator")
    fields = _community_fields(await read_json(request))
    async with as_user(request.app[PG_POOL], who.id) as conn:
        created = await (await conn.execute(
            "INSERT INTO communities (creator_id, name, description) VALUES (%(me)s, %(name)s, %(description)s)"
            " RETURNING id", {**fields, "me": who.id},
        )).fetchone()
        row = await _community(conn, created["id"])
    return respond(row, 201)


@routes.get("/v1/communities")
async def list_communities(request: web.Request) -> web.Response:
    """Every community (public), newest first; ``creator_id`` filters, ``joined=true`` keeps the caller's."""
    who = await optional_caller(request)
    size, after = limit(request), cursor(request)
    where, params = ["true"], {}
    if "creator_id" in request.query:
        creator_id = canonical_uuid(request.query["creator_id"])
        if creator_id is None:
            raise invalid("creator_id", "creator_id must be a UUID")
        where.append("creator_id = %(creator_id)s")
        params["creator_id"] = creator_id
    joined = request.query.get("joined", "false")
    if joined not in ("true", "false"):
        raise invalid("joined", "joined must be true or false")
    if joined == "true":
        if who is None:
            raise ApiError(401, "unauthorized", "joined=true needs a login")
        where.append("id IN (SELECT community_id FROM community_members WHERE user_id = auth.uid())")
    async with as_user(request.app[PG_POOL], who.id if who else None) as conn:
        return respond(await fetch_page(conn, COMMUNITY_SELECT, where, params, size, after))


@routes.get("/v1/communities/{id}")
async def get_community(request: web.Request) -> web.Response:
    who = await optional_caller(request)
    async with as_user(request.app[PG_POOL], who.id if who else None) as conn:
        return respond(await _community(conn, path_id(request)))


@routes.post("/v1/communities/{id}/join")
async def join(request: web.Request) -> web.Response:
    """Join for free: 201 the first time, 200 with the same membership on a repeat (a safe retry)."""
    who = await caller(request)
    community_id = path_id(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        community = await _community(conn, community_id)
        if str(community["creator_id"]) == who.id:
            raise conflict("own_community", "a creator does not join their own community")
        inserted = await (await conn.execute(
            "INSERT INTO community_members (community_id, user_id) VALUES (%(c)s, %(me)s)"
            " ON CONFLICT (community_id, user_id) DO NOTHING RETURNING id",
            {"c": community_id, "me": who.id},
        )).fetchone()
        row = await _community(conn, community_id)
    return respond(row, 201 if inserted else 200)


@routes.post("/v1/communities/{id}/leave")
async def leave(request: web.Request) -> web.Response:
    """Leave: 200 with the community (``membership`` null) whether or not the caller was a member."""
    who = await caller(request)
    community_id = path_id(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await _community(conn, community_id)
        await conn.execute("DELETE FROM community_members WHERE community_id = %(c)s AND user_id = %(me)s",
                           {"c": community_id, "me": who.id})
        return respond(await _community(conn, community_id))


@routes.get("/v1/communities/{id}/members")
async def list_members(request: web.Request) -> web.Response:
    """The community's members, newest first: its creator (and admins) only."""
    who = await caller(request)
    community_id = path_id(request)
    size, after = limit(request), cursor(request)
    params = {"c": community_id, "limit": size + 1}
    where = "community_id = %(c)s"
    if after is not None:
        where += " AND (joined_at, id) < (%(after_at)s, %(after_id)s)"
        params.update(after_at=after[0], after_id=after[1])
    async with as_user(request.app[PG_POOL], who.id) as conn:
        community = await _community(conn, community_id)
        if str(community["creator_id"]) != who.id and not who.is_admin:
            raise forbidden("only the community's creator lists its members")
        rows = await (await conn.execute(
            f"SELECT {MEMBER_COLUMNS} FROM community_members WHERE {where}"
            f" ORDER BY joined_at DESC, id DESC LIMIT %(limit)s", params,
        )).fetchall()
    more = len(rows) > size
    rows = rows[:size]
    next_cursor = encode_cursor(rows[-1]["joined_at"], str(rows[-1]["id"])) if more else None
    return respond({"items": rows, "next_cursor": next_cursor})


@routes.post("/v1/communities/{id}/posts")
async def create_post(request: web.Request) -> web.Response:
    """The community's creator posts; anyone else is refused (403), here and by the database (0070, 0074)."""
    who = await caller(request)
    community_id = path_id(request)
    fields = _post_fields(await read_json(request))
    async with as_user(request.app[PG_POOL], who.id) as conn:
        community = await _community(conn, community_id)
        if str(community["creator_id"]) != who.id:
            raise forbidden("only the community's creator may post in it")
        columns = ["community_id", "creator_id", *fields]
        created = await (await conn.execute(
            f"INSERT INTO community_posts ({', '.join(columns)})"
            f" VALUES ({', '.join(f'%({c})s' for c in columns)}) RETURNING id",
            {**fields, "community_id": community_id, "creator_id": who.id},
        )).fetchone()
        row = await (await conn.execute(f"{POST_SELECT} WHERE id = %(id)s", {"id": created["id"]})).fetchone()
    return respond(_post(row), 201)


@routes.get("/v1/communities/{id}/posts")
async def list_posts(request: web.Request) -> web.Response:
    """The community's feed, newest first; each post carries its content only where the caller may read it."""
    who = await optional_caller(request)
    community_id = path_id(request)
    size, after = limit(request), cursor(request)
    async with as_user(request.app[PG_POOL], who.id if who else None) as conn:
        await _community(conn, community_id)
        found = await fetch_page(conn, POST_SELECT, ["community_id = %(c)s"], {"c": community_id}, size, after)
    return respond({**found, "items": [_post(row) for row in found["items"]]})


@routes.get("/v1/posts/{id}")
async def get_post(request: web.Request) -> web.Response:
    who = await optional_caller(request)
    async with as_user(request.app[PG_POOL], who.id if who else None) as conn:
        row = await (await conn.execute(f"{POST_SELECT} WHERE id = %(id)s", {"id": path_id(request)})).fetchone()
    if row is None:
        raise not_found("post")
    return respond(_post(row))


PUBLIC_OR_SIGNED_IN = [{}, {"bearer": []}, {"session": []}]
MEMBERSHIP = oa.obj({"role": {"enum": list(MEMBER_ROLES)}, "joined_at": oa.TIMESTAMP}, ["role", "joined_at"])
COMMUNITY = oa.obj({
    "id": oa.UUID, "creator_id": oa.UUID, "name": {"type": "string"}, "description": oa.nullable({"type": "string"}),
    "member_count": {"type": "integer", "minimum": 0}, "created_at": oa.TIMESTAMP,
    "membership": {**oa.nullable(MEMBERSHIP), "description": "the caller's membership; null when not a member"},
}, ["id", "creator_id", "name", "member_count", "created_at", "membership"])
COMMUNITY_INPUT = oa.obj({
    "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
    "description": {"type": "string", "maxLength": MAX_DESCRIPTION_CHARS},
}, ["name"])
MEMBER = oa.obj({
    "id": oa.UUID, "community_id": oa.UUID, "user_id": oa.UUID, "role": {"enum": list(MEMBER_ROLES)},
    "joined_at": oa.TIMESTAMP,
}, ["id", "community_id", "user_id", "role", "joined_at"])
POST = oa.obj({
    "id": oa.UUID, "community_id": oa.UUID, "creator_id": oa.UUID, "content_type": {"enum": list(CONTENT_TYPES)},
    "is_locked": {"type": "boolean"}, "min_tip_to_unlock": oa.nullable(oa.MONEY),
    "unlock_tier": oa.nullable({"enum": list(UNLOCK_TIERS)}), "created_at": oa.TIMESTAMP,
    "unlocked": {"type": "boolean", "description": "whether the caller may read the content; when false, "
                                                   "content_url and body are absent"},
    "content_url": oa.nullable({"type": "string"}), "body": oa.nullable({"type": "string"}),
}, ["id", "community_id", "creator_id", "content_type", "is_locked", "min_tip_to_unlock", "unlock_tier",
    "created_at", "unlocked"])
POST_INPUT = oa.obj({
    "content_type": {"enum": list(CONTENT_TYPES)},
    "content_url": {"type": "string", "format": "uri", "maxLength": 2048,
                    "description": "http(s); required unless content_type is text"},
    "body": {"type": "string", "minLength": 1, "maxLength": MAX_BODY_CHARS,
             "description": "the text of a text post (required there), or a caption"},
    "is_locked": {"type": "boolean", "default": False},
    "min_tip_to_unlock": {**oa.AMOUNT, "description": "locked posts only: a tip of at least this unlocks it"},
    "unlock_tier": {"enum": list(UNLOCK_TIERS),
                    "description": "locked posts only: members of the community holding this tier read it"},
}, ["content_type"])
ID = [oa.path_param()]
LIST_PARAMS = [
    *oa.PAGE_PARAMS,
    {"name": "creator_id", "in": "query", "required": False, "schema": {"type": "string", "format": "uuid"}},
    {"name": "joined", "in": "query", "required": False, "schema": {"enum": ["true", "false"]},
     "description": "true: only communities the caller joined (needs a login)"},
]


def _public(op: dict) -> dict:
    return {**op, "security": PUBLIC_OR_SIGNED_IN}


OPENAPI = {
    "/v1/communities": {
        "post": oa.operation("Create a community (creator)", {"201": oa.json_response("the community", COMMUNITY)},
                             body=oa.json_body(COMMUNITY_INPUT)),
        "get": _public(oa.operation("Communities, newest first (public)",
                                    {"200": oa.json_response("communities", oa.page_of(COMMUNITY))},
                                    parameters=LIST_PARAMS)),
    },
    "/v1/communities/{id}": {
        "get": _public(oa.operation("One community (public)", {"200": oa.json_response("the community", COMMUNITY)},
                                    parameters=ID)),
    },
    "/v1/communities/{id}/join": {"post": oa.operation(
        "Join a community (free; repeating it is a no-op 200)",
        {"201": oa.json_response("the community, joined", COMMUNITY),
         "200": oa.json_response("the community; the caller was already a member", COMMUNITY)}, parameters=ID)},
    "/v1/communities/{id}/leave": {"post": oa.operation(
        "Leave a community (a no-op when not a member)",
        {"200": oa.json_response("the community, membership null", COMMUNITY)}, parameters=ID)},
    "/v1/communities/{id}/members": {"get": oa.operation(
        "Members of a community, newest first (its creator)",
        {"200": oa.json_response("members", oa.page_of(MEMBER))}, parameters=[*ID, *oa.PAGE_PARAMS])},
    "/v1/communities/{id}/posts": {
        "post": oa.operation("Post in a community (its creator)", {"201": oa.json_response("the post", POST)},
                             body=oa.json_body(POST_INPUT), parameters=ID),
        "get": _public(oa.operation("A community's posts, newest first; locked content only where unlocked",
                                    {"200": oa.json_response("posts", oa.page_of(POST))},
                                    parameters=[*ID, *oa.PAGE_PARAMS])),
    },
    "/v1/posts/{id}": {
        "get": _public(oa.operation("One post; content_url and body absent unless the caller may read them",
                                    {"200": oa.json_response("the post", POST)}, parameters=ID)),
    },
}
