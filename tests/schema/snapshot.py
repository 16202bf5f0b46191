"""The migrated schema as sorted text lines, compared with the checked-in snapshot by tests/test_schema_snapshot.py.

A migration that changes the schema changes the snapshot in the same commit, so a reviewer sees
every table, constraint, index, function, trigger, policy and grant it touches. ``functions.txt``
holds the current body of every function of ours (``pg_get_functiondef``), in name order: a
function redefined by later migrations (``CREATE OR REPLACE``) is read there in one place, as it
runs, instead of by finding the last migration that defines it.

    .venv/bin/python tests/schema/snapshot.py --update   (against the Postgres/ClickHouse the tests use)

Catalog queries rather than pg_dump: the lines do not depend on the server's version or dump format.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
POSTGRES_SNAPSHOT = HERE / "postgres.txt"
FUNCTIONS_SNAPSHOT = HERE / "functions.txt"
CLICKHOUSE_SNAPSHOT = HERE / "clickhouse.txt"
SCHEMAS = "('public', 'auth')"
ROLES = "('PUBLIC', 'oros_app', 'oros_api', 'oros_tracker', 'oros_webhooks')"

POSTGRES_QUERIES = {
    "column": f"""SELECT table_schema || '.' || table_name || '.' || column_name || ' ' || data_type
                  || CASE WHEN is_nullable = 'NO' THEN ' NOT NULL' ELSE '' END
                  || coalesce(' DEFAULT ' || column_default, '')
                  FROM information_schema.columns WHERE table_schema IN {SCHEMAS}""",
    "constraint": f"""SELECT n.nspname || '.' || c.conrelid::regclass::text || ' ' || c.conname || ' '
                      || pg_get_constraintdef(c.oid)
                      FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
                      WHERE n.nspname IN {SCHEMAS} AND c.conrelid <> 0""",
    "index": f"SELECT indexdef FROM pg_indexes WHERE schemaname IN {SCHEMAS}",
    "function": f"""SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
                    || ' -> ' || pg_get_function_result(p.oid)
                    || CASE WHEN p.prosecdef THEN ' SECURITY DEFINER' ELSE '' END
                    || coalesce(' SET ' || array_to_string(p.proconfig, ','), '')
                    || ' body md5 ' || md5(p.prosrc)
                    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN {SCHEMAS}""",
    "trigger": f"""SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN {SCHEMAS} AND NOT t.tgisinternal""",
    "policy": f"""SELECT schemaname || '.' || tablename || ' ' || policyname || ' ' || permissive || ' ' || cmd
                  || ' TO ' || array_to_string(roles, ',') || coalesce(' USING ' || qual, '')
                  || coalesce(' CHECK ' || with_check, '')
                  FROM pg_policies WHERE schemaname IN {SCHEMAS}""",
    "rls": f"""SELECT n.nspname || '.' || c.relname || CASE WHEN c.relforcerowsecurity THEN ' forced' ELSE '' END
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname IN {SCHEMAS} AND c.relrowsecurity""",
    "view": f"""SELECT schemaname || '.' || viewname || ' md5 ' || md5(definition)
                 FROM pg_views WHERE schemaname IN {SCHEMAS}""",
    "table grant": f"""SELECT grantee || ' ' || privilege_type || ' ON ' || table_schema || '.' || table_name
                       FROM information_schema.role_table_grants
                       WHERE table_schema IN {SCHEMAS} AND grantee IN {ROLES}""",
    "column grant": f"""SELECT grantee || ' ' || privilege_type || ' (' || column_name || ') ON ' || table_schema
                        || '.' || table_name FROM information_schema.column_privileges
                        WHERE table_schema IN {SCHEMAS} AND grantee IN {ROLES}""",
    "routine grant": f"""SELECT grantee || ' EXECUTE ON ' || routine_schema || '.' || routine_name
                         FROM information_schema.role_routine_grants
                         WHERE routine_schema IN {SCHEMAS} AND grantee IN {ROLES}""",
}


def postgres_lines(conn) -> list[str]:
    from psycopg.rows import tuple_row

    lines = set()
    with conn.cursor(row_factory=tuple_row) as cur:
        for kind, query in POSTGRES_QUERIES.items():
            lines.update(f"{kind}: {' '.join(row[0].split())}" for row in cur.execute(query).fetchall())
    return sorted(lines)


# Our functions (not an extension's), each as CREATE OR REPLACE would define it now.
FUNCTION_BODIES_SQL = f"""
SELECT p.oid::regprocedure::text AS fn, pg_get_functiondef(p.oid) AS body
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN {SCHEMAS} AND p.prokind IN ('f', 'p')
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
 ORDER BY 1
"""


def function_lines(conn) -> list[str]:
    """Every function's current definition, in signature order, each after a comment naming it."""
    from psycopg.rows import tuple_row

    lines = ["-- The current body of every OROS function, as the migrations leave it (tests/schema/snapshot.py)."]
    with conn.cursor(row_factory=tuple_row) as cur:
        for fn, body in cur.execute(FUNCTION_BODIES_SQL).fetchall():
            lines += ["", f"-- {fn}", *(line.rstrip() for line in body.strip().splitlines()), ";"]
    return lines


def clickhouse_lines(client, database: str) -> list[str]:
    lines = []
    for (table,) in client.query(f"SHOW TABLES FROM `{database}`").result_rows:
        ddl = client.command(f"SHOW CREATE TABLE `{database}`.`{table}`")
        ddl = str(ddl).replace("\\n", "\n").replace("\\'", "'")
        ddl = re.sub(rf"`?{re.escape(database)}`?\.", "", ddl)
        # A view's merge(currentDatabase(), ...) is stored with the database's name (sql/clickhouse/0004).
        ddl = ddl.replace(f"merge('{database}', ", "merge(currentDatabase(), ")
        lines.extend(f"{table}: {line.rstrip()}" for line in ddl.splitlines() if line.strip())
    return lines


def main(argv: list[str]) -> int:
    if argv != ["--update"]:
        print(__doc__)
        return 2
    sys.path.insert(0, str(HERE.parent.parent))
    import tempfile
    from dataclasses import replace

    import psycopg

    from oros import embedded
    from oros.connections import clickhouse_client
    from oros.migrate import migrate_clickhouse, migrate_postgres
    from oros.settings import Settings
    with tempfile.TemporaryDirectory() as tmp:
        settings, servers = embedded.resolve(replace(Settings.from_env(), data_dir=Path(tmp),
                                                     clickhouse_url=f"chdb://{tmp}/chdb"), prefer_local=True)
        try:
            name = "oros_schema_snapshot"
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                conn.execute(f'CREATE DATABASE "{name}"')
            url = settings.database_url.rsplit("/", 1)[0] + f"/{name}"
            snapshot = replace(settings, database_url=url, clickhouse_database="snapshot")
            migrate_postgres(snapshot)
            migrate_clickhouse(snapshot)
            with psycopg.connect(url) as conn:
                POSTGRES_SNAPSHOT.write_text("\n".join(postgres_lines(conn)) + "\n")
                FUNCTIONS_SNAPSHOT.write_text("\n".join(function_lines(conn)) + "\n")
            CLICKHOUSE_SNAPSHOT.write_text("\n".join(clickhouse_lines(clickhouse_client(snapshot), "snapshot")) + "\n")
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            servers.stop()
    print(f"wrote {POSTGRES_SNAPSHOT}, {FUNCTIONS_SNAPSHOT} and {CLICKHOUSE_SNAPSHOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
