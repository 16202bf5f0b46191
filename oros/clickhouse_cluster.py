"""The cluster form of the ClickHouse migrations (``CLICKHOUSE_CLUSTER``), made from the one schema.

sql/clickhouse/ is written for one server. On a cluster, each table ``t`` becomes
``t_local``, a ReplicatedReplacingMergeTree on every shard (replicated through
ClickHouse Keeper, macros ``{shard}`` and ``{replica}`` from each server's
config), and ``t`` a Distributed table over them, so every query, the
settler's, the reports' and ingest's insert, names ``t`` as on one server. A
migration's statements are rewritten by these rules, and only these:

* ``CREATE TABLE IF NOT EXISTS t (...) ENGINE = ReplacingMergeTree(args) ...``
  becomes that table as ``t_local ON CLUSTER`` with the replicated engine,
  then ``t ON CLUSTER AS t_local ENGINE = Distributed(cluster,
  currentDatabase(), t_local, <t's sharding key>)``;
* ``ALTER TABLE t <clauses>`` runs on ``t_local ON CLUSTER``, and its column
  clauses (``ADD|MODIFY|DROP COLUMN``, a TTL stripped: it is the shard's
  business) also on ``t`` so the Distributed table keeps the same columns;
* ``CREATE MATERIALIZED VIEW IF NOT EXISTS v TO t AS SELECT ... FROM s``
  becomes ``v ON CLUSTER`` from ``s_local`` to ``t_local`` (and its lookup
  ``merge(currentDatabase(), '^s$')`` reads ``s_local``): each shard adds the
  blocks it stores to its own rows, which a read through ``t`` sums, and
  looks a replay up where the sharding key put the original;
* ``INSERT INTO t SELECT ...`` (a backfill) runs once, as it is, through the
  Distributed tables.

Anything else is refused, so a migration the rules do not cover fails on
its first run instead of diverging. The sharding key is the event id: a
replayed event lands on the shard holding the original, where the
ReplacingMergeTree (and ``FINAL`` / ``LIMIT 1 BY``) collapse it; a
campaign's events spread over every shard, which then scan in parallel.
docs/scaling.md, "ClickHouse", has the commands that check it on a real
cluster (docker-compose.cluster.yml).
"""

from __future__ import annotations

import re

# Per table: where a row lives. For events it must be a function of the event id (see above); the
# hourly sums (sql/clickhouse/0004) add up across shards, so any key spreads them.
SHARDING_KEYS = {"events": "cityHash64(event_id)", "event_hours": "cityHash64(scope_id)"}
REPLICATION_PATH = "/clickhouse/tables/{shard}/{database}/%s"

