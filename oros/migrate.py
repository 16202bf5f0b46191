"""``oros migrate``: apply the Postgres and ClickHouse migrations that are not applied yet.

Postgres: each file runs in its own transaction and is recorded in
``schema_migrations`` in that same transaction, under an advisory lock so
concurrent migrators queue rather than collide. ClickHouse has no
transactional DDL, so its files are written to be re-runnable
(``IF NOT EXISTS``) and recorded after they succeed. With
``CLICKHOUSE_CLUSTER`` each statement runs in its cluster form
(``oros.clickhouse_cluster``), ``ON CLUSTER`` from the server migrate talks to.
"""

from __future__ import annotations

import logging

import psycopg

import sql

from .clickhouse_cluster import cluster_statements, database_statement, migrations_table_statement
from .connections import clickhouse_client, pg_connect
from .locks import MIGRATION_LOCK
from .settings import Settings

log = logging.getLogger(__name__)

# Database-level privileges live in pg_database, outside the schema, and
# CREATE DATABASE ... TEMPLATE does not copy them: so they are applied to the
# migrated database on every run rather than by a migration file. No role but
# the owner may create temp objects (a temp table shadows a table of the same
# name for its session); only the service roles may connect.
DATABASE_ACL_SQL = """
DO $$
BEGIN
  EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO oros_api, oros_tracker, oros_webhooks', current_database());
END
$$
"""


def migrate_postgres(settings: Settings) -> list[str]:
    applied_now: list[str] = []
    with pg_connect(settings, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {row["name"] for row in conn.execute("SELECT name FROM schema_migrations")}
            for name, text in sql.migrations("postgres"):
                if name in done:
                    continue
                with conn.transaction():
                    conn.execute(text)
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                log.info("postgres migration applied name=%s", name)
                applied_now.append(name)
            conn.execute(DATABASE_ACL_SQL)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied_now


def migrate_clickhouse(settings: Settings) -> list[str]:
    cluster = settings.clickhouse_cluster
    server = clickhouse_client(settings, database="")
    server.command(database_statement(settings.clickhouse_database, cluster))
    client = clickhouse_client(settings)
    client.command(migrations_table_statement(cluster))
    done = {row[0] for row in client.query("SELECT name FROM schema_migrations").result_rows}
    applied_now: list[str] = []
    for name, text in sql.migrations("clickhouse"):
        if name in done:
            continue
        for statement in clickhouse_statements(text, cluster):
            client.command(statement)
        client.insert("schema_migrations", [[name]], column_names=["name"])
        log.info("clickhouse migration applied name=%s", name)
        applied_now.append(name)
    return applied_now


def clickhouse_statements(text: str, cluster: str | None = None) -> list[str]:
    """A ClickHouse migration's statements, for one server or in their form for ``cluster``."""
    statements = _statements(text)
    if cluster is None:
        return statements
    return [rendered for statement in statements for rendered in cluster_statements(statement, cluster)]


def _statements(text: str) -> list[str]:
    """Split a ClickHouse migration on ``;`` at line ends (its files hold no such literal)."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [part.strip().rstrip(";") for part in body.split(";\n") if part.strip().rstrip(";")]


def run_migrate(settings: Settings) -> dict[str, list[str]]:
    try:
        postgres = migrate_postgres(settings)
    except psycopg.Error as exc:
        raise SystemExit(f"postgres migration failed: {exc}") from exc
    return {"postgres": postgres, "clickhouse": migrate_clickhouse(settings)}
