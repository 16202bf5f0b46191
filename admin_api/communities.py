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

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from oros.connections import as_user
from oros.httperrors import ApiError, conflict, forbidden, invalid, not_found
from oros.wire import Amount, Flag, HttpUrl, Money, OneOf, Text, Uuid, refuse

from .auth import caller
from .campaigns import optional_caller
from .pages import Page, PageQuery, fetch_page, page
from .payload import parse, parse_query, path_id, respond
from .routing import Routes
from .typedefs import PG_POOL

routes = Routes()

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


class CommunityIn(BaseModel):
    name: Text(MAX_NAME_CHARS)
    description: Text(MAX_DESCRIPTION_CHARS, min_len=0) | None = None


class CommunityQuery(PageQuery):
    creator_id: Uuid = None
    joined: OneOf("true", "false") = Field("false", description="true: only communities the caller joined "
                                                                 "(needs a login)")


class PostIn(BaseModel):
    """A new post: a text post needs body, any other type content_url."""

    content_type: OneOf(*CONTENT_TYPES)
    content_url: HttpUrl() | None = Field(None, validate_default=True,
                                          description="http(s); required unless content_type is text")
    body: Text(MAX_BODY_CHARS) | None = Field(None, validate_default=True,
                                              description="the text of a text post (required there), or a caption")
    is_locked: Flag = False
    min_tip_to_unlock: Amount(MAX_UNLOCK_PRICE) | None = Field(
        None, description="locked posts only: a tip of at least this unlocks it")
    unlock_tier: OneOf(*UNLOCK_TIERS) | None = Field(
        None, description="locked posts only: members of the community holding this tier read it")

    @field_validator("content_url", "body")
    @classmethod
    def _required_by_type(cls, value: str | None, info: ValidationInfo) -> str | None:
        # No content_type in info.data: it was refused, and that error is the one answered.
        kind = info.data.get("content_type")
        if value is None and kind is not None and info.field_name == ("body" if kind == "text" else "content_url"):
            refuse("is required")
        return value

    def columns(self) -> dict:
        """The post's columns, once the rules across fields hold (each names the field to fix)."""
        if self.is_locked and self.min_tip_to_unlock is None and self.unlock_tier is None:
            raise invalid("min_tip_to_unlock", "a locked post needs min_tip_to_unlock, unlock_tier or both")
        if not self.is_locked:
            for name in ("min_tip_to_unlock", "unlock_tier"):
                if getattr(self, name) is not None:
                    raise invalid(name, f"{name} applies only to a locked post (is_locked: true)")
        return self.model_dump()


class Membership(BaseModel):
    role: Literal[MEMBER_ROLES]
    joined_at: datetime


class Community(BaseModel):
    """The community"""

    id: Uuid
    creator_id: Uuid
    name: str
    description: str | None
    member_count: Annotated[int, Field(ge=0)]
    created_at: datetime
    membership: Membership | None = Field(description="the caller's membership; null when not a member")


class CommunityMember(BaseModel):
    """The membership"""

    id: Uuid
    community_id: Uuid
    user_id: Uuid
    role: Literal[MEMBER_ROLES]
    joined_at: datetime


class Post(BaseModel):
    """The post"""

    id: Uuid
    community_id: Uuid
    creator_id: Uuid
    content_type: Literal[CONTENT_TYPES]
    is_locked: bool
    min_tip_to_unlock: Money | None
    unlock_tier: Literal[UNLOCK_TIERS] | None
    created_at: datetime
    unlocked: bool = Field(description="whether the caller may read the content; when false, content_url and "
                                       "body are absent")
    content_url: str | None = None
    body: str | None = None


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


