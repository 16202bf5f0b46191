"""Locked posts in SQL: as the request role (``oros_app`` with the caller's claim, as a request
runs), only those who may read a locked post's content get it, by any query (migration 0074).

Each caller attacks the table, the view, the statistics and the functions it may run. Tips,
unlocks and memberships are inserted as the owner (tests/supporter_facts.py): the money side
writes them. Also here: the writes the request role may not make (0070, 0072, 0074), and the
member count under cascades.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from oros.connections import as_user, pg_pool

from supporter_facts import membership, tip

SECRET_URL = "https://cdn.example/locked.mp4"
SECRET_BODY = "the locked caption"
CONTENT_QUERIES = [
    "SELECT content_url FROM community_posts",
    "SELECT body FROM community_posts",
    "SELECT * FROM community_posts",
    "SELECT p FROM community_posts p",
    "SELECT to_jsonb(p) FROM community_posts p",
    "SELECT id FROM community_posts WHERE content_url LIKE 'https://%%'",
    "SELECT id FROM community_posts ORDER BY body",
    "SELECT count(*) FROM community_posts GROUP BY content_url",
    "COPY (SELECT content_url FROM community_posts) TO STDOUT",
    "UPDATE community_posts SET is_locked = false",
    "DELETE FROM community_posts",
]


def user(pg, *roles: str) -> str:
    user_id = pg.execute("INSERT INTO users (email) VALUES (%s) RETURNING id::text AS id",
                         (f"{secrets.token_hex(6)}@example.com",)).fetchone()["id"]
    for role in roles:
        pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)", (user_id, role))
    return user_id


def join(pg, community: str, member: str) -> None:
    pg.execute("INSERT INTO community_members (community_id, user_id) VALUES (%s, %s)", (community, member))


@pytest.fixture
def world(pg) -> dict:
    """A community with a locked post (price and tier) and the callers around it."""
    w = {name: user(pg, *roles) for name, roles in {
        "creator": ("creator",), "stranger": ("supporter",), "member": ("supporter",),
        "unlocker": ("supporter",), "tier member": ("supporter",), "tier outsider": ("supporter",),
        "expired tier": ("supporter",), "admin": ("admin",), "rival": ("creator",)}.items()}
    w["community"] = pg.execute("INSERT INTO communities (creator_id, name) VALUES (%s, 'c') RETURNING id::text AS id",
                                (w["creator"],)).fetchone()["id"]
    w["post"] = pg.execute(
        "INSERT INTO community_posts (community_id, creator_id, content_type, content_url, body, is_locked,"
        " min_tip_to_unlock, unlock_tier) VALUES (%s, %s, 'video', %s, %s, true, 5.00, 'supporter_plus')"
        " RETURNING id::text AS id", (w["community"], w["creator"], SECRET_URL, SECRET_BODY)).fetchone()["id"]
    for name in ("member", "unlocker", "tier member", "expired tier"):
        join(pg, w["community"], w[name])
    tip(pg, w["unlocker"], w["creator"], "5.00", unlocks=w["post"])
    for name in ("tier member", "tier outsider"):
        membership(pg, w[name])
    membership(pg, w["expired tier"], ends_at=datetime.now(UTC) - timedelta(minutes=1))
    return w


READERS = {"unlocker", "tier member", "creator", "admin"}
CALLERS = ["anonymous", "stranger", "member", "unlocker", "tier member", "tier outsider", "expired tier",
           "creator", "admin"]


@pytest.fixture
async def pool(settings):
    pool = pg_pool(settings, max_size=2)
    await pool.open(wait=True)
    yield pool
    await pool.close()


def who(world: dict, name: str) -> str | None:
    return None if name == "anonymous" else world[name]


async def test_no_caller_reaches_the_content_columns_of_the_table(pool, world):
    for name in CALLERS:
        for query in CONTENT_QUERIES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                async with as_user(pool, who(world, name)) as conn:
                    await conn.execute(query)


async def test_the_view_gives_content_only_to_those_who_may_read_it(pool, world):
    for name in CALLERS:
        async with as_user(pool, who(world, name)) as conn:
            row = await (await conn.execute(
                "SELECT unlocked, content_url, body, min_tip_to_unlock, content_type FROM community_post_view"
                " WHERE id = %s", (world["post"],))).fetchone()
            # The view's output used as an oracle: filtering on the content finds nothing to filter.
            probe = await (await conn.execute(
                "SELECT count(*) AS n FROM community_post_view WHERE content_url = %s OR body LIKE 'the locked%%'",
                (SECRET_URL,))).fetchone()
            metadata = await (await conn.execute(
                "SELECT count(*) AS n FROM community_posts WHERE id = %s AND is_locked", (world["post"],))).fetchone()
        reads = name in READERS
        assert row["unlocked"] is reads, name
        assert (row["content_url"], row["body"]) == ((SECRET_URL, SECRET_BODY) if reads else (None, None)), name
        assert (row["min_tip_to_unlock"], row["content_type"]) == (Decimal("5.00"), "video"), name
        assert probe["n"] == (1 if reads else 0), name
        assert metadata["n"] == 1, name  # that the post exists, its type and price are public


async def test_statistics_do_not_leak_the_content(pool, pg, world):
    """pg_stats holds sample values; it hides columns a role may not select (and tables under RLS)."""
    pg.execute("ANALYZE community_posts")
    stats = "SELECT attname FROM pg_stats WHERE tablename = 'community_posts' AND attname IN ('content_url', 'body')"
    assert len(pg.execute(stats).fetchall()) == 2  # the owner sees them: the statistics exist
    async with as_user(pool, world["stranger"]) as conn:
        assert await (await conn.execute(stats)).fetchall() == []


async def test_an_unlock_opens_the_post_to_the_tip_sender_whoever_wrote_the_row(pool, pg, world):
    """The unlock's sender is the tip's (0073): a row naming someone else, or changed later, opens nothing for them."""
    forged = tip(pg, world["member"], world["creator"], "5.00")
    pg.execute("INSERT INTO tip_unlocks (tip_id, community_post_id, from_user_id) VALUES (%s, %s, %s)",
               (forged, world["post"], world["stranger"]))
    pg.execute("UPDATE tip_unlocks SET from_user_id = %s WHERE tip_id = %s", (world["stranger"], forged))
    for name, reads in (("stranger", False), ("member", True)):
        async with as_user(pool, world[name]) as conn:
            row = await (await conn.execute("SELECT unlocked FROM community_post_view WHERE id = %s",
                                            (world["post"],))).fetchone()
        assert row["unlocked"] is reads, name


async def test_a_feed_page_decides_only_the_posts_it_returns(pool, world):
    """The feed's ORDER BY ... LIMIT reaches the index through the view (it must stay flattenable, 0074), so
    access is decided for one page of posts, not for the whole community before sorting (loadtests/bench_feed.py)."""
    async with as_user(pool, world["stranger"]) as conn:
        await conn.execute("SET LOCAL enable_seqscan = off")  # the plan a big table gets, on a tiny one
        plan = await (await conn.execute(
            "EXPLAIN (FORMAT JSON) SELECT id, content_url FROM community_post_view WHERE community_id = %s"
            " AND (created_at, id) < (now(), %s) ORDER BY created_at DESC, id DESC LIMIT 50",
            (world["community"], world["post"]))).fetchone()
    nodes, todo = [], [plan["QUERY PLAN"][0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append((node["Node Type"], node.get("Index Name")))
        todo.extend(node.get("Plans", []))
    assert ("Index Scan", "idx_community_posts_feed") in nodes and not any(t == "Sort" for t, _ in nodes), nodes


def test_no_function_the_request_role_runs_reads_posts(pg):
    """The view is the one way to the content: no function oros_app may execute touches the table."""
    rows = pg.execute(
        "SELECT p.oid::regprocedure::text AS fn FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname IN ('public', 'auth') AND has_function_privilege('oros_app', p.oid, 'EXECUTE')"
        " AND p.prosrc ILIKE '%community_posts%'").fetchall()
    assert rows == []


async def test_writes_the_request_role_may_not_make(pool, pg, world):
    post = ("INSERT INTO community_posts (community_id, creator_id, content_type, body)"
            " VALUES (%(c)s, %(author)s, 'text', 'hi')")
    refusals = [
        # Posting into someone else's community: as oneself (the foreign key), or as its creator (RLS).
        ("rival", post, {"c": world["community"], "author": world["rival"]}, psycopg.errors.ForeignKeyViolation),
        ("rival", post, {"c": world["community"], "author": world["creator"]}, psycopg.errors.InsufficientPrivilege),
        ("creator", "INSERT INTO community_posts (community_id, creator_id, content_type, body, created_at)"
                    " VALUES (%(c)s, %(me)s, 'text', 'backdated', now() - interval '1 year')",
         {"c": world["community"], "me": world["creator"]}, psycopg.errors.InsufficientPrivilege),
        ("creator", "INSERT INTO community_posts (community_id, creator_id, content_type, body) VALUES"
                    " (%(c)s, %(me)s, 'text', 'x') RETURNING content_url",
         {"c": world["community"], "me": world["creator"]}, psycopg.errors.InsufficientPrivilege),
        ("creator", "INSERT INTO community_posts (community_id, creator_id, content_type, is_locked, body) VALUES"
                    " (%(c)s, %(me)s, 'text', true, 'no price, no tier')",
         {"c": world["community"], "me": world["creator"]}, psycopg.errors.CheckViolation),
        ("creator", "INSERT INTO community_posts (community_id, creator_id, content_type, content_url) VALUES"
                    " (%(c)s, %(me)s, 'link', 'javascript:alert(1)')",
         {"c": world["community"], "me": world["creator"]}, psycopg.errors.CheckViolation),
        # Self-promotion, counts, re-owning, and communities without the creator role.
        ("member", "UPDATE community_members SET role = 'supporter' WHERE user_id = %(me)s",
         {"me": world["member"]}, psycopg.errors.InsufficientPrivilege),
        ("stranger", "INSERT INTO community_members (community_id, user_id, role) VALUES (%(c)s, %(me)s, 'supporter')",
         {"c": world["community"], "me": world["stranger"]}, psycopg.errors.InsufficientPrivilege),
        ("creator", "UPDATE communities SET member_count = 1000", {}, psycopg.errors.InsufficientPrivilege),
        ("creator", "UPDATE communities SET creator_id = %(rival)s", {"rival": world["rival"]},
         psycopg.errors.InsufficientPrivilege),
        ("stranger", "INSERT INTO communities (creator_id, name) VALUES (%(me)s, 'not a creator')",
         {"me": world["stranger"]}, psycopg.errors.InsufficientPrivilege),
    ]
    for name, statement, params, error in refusals:
        with pytest.raises(error):
            async with as_user(pool, world[name]) as conn:
                await conn.execute(statement, {"me": world[name], **params})
    # Removing someone else's membership finds no row (RLS); the count is untouched.
    async with as_user(pool, world["stranger"]) as conn:
        gone = await conn.execute("DELETE FROM community_members WHERE user_id = %s", (world["member"],))
        assert gone.rowcount == 0
    assert pg.execute("SELECT member_count FROM communities WHERE id = %s", (world["community"],)).fetchone() == {
        "member_count": 4}
    assert pg.execute("SELECT count(*) AS n FROM community_posts").fetchone()["n"] == 1


def test_the_member_count_follows_joins_leaves_and_cascades(pg, world):
    count = "SELECT member_count FROM communities WHERE id = %s"
    assert pg.execute(count, (world["community"],)).fetchone()["member_count"] == 4
    pg.execute("DELETE FROM users WHERE id = %s", (world["member"],))  # cascades to the membership
    assert pg.execute(count, (world["community"],)).fetchone()["member_count"] == 3
    pg.execute("DELETE FROM communities WHERE id = %s", (world["community"],))  # cascades to members and posts
    assert pg.execute("SELECT count(*) AS n FROM community_members").fetchone()["n"] == 0
