"""Typed application and request keys of the admin API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from oros.clientip import ClientIp
from oros.settings import Settings

if TYPE_CHECKING:
    from .attempts import HashGate
    from .auth import Caller
    from .health import Metrics

SETTINGS = web.AppKey("settings", Settings)
PG_POOL = web.AppKey("pg_pool", AsyncConnectionPool)
# Reports that tolerate replication lag read here: the replica of DATABASE_READ_URL, else PG_POOL itself.
READ_POOL = web.AppKey("pg_read_pool", AsyncConnectionPool)
JOBS = web.AppKey("owner_jobs", object)  # oros.jobs.OwnerJobs, or None: the settler runs them
REDIS = web.AppKey("redis", aioredis.Redis)
# The one rule for who the client is behind OROS_TRUSTED_PROXIES (shared with the tracker).
CLIENT_IP = web.AppKey("client_ip", ClientIp)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", object)
HASH_GATE: web.AppKey[HashGate] = web.AppKey("hash_gate", object)
# The authenticated caller, resolved once per request by auth.caller().
CALLER: web.RequestKey[Caller] = web.RequestKey("caller", object)
