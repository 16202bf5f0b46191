"""Connections to Postgres, Redis and ClickHouse, built from ``Settings``.

Each factory is the one place a connection is configured; processes wrap
them in aiohttp cleanup contexts or ``with`` blocks.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlparse

import clickhouse_connect
import psycopg
import redis.asyncio as aioredis
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.exceptions import RedisClusterException, RedisError

from .settings import Settings

log = logging.getLogger(__name__)

APP_ROLE = "oros_app"


def pg_connect(settings: Settings, *, autocommit: bool = False) -> psycopg.Connection:
    """A synchronous connection as the owner role (jobs, migrations, CLI)."""
    return psycopg.connect(settings.database_url, autocommit=autocommit, row_factory=dict_row)


def pg_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10) -> AsyncConnectionPool:
    """An async pool as the owner role; open it with ``await pool.open()``."""
    return AsyncConnectionPool(
        settings.database_url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row},
        open=False,
        name="oros",
    )


def pg_read_pool(settings: Settings, *, max_size: int = 10) -> AsyncConnectionPool:
    """An async pool on the read replica (``DATABASE_READ_URL``), every transaction read-only.

    Read-only even where the URL is not a hot standby (a misconfigured one, a test's stand-in):
    a handler moved onto it that writes fails loudly instead of writing somewhere else.
    """
    return AsyncConnectionPool(
        settings.database_read_url,
        min_size=1,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "options": "-c default_transaction_read_only=on"},
        open=False,
        name="oros-read",
    )


@asynccontextmanager
async def as_user(pool: AsyncConnectionPool, user_id: str | None) -> AsyncIterator[psycopg.AsyncConnection]:
    """A transaction run as the non-owner app role with ``auth.uid()`` = ``user_id``.

    Row-level security then decides what the caller sees; both settings are
    transaction-local, so nothing leaks to the pooled connection's next user.
    """
    async with pool.connection() as conn:
        async with conn.transaction():
            await act_as(conn, user_id)
            yield conn


async def act_as(conn: psycopg.AsyncConnection, user_id: str | None) -> None:
    """From here to the end of the current transaction, run as ``APP_ROLE`` for ``user_id``.

    Postgres lets any session change these settings, so they are only as
    trustworthy as the SQL this process sends: ``user_id`` comes from a
    verified token, and request input only ever travels as bind parameters
    (see docs/security.md, "Database roles and functions").
    """
    await conn.execute(
        "SELECT set_config('role', %(role)s, true), set_config('request.jwt.claim.sub', %(sub)s, true)",
        {"role": APP_ROLE, "sub": user_id or ""},
    )


# What ``redis_client`` returns: both speak the same commands, the cluster routes each by its key's slot.
AnyRedis = aioredis.Redis | RedisCluster


def redis_client(settings: Settings, **kwargs) -> AnyRedis:
    """A client of ``REDIS_URL``; with ``OROS_REDIS_CLUSTER=true`` a cluster client seeded by it."""
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **kwargs)
    return aioredis.Redis.from_url(settings.redis_url, **kwargs)


async def node_of(redis: AnyRedis, key: str, *, refresh: bool = False) -> dict:
    """How to reach the node that holds ``key``: its connection kwargs (host and port, or path; auth;
    db) plus ``ssl``. ``refresh`` re-reads a cluster's topology first (after a failover).
    """
    if isinstance(redis, RedisCluster):
        if refresh:
            await redis.nodes_manager.initialize()
        else:
            await redis.initialize()
        node = redis.get_node_from_key(key)
        return {**node.connection_kwargs, "ssl": issubclass(node.connection_class, SSLConnection)}
    pool = redis.connection_pool
    return {**pool.connection_kwargs, "ssl": issubclass(pool.connection_class, SSLConnection)}


@asynccontextmanager
async def connection_to(redis: AnyRedis, key: str) -> AsyncIterator[AbstractConnection]:
    """One connection to the node that holds ``key``, for commands that must share it (a write, then
    its WAIT). A connection an error left with unread replies is dropped, not reused.
    """
    if isinstance(redis, RedisCluster):
        await redis.initialize()
        node = redis.get_node_from_key(key)
        conn = node.acquire_connection()
        try:
            yield conn
        except BaseException:
            await conn.disconnect()
            # A failover or a moved slot: read where the key lives now, for the caller's retry.
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                await redis.nodes_manager.initialize()
            raise
        finally:
            node.release(conn)
        return
    conn = await redis.connection_pool.get_connection()
    try:
        yield conn
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await redis.connection_pool.release(conn)


_ch_lock = threading.Lock()
_ch_clients: dict[tuple[str, str], object] = {}

# chDB is one ClickHouse engine inside this process, shared by every client made here (ingest, settle,
# reconcile and reports all run in one ``oros dev`` process): its queries run one at a time.
CHDB_LOCK = threading.RLock()
# Client methods that return a stream: the engine stays busy until the stream is closed.
_STREAMS = frozenset({"query_rows_stream", "query_column_block_stream", "query_row_block_stream",
                      "query_df_stream", "query_np_stream", "query_arrow_stream", "query_df_arrow_stream",
                      "raw_stream"})


def clickhouse_client(settings: Settings, *, database: str | None = None):
    """The ClickHouse client: an HTTP server in production, chDB (in-process) embedded.

    Clients are shared per (url, database) within the process. chDB lets
    only one engine per process open a data directory, so a chDB client
    serialises its calls on ``CHDB_LOCK``; an HTTP client takes no lock and
    keeps no session, so threads query through it at once.
    """
    url = settings.clickhouse_url
    database = database if database is not None else settings.clickhouse_database
    key = (url, database, settings.clickhouse_cluster)
    with _ch_lock:
        client = _ch_clients.get(key)
        if client is None:
            client = _new_clickhouse_client(url, database, settings.clickhouse_cluster)
            _ch_clients[key] = client
        return client


# On a cluster an insert into the Distributed table returns once every shard's replicas that
# form a majority hold its rows, so ingest acknowledges a stream entry only when it is durable there.
CLUSTER_INSERT_SETTINGS = {"distributed_foreground_insert": 1, "insert_quorum": "auto"}


def _new_clickhouse_client(url: str, database: str, cluster: str | None):
    parsed = urlparse(url)
    if parsed.scheme == "chdb":
        return _SerialClient(clickhouse_connect.get_client(dsn=url, database=database or None))
    # No HTTP session: the client is shared by the process's threads (settle and reconcile jobs,
    # report queries), and a session takes one query at a time (clickhouse-connect refuses a second).
    return clickhouse_connect.get_client(dsn=url, database=database or None, compress=True,
                                         autogenerate_session_id=False,
                                         settings=CLUSTER_INSERT_SETTINGS if cluster else None)


class _SerialClient:
    """A chDB client whose every call (and every open stream) holds ``CHDB_LOCK``."""

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        if name in _STREAMS:
            return functools.partial(_locked_stream, attr)

        @functools.wraps(attr)
        def locked(*args, **kwargs):
            with CHDB_LOCK:
                return attr(*args, **kwargs)

        return locked


@contextmanager
def _locked_stream(open_stream, *args, **kwargs) -> Iterator:
    with CHDB_LOCK, open_stream(*args, **kwargs) as stream:
        yield stream


@contextmanager
def pg_transaction(settings: Settings) -> Iterator[psycopg.Connection]:
    with pg_connect(settings) as conn:
        with conn.transaction():
            yield conn
