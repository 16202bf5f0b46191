"""Typed application keys of the tracker."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from oros.clientip import ClientIp
from oros.keys import Keys
from oros.settings import Settings

from .appender import Appender
from .key_usage import KeyUsage
from .metrics import Metrics, SharedMetrics
from .misses import KnownCodes, MissBudget
from .replayer import Replayer
from .resolve import Resolver
from .spool import Spool

if TYPE_CHECKING:  # redirect.py imports this module
    from .redirect import Redirector

SETTINGS = web.AppKey("settings", Settings)
KEYS = web.AppKey("keys", Keys)
METRICS = web.AppKey("metrics", Metrics)
SHARED_METRICS = web.AppKey("shared_metrics", SharedMetrics)  # only with --workers N
CLIENT_IP = web.AppKey("client_ip", ClientIp)
REDIS = web.AppKey("redis", aioredis.Redis)
PG_POOL = web.AppKey("pg_pool", AsyncConnectionPool)
KEY_USAGE = web.AppKey("key_usage", KeyUsage)
SPOOL = web.AppKey("spool", Spool)
APPENDER = web.AppKey("appender", Appender)
RESOLVER = web.AppKey("resolver", Resolver)
REPLAYER = web.AppKey("replayer", Replayer)
KNOWN_CODES = web.AppKey("known_codes", KnownCodes)
MISS_BUDGET = web.AppKey("miss_budget", MissBudget)
REDIRECTOR: web.AppKey[Redirector] = web.AppKey("redirector")  # the /{code} rules, for the edge (tracker/edge.py)