_CREATE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\s*\(", re.S)
_ENGINE = re.compile(r"ENGINE = (Replacing|Summing)MergeTree(?:\(([^)]*)\))?")
_VIEW = re.compile(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS\b", re.S)
_FROM = re.compile(r"\bFROM (\w+)\b")
_INSERT = re.compile(r"^INSERT INTO (\w+)\s+SELECT\b", re.S)
_ALTER = re.compile(r"^ALTER TABLE (\w+)\s+(.*)$", re.S)
_COLUMN_CLAUSE = re.compile(r"^(ADD|MODIFY|DROP) COLUMN\b", re.I)
_TTL = re.compile(r"\s+TTL\s+.*$", re.S)


class UnsupportedStatement(ValueError):
    """A migration statement the cluster rules do not cover."""


def cluster_statements(statement: str, cluster: str) -> list[str]:
    """``statement`` (one server's) as the statements that do the same on ``cluster``."""
    if create := _CREATE.match(statement):
        return _create(statement, create.group(1), cluster)
    if alter := _ALTER.match(statement):
        return _alter(alter.group(1), alter.group(2), cluster)
    if view := _VIEW.match(statement):
        return [_view(statement, view.group(1), view.group(2), cluster)]
    if (insert := _INSERT.match(statement)) and insert.group(1) in SHARDING_KEYS:
        return [statement]
    raise UnsupportedStatement(f"no cluster form for: {statement[:120]}")


def database_statement(database: str, cluster: str | None) -> str:
    return f"CREATE DATABASE IF NOT EXISTS `{database}`" + (f" ON CLUSTER {cluster}" if cluster else "")


def migrations_table_statement(cluster: str | None) -> str:
    """The table that records applied migrations: on a cluster, one replica set spanning every server."""
    if cluster is None:
        engine = "ReplacingMergeTree"
    else:
        engine = "ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/schema_migrations', '{replica}')"
    on_cluster = f" ON CLUSTER {cluster}" if cluster else ""
    return (f"CREATE TABLE IF NOT EXISTS schema_migrations{on_cluster} (name String, applied_at DateTime DEFAULT now())"
            f" ENGINE = {engine} ORDER BY name")


def _create(statement: str, table: str, cluster: str) -> list[str]:
    if table not in SHARDING_KEYS:
        raise UnsupportedStatement(f"table {table} has no sharding key (oros/clickhouse_cluster.py)")
    engine = _ENGINE.search(statement)
    if engine is None:
        raise UnsupportedStatement(f"table {table}: only Replacing- and SummingMergeTree have a cluster form")
    local = f"{table}_local"
    kind, own_args = engine.group(1), (engine.group(2) or "").strip()
    args = ", ".join(part for part in (f"'{REPLICATION_PATH % local}'", "'{replica}'", own_args) if part)
    shard_table = _CREATE.sub(f"CREATE TABLE IF NOT EXISTS {local} ON CLUSTER {cluster} (", statement, count=1)
    shard_table = _ENGINE.sub(lambda _: f"ENGINE = Replicated{kind}MergeTree({args})", shard_table, count=1)
    distributed = (f"CREATE TABLE IF NOT EXISTS {table} ON CLUSTER {cluster} AS {local}"
                   f" ENGINE = Distributed({cluster}, currentDatabase(), {local}, {SHARDING_KEYS[table]})")
    return [shard_table, distributed]


def _view(statement: str, view: str, target: str, cluster: str) -> str:
    sources = {name for name in _FROM.findall(statement) if name in SHARDING_KEYS}
    if target not in SHARDING_KEYS or not sources:
        raise UnsupportedStatement(f"view {view}: its source and target need a cluster form")
    body = statement[_VIEW.match(statement).end():]
    body = _FROM.sub(lambda m: f"FROM {m.group(1)}_local" if m.group(1) in SHARDING_KEYS else m.group(0), body)
    for source in sources:  # merge(currentDatabase(), '^events$'): the view's lookup of the shard's table
        body = body.replace(f"'^{source}$'", f"'^{source}_local$'")
    return f"CREATE MATERIALIZED VIEW IF NOT EXISTS {view} ON CLUSTER {cluster} TO {target}_local AS{body}"


def _alter(table: str, clauses_text: str, cluster: str) -> list[str]:
    if table not in SHARDING_KEYS:
        raise UnsupportedStatement(f"table {table} has no cluster form (oros/clickhouse_cluster.py)")
    statements = [f"ALTER TABLE {table}_local ON CLUSTER {cluster} {clauses_text}"]
    columns = [_TTL.sub("", clause) for clause in _clauses(clauses_text) if _COLUMN_CLAUSE.match(clause)]
    if columns:
        statements.append(f"ALTER TABLE {table} ON CLUSTER {cluster} " + ", ".join(columns))
    return statements


def _clauses(text: str) -> list[str]:
    """The comma-separated clauses of an ALTER, split only outside parentheses and quotes."""
    clauses, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            if char == quote and text[i - 1] != "\\":
                quote = None
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            clauses.append(text[start:i].strip())
            start = i + 1
    clauses.append(text[start:].strip())
    return [clause for clause in clauses if clause]
