"""Typed application and request keys of the admin API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from oros.settings import Settings

if TYPE_CHECKING:
    from .auth import Caller
    from .health import Metrics

SETTINGS = web.AppKey("settings", Settings)
PG_POOL = web.AppKey("pg_pool", AsyncConnectionPool)
JOBS = web.AppKey("owner_jobs", object)  # oros.jobs.OwnerJobs, or None: the settler runs them
REDIS = web.AppKey("redis", aioredis.Redis)
METRICS: web.AppKey["Metrics"] = web.AppKey("metrics", object)
# The authenticated caller, resolved once per request by auth.caller().
CALLER: web.RequestKey["Caller"] = web.RequestKey("caller", object)
