"""The ClickHouse cluster form of the migrations (oros/clickhouse_cluster.py), checked where no cluster runs.

Every statement of the cluster form is parsed by the real ClickHouse parser (chDB's ``EXPLAIN AST``).
Then the part a single engine can run is run: the shard tables without replication and, standing in
for the Distributed table (which needs a cluster), a Merge table over them, so the settler and the
reports read through the same two-level schema with their usual queries. What needs a real
cluster (Keeper, replication, the Distributed insert) is in docs/scaling.md with its commands.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

import sql
from oros.clickhouse_cluster import UnsupportedStatement, cluster_statements, migrations_table_statement
from oros.connections import clickhouse_client
from oros.migrate import clickhouse_statements
from settler.run import settle_once

CLUSTER = "oros"


def every_cluster_statement() -> list[str]:
    return [s for _, text in sql.migrations("clickhouse") for s in clickhouse_statements(text, CLUSTER)]


def on_one_engine(statement: str) -> str:
    """A cluster statement as one engine can run it: no ON CLUSTER, no replication, Merge for Distributed
    (which takes no insert: the backfill writes the shard table)."""
    statement = statement.replace(f" ON CLUSTER {CLUSTER}", "")
    statement = re.sub(r"^INSERT INTO event_hours\s", "INSERT INTO event_hours_local ", statement)
    statement = re.sub(r"Replicated(\w+)MergeTree\('[^']*', '\{replica\}',? ?", r"\1MergeTree(", statement)
    return re.sub(r"Distributed\(\w+, currentDatabase\(\), (\w+), [^)]*\)\)", r"Merge(currentDatabase(), '^\1$')",
                  statement)


def test_every_statement_of_the_cluster_form_parses(ch):
    statements = [*every_cluster_statement(), migrations_table_statement(CLUSTER)]
    for statement in statements:
        ch.query(f"EXPLAIN AST {statement}")
    shard_table, distributed = statements[:2]
    assert "CREATE TABLE IF NOT EXISTS events_local ON CLUSTER oros (" in shard_table
    assert ("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/events_local', '{replica}', "
            "ingested_at)") in shard_table
    assert distributed == ("CREATE TABLE IF NOT EXISTS events ON CLUSTER oros AS events_local"
                           " ENGINE = Distributed(oros, currentDatabase(), events_local, cityHash64(event_id))")
    view = next(s for s in statements if s.startswith("CREATE MATERIALIZED VIEW"))
    assert view.startswith(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS event_hours_mv ON CLUSTER oros TO event_hours_local AS")
    assert "FROM events_local" in view and "'^events_local$'" in view and "FROM events " not in view
    assert "ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/{database}/event_hours_local', '{replica}')" in (
        next(s for s in statements if "event_hours_local ON CLUSTER oros (" in s))
    # Column changes reach both levels; constraints and indexes only the shards.
    enrichment = [s for s in statements if "country" in s and s.startswith("ALTER")]
    assert [s.split(" ADD ")[0] for s in enrichment] == [
        "ALTER TABLE events_local ON CLUSTER oros", "ALTER TABLE events ON CLUSTER oros"]
    assert "CONSTRAINT" not in enrichment[1] and "INDEX" not in enrichment[1] and " TTL " not in enrichment[1]


@pytest.mark.parametrize("statement", [
    "CREATE TABLE IF NOT EXISTS other (id UUID) ENGINE = ReplacingMergeTree ORDER BY id",
    "CREATE TABLE IF NOT EXISTS events (id UUID) ENGINE = MergeTree ORDER BY id",
    "ALTER TABLE other ADD COLUMN x String",
    "DROP TABLE events",
], ids=["no-sharding-key", "other-engine", "other-table", "other-statement"])
def test_a_statement_the_rules_do_not_cover_is_refused(statement):
    with pytest.raises(UnsupportedStatement):
        cluster_statements(statement, CLUSTER)


def test_the_queries_read_the_same_through_the_two_level_schema(settings, world):
    campaign = world.campaign(payout="0.50")
    creator = world.creator(campaign)
    clicks = [world.click(campaign, creator) for _ in range(6)]
    world.put([*clicks, world.click(campaign, creator, ip=clicks[0].ip)])  # a repeat: rejected as a duplicate
    cluster_db = f"{settings.clickhouse_database}_cluster"
    server = clickhouse_client(settings, database="")
    server.command(f"CREATE DATABASE `{cluster_db}`")
    try:
        two_level = replace(settings, clickhouse_database=cluster_db)
        client = clickhouse_client(two_level)
        for statement in every_cluster_statement():
            client.command(on_one_engine(statement))
        assert client.query("SELECT engine FROM system.tables WHERE database = currentDatabase()"
                            " AND name = 'events'").result_rows == [("Merge",)]
        single = clickhouse_client(settings)
        columns = "name, type, default_kind, default_expression"
        assert (client.query(f"SELECT {columns} FROM system.columns WHERE database = '{cluster_db}'"
                             " AND table = 'events' ORDER BY position").result_rows
                == single.query(f"SELECT {columns} FROM system.columns WHERE database = currentDatabase()"
                                " AND table = 'events' ORDER BY position").result_rows)
        names = [row[0] for row in single.query("SELECT name FROM system.columns WHERE database = currentDatabase()"
                                                " AND table = 'events' AND default_kind != 'EPHEMERAL'").result_rows]
        client.command(f"INSERT INTO events_local ({', '.join(names)}) SELECT {', '.join(names)}"
                       f" FROM `{settings.clickhouse_database}`.events")
        # The shard's view filled the hourly sums as the single server's did (the replay counted once).
        sums = "SELECT scope, dim, key, sum(clicks) FROM event_hours GROUP BY ALL ORDER BY ALL"
        assert client.query(sums).result_rows == single.query(sums).result_rows
        assert ("campaign", "", "", 7) in single.query(sums).result_rows
        on_shards, on_one = settle_once(two_level, dry_run=True), settle_once(settings, dry_run=True)
        for field in ("events_seen", "events_paid", "events_rejected", "amount_paid"):
            assert on_shards[field] == on_one[field], field
        assert (on_one["events_seen"], on_one["events_paid"]) == (7, 6)
    finally:
        server.command(f"DROP DATABASE IF EXISTS `{cluster_db}`")