@routes.post("/v1/communities", "Create a community (creator)", body=CommunityIn, responses={201: Community})
async def create_community(request: web.Request) -> web.Response:
    who = (await caller(request)).require("creator")
    body = await parse(CommunityIn, request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        created = await (await conn.execute(
            "INSERT INTO communities (creator_id, name, description) VALUES (%(me)s, %(name)s, %(description)s)"
            " RETURNING id", {**body.model_dump(), "me": who.id},
        )).fetchone()
        row = await _community(conn, created["id"])
    return respond(row, 201)


@routes.get("/v1/communities", "Communities, newest first (public)", query=CommunityQuery,
            responses={200: Page[Community]}, access="optional")
async def list_communities(request: web.Request) -> web.Response:
    """Every community (public), newest first; ``creator_id`` filters, ``joined=true`` keeps the caller's."""
    who = await optional_caller(request)
    query = parse_query(CommunityQuery, request)
    where, params = ["true"], {}
    if query.creator_id is not None:
        where.append("creator_id = %(creator_id)s")
        params["creator_id"] = query.creator_id
    if query.joined == "true":
        if who is None:
            raise ApiError(401, "unauthorized", "joined=true needs a login")
        where.append("id IN (SELECT community_id FROM community_members WHERE user_id = auth.uid())")
    async with as_user(request.app[PG_POOL], who.id if who else None) as conn:
        return respond(await fetch_page(conn, COMMUNITY_SELECT, where, params, query))


@routes.get("/v1/communities/{id}", "One community (public)", responses={200: Community}, access="optional")
async def get_community(request: web.Request) -> web.Response:
    who = await optional_caller(request)
    async with as_user(request.app[PG_POOL], who.id if who else None) as conn:
        return respond(await _community(conn, path_id(request)))


@routes.post("/v1/communities/{id}/join", "Join a community (free; repeating it is a no-op 200)",
             responses={201: Community, 200: Community})
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


@routes.post("/v1/communities/{id}/leave", "Leave a community (a no-op when not a member)",
             responses={200: Community})
async def leave(request: web.Request) -> web.Response:
    """Leave: 200 with the community (``membership`` null) whether or not the caller was a member."""
    who = await caller(request)
    community_id = path_id(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await _community(conn, community_id)
        await conn.execute("DELETE FROM community_members WHERE community_id = %(c)s AND user_id = %(me)s",
                           {"c": community_id, "me": who.id})
        return respond(await _community(conn, community_id))


@routes.get("/v1/communities/{id}/members", "Members of a community, newest first (its creator)", query=PageQuery,
            responses={200: Page[CommunityMember]})
async def list_members(request: web.Request) -> web.Response:
    """The community's members, newest first by ``joined_at``: its creator (and admins) only."""
    who = await caller(request)
    community_id = path_id(request)
    query = parse_query(PageQuery, request)
    params = {"c": community_id, "limit": query.limit + 1}
    where = "community_id = %(c)s"
    if query.cursor is not None:
        where += " AND (joined_at, id) < (%(after_at)s, %(after_id)s)"
        params.update(after_at=query.cursor[0], after_id=query.cursor[1])
    async with as_user(request.app[PG_POOL], who.id) as conn:
        community = await _community(conn, community_id)
        if str(community["creator_id"]) != who.id and not who.is_admin:
            raise forbidden("only the community's creator lists its members")
        rows = await (await conn.execute(
            f"SELECT {MEMBER_COLUMNS} FROM community_members WHERE {where}"
            f" ORDER BY joined_at DESC, id DESC LIMIT %(limit)s", params,
        )).fetchall()
    return respond(page(rows, query.limit, key="joined_at"))


@routes.post("/v1/communities/{id}/posts", "Post in a community (its creator)", body=PostIn,
             responses={201: Post})
async def create_post(request: web.Request) -> web.Response:
    """The community's creator posts; anyone else is refused (403), here and by the database (0070, 0074)."""
    who = await caller(request)
    community_id = path_id(request)
    fields = (await parse(PostIn, request)).columns()
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


@routes.get("/v1/communities/{id}/posts", "A community's posts, newest first; locked content only where unlocked",
            query=PageQuery, responses={200: Page[Post]}, access="optional")
async def list_posts(request: web.Request) -> web.Response:
    """The community's feed, newest first; each post carries its content only where the caller may read it."""
    who = await optional_caller(request)
    community_id = path_id(request)
    query = parse_query(PageQuery, request)
    async with as_user(request.app[PG_POOL], who.id if who else None) as conn:
        await _community(conn, community_id)
        found = await fetch_page(conn, POST_SELECT, ["community_id = %(c)s"], {"c": community_id}, query)
    return respond({**found, "items": [_post(row) for row in found["items"]]})


@routes.get("/v1/posts/{id}", "One post; content_url and body absent unless the caller may read them",
            responses={200: Post}, access="optional")
async def get_post(request: web.Request) -> web.Response:
    who = await optional_caller(request)
    async with as_user(request.app[PG_POOL], who.id if who else None) as conn:
        row = await (await conn.execute(f"{POST_SELECT} WHERE id = %(id)s", {"id": path_id(request)})).fetchone()
    if row is None:
        raise not_found("post")
    return respond(_post(row))
