"""What deciding who may read each locked post costs a community feed page.

Builds a throwaway Postgres database with ``--posts`` posts in one measured
community (half of them locked: by price, by tier or both) among
``--other-posts`` in 999 others, ``--unlocks`` tip unlocks of which
``--heavy-unlocks`` belong to one heavy tipper (the rest come from 900 fans,
half of them on the 10 newest priced posts), and supporter_plus members.
Then, for each kind of caller, times one feed page (``--limit`` posts, the
first page and one from the middle by cursor) read the way a request reads it
(as ``oros_app`` with the caller's claim, through ``community_post_view``),
against the ceiling: the same page of the same columns read as the owner
straight from the table, deciding nothing. Prints medians and the ratio;
everything it made is dropped.

    .venv/bin/python loadtests/bench_feed.py --posts 200000 --other-posts 300000
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from oros import embedded
from oros.connections import APP_ROLE
from oros.migrate import migrate_postgres
from oros.settings import Settings

FILL = [
    "INSERT INTO users (email) SELECT 'bench-' || g || '@example.com' FROM generate_series(1, 1200) g",
    "INSERT INTO user_roles (user_id, role) SELECT id, 'creator' FROM users"
    " WHERE email ~ '^bench-([1-9]|[1-9][0-9]|1[0-9][0-9]|200)@'",
    """INSERT INTO communities (creator_id, name)
       SELECT u.id, 'community ' || g FROM generate_series(1, 1000) g
         JOIN users u ON u.email = 'bench-' || (g % 200 + 1) || '@example.com'""",
    "CREATE TEMP TABLE bench_c AS SELECT id, creator_id, row_number() OVER (ORDER BY id) AS n FROM communities",
    # The measured community is n = 1; the other posts spread over the rest. Half are locked: by price, by
    # tier, or both.
    """INSERT INTO community_posts (community_id, creator_id, content_type, content_url, body, is_locked,
                                    min_tip_to_unlock, unlock_tier, created_at)
       SELECT c.id, c.creator_id, 'video', 'https://cdn.example/' || g || '.mp4', 'caption ' || g, g %% 2 = 0,
              CASE WHEN g %% 4 = 0 OR g %% 8 = 2 THEN 5.00 END, CASE WHEN g %% 4 = 2 THEN 'supporter_plus' END,
              now() - g * interval '1 second'
         FROM generate_series(1, %(posts)s::int + %(other_posts)s::int) g
         JOIN bench_c c ON c.n = CASE WHEN g <= %(posts)s::int THEN 1 ELSE 2 + g %% 999 END""",
]
# Tips with unlocks of the measured community's priced posts: the heavy tipper's spread over all of them,
# then the fans', half of which go to the 10 newest (popular posts on the first page).
FILL_UNLOCKS = [
    """CREATE TEMP TABLE bench_priced AS
       SELECT p.id, p.creator_id, row_number() OVER (ORDER BY p.created_at DESC) AS n
         FROM community_posts p JOIN bench_c c ON c.id = p.community_id AND c.n = 1
        WHERE p.min_tip_to_unlock IS NOT NULL""",
    """CREATE TEMP TABLE bench_unlocks AS
       SELECT DISTINCT ON (sender, p.id) gen_random_uuid() AS tip_id, sender, p.id AS post_id, p.creator_id
         FROM generate_series(1, %(unlocks)s) g
        CROSS JOIN LATERAL (SELECT CASE WHEN g <= %(heavy)s THEN %(heavy_user)s::uuid
                                        ELSE (%(fans)s::uuid[])[g %% 900 + 1] END AS sender) s
         JOIN bench_priced p ON p.n = (g::bigint * 7919) %% CASE WHEN g > %(heavy)s AND g %% 2 = 0 THEN 10
                                                                 ELSE (SELECT count(*) FROM bench_priced) END + 1""",
    """INSERT INTO tips (id, from_user_id, to_creator_id, amount, platform_fee, net_amount)
       SELECT tip_id, sender, creator_id, 5.00, 0.25, 4.75 FROM bench_unlocks""",
    "INSERT INTO tip_unlocks (tip_id, community_post_id) SELECT tip_id, post_id FROM bench_unlocks",
]
COLUMNS = ("id, community_id, creator_id, content_type, is_locked, min_tip_to_unlock, unlock_tier, created_at,"
           " content_url, body")
PAGE = "SELECT {columns} FROM {source} WHERE community_id = %(c)s{after} ORDER BY created_at DESC, id DESC LIMIT %(n)s"
AFTER = " AND (created_at, id) < (%(at)s, %(id)s)"


def prepare(conn, posts: int, other_posts: int, unlocks: int, heavy: int) -> dict:
    started = time.perf_counter()
    for statement in FILL:
        conn.execute(statement, {"posts": posts, "other_posts": other_posts} if "%(" in statement else None)
    community = conn.execute("SELECT id, creator_id FROM bench_c WHERE n = 1").fetchone()
    users = [r["id"] for r in conn.execute(
        "SELECT id FROM users WHERE email ~ '^bench-(20[1-9]|2[1-9][0-9]|[3-9][0-9][0-9]|1[0-9]{3})@'"
        " ORDER BY email")]
    heavy_user, stranger, tier_member, fans = users[0], users[1], users[2], users[3:903]
    conn.execute("INSERT INTO community_members (community_id, user_id) SELECT %s, u FROM unnest(%s::uuid[]) u",
                 (community["id"], [heavy_user, tier_member, *fans]))
    conn.execute("INSERT INTO memberships (user_id, membership_type) SELECT u, 'supporter_plus'"
                 " FROM unnest(%s::uuid[]) u", ([tier_member, *fans[:300]],))
    for statement in FILL_UNLOCKS:
        conn.execute(statement, {"unlocks": unlocks, "heavy": heavy, "heavy_user": heavy_user, "fans": fans}
                     if "%(" in statement else None)
    conn.execute("ANALYZE")
    print(f"filled {posts:,} + {other_posts:,} posts, {unlocks:,} tips with unlocks "
          f"({heavy:,} by one tipper) in {time.perf_counter() - started:.1f} s")
    middle = conn.execute("SELECT created_at, id FROM community_posts WHERE community_id = %s"
                          " ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1",
                          (community["id"], posts // 2)).fetchone()
    return {"community": community["id"], "middle": middle, "callers": {
        "anonymous": None, "stranger": stranger, "heavy tipper": heavy_user, "tier member": tier_member,
        "creator": community["creator_id"]}}


def timed(conn, query: str, params: dict, caller: str | None, runs: int, *, as_app: bool) -> tuple[float, int]:
    """Median milliseconds of ``query`` in its own transaction, as the request role for ``caller`` or the owner."""
    timings, rows = [], 0
    for _ in range(runs):
        with conn.transaction():
            if as_app:
                conn.execute("SELECT set_config('role', %s, true), set_config('request.jwt.claim.sub', %s, true)",
                             (APP_ROLE, str(caller or "")))
            started = time.perf_counter()
            rows = len(conn.execute(query, params).fetchall())
            timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), rows


def measure(conn, world: dict, limit: int, runs: int) -> None:
    for label, after in (("first page", None), ("middle page", world["middle"])):
        params = {"c": world["community"], "n": limit}
        if after:
            params.update(at=after["created_at"], id=after["id"])
        suffix = AFTER if after else ""
        bare_sql = PAGE.format(columns=COLUMNS, source="community_posts", after=suffix)
        gated_sql = PAGE.format(columns=COLUMNS + ", unlocked", source="community_post_view", after=suffix)
        bare, _ = timed(conn, bare_sql, params, None, runs, as_app=False)
        print(f"{label}: ceiling (owner, table, no decision) median {bare:.3f} ms")
        for name, caller in world["callers"].items():
            gated, rows = timed(conn, gated_sql, params, caller, runs, as_app=True)
            print(f"  {name:13s} view as oros_app median {gated:7.3f} ms  {gated / bare:5.2f}x the ceiling"
                  f"  ({rows} posts)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=200_000)
    parser.add_argument("--other-posts", type=int, default=300_000)
    parser.add_argument("--unlocks", type=int, default=100_000)
    parser.add_argument("--heavy-unlocks", type=int, default=20_000)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = Settings.from_env()
        base, servers = embedded.resolve(replace(env, data_dir=Path(tmp), clickhouse_url=f"chdb://{tmp}/chdb"),
                                         prefer_local=True)
        name = f"oros_bench_{secrets.token_hex(3)}"
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        settings = replace(base, database_url=base.database_url.rsplit("/", 1)[0] + f"/{name}")
        try:
            migrate_postgres(settings)
            with psycopg.connect(settings.database_url, autocommit=True, row_factory=dict_row) as conn:
                world = prepare(conn, args.posts, args.other_posts, args.unlocks, args.heavy_unlocks)
                measure(conn, world, args.limit, args.runs)
        finally:
            with psycopg.connect(base.database_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            servers.stop()


if __name__ == "__main__":
    main()
