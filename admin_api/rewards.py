"""``GET /v1/me/rewards``: what the caller earned as a supporter, newest first.

Rows come through ``reward_view`` (sql/postgres/0105), which answers only
about the caller: a pending boost reward shows what it has accrued so far
(fixed, and paid into the wallet, when its campaign completes) and what its
boost still holds unspent. A paid reward is in the caller's wallet like any
earning (held as long as the payouts it was earned on, then withdrawable:
``POST /v1/withdrawals``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from oros.connections import as_user
from oros.wire import Money, OneOf, Uuid

from .auth import caller
from .pages import Page, PageQuery, fetch_page
from .payload import parse_query, respond
from .routing import Routes
from .typedefs import PG_POOL

routes = Routes()

# The seed's sources; no flow produces 'prediction' (docs/supporters.md).
SOURCES = ("boost", "share", "prediction")
STATUSES = ("pending", "paid")
REWARD_COLUMNS = ("id, source, status, amount, campaign_id, boost_id, tracking_link_id, unspent, transfer_id, paid_at,"
                  " created_at")


class RewardQuery(PageQuery):
    source: OneOf(*SOURCES) = None
    status: OneOf(*STATUSES) = None


class Reward(BaseModel):
    """The reward"""

    id: Uuid
    source: Literal[SOURCES]
    status: Literal[STATUSES]
    amount: Money = Field(description="paid: what was paid; a pending boost reward: what it has accrued so far")
    campaign_id: Uuid | None
    boost_id: Uuid | None
    tracking_link_id: Uuid | None = Field(description="a share reward's: the share link it was earned through")
    unspent: Money | None = Field(description="a boost's: what it still holds in the campaign's budget")
    transfer_id: Uuid | None
    paid_at: datetime | None
    created_at: datetime


@routes.get("/v1/me/rewards", "The caller's rewards, newest first (by source and status)", query=RewardQuery,
            responses={200: Page[Reward]})
async def list_rewards(request: web.Request) -> web.Response:
    who = await caller(request)
    query = parse_query(RewardQuery, request)
    where, params = ["user_id = %(me)s"], {"me": who.id}
    for name in ("source", "status"):
        if (value := getattr(query, name)) is not None:
            where.append(f"{name} = %({name})s")
            params[name] = value
    async with as_user(request.app[PG_POOL], who.id) as conn:
        return respond(await fetch_page(conn, f"SELECT {REWARD_COLUMNS} FROM reward_view", where, params, query))
