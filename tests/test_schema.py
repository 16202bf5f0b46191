"""The Postgres schema: the seed's tables and indexes, money constraints, ledger immutability, RLS."""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg
import pytest

import sql
from oros.migrate import migrate_postgres

SEED_TABLES = {
    "users", "user_roles", "creator_profiles", "business_profiles", "wallets", "ledger_entries",
    "withdrawals", "campaigns", "campaign_creators", "tracking_links", "events",
    "memberships", "communities", "community_members", "community_posts", "tips", "tip_unlocks",
    "boosts", "rewards", "live_events", "live_sales",
}
SEED_INDEXES = {
    "idx_users_email", "idx_users_username", "idx_user_roles_user", "idx_user_roles_role",
    "idx_creator_hashtags", "idx_wallets_user", "idx_ledger_wallet", "idx_ledger_source",
    "idx_ledger_status", "idx_ledger_created", "idx_campaigns_business", "idx_campaigns_status",
    "idx_campaigns_hashtags", "idx_campaign_creators_campaign", "idx_campaign_creators_creator",
    "idx_tracking_campaign", "idx_tracking_creator", "idx_tracking_code",
}
# The seed's indexes on events that no query needs, dropped because every decided event paid for them
# (sql/postgres/0162 says which index serves each one's queries instead).
DROPPED_SEED_INDEXES = {
    "idx_events_campaign", "idx_events_creator", "idx_events_type", "idx_events_verified", "idx_events_created",
}
SEED_POLICIES = {
    ("users", "users_own_profile"), ("user_roles", "users_own_roles"),
    ("creator_profiles", "creator_own_profile"), ("business_profiles", "business_own_profile"),
    ("wallets", "wallet_owner_only"), ("ledger_entries", "ledger_owner_only"),
    ("campaigns", "campaigns_public_active"), ("campaigns", "campaigns_business_owner"),
    ("campaign_creators", "campaign_creators_view"), ("withdrawals", "withdrawals_owner_only"),
}


def make_user(pg, email: str) -> str:
    return pg.execute("INSERT INTO users (email) VALUES (%s) RETURNING id::text AS id", (email,)).fetchone()["id"]


def wallet_of(pg, user_id: str) -> str:
    return pg.execute(
        "SELECT id::text AS id FROM wallets WHERE user_id = %s AND purpose = 'main'", (user_id,)
    ).fetchone()["id"]


def post_one_statement(pg, legs, source_type: str = "adjustment") -> str:
    """Post one balanced transfer of legs ``(wallet_id, amount, direction, status)`` in one statement."""
    transfer = str(uuid.uuid4())
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(legs))
    params = [x for w, a, d, s in legs for x in (w, transfer, source_type, a, d, s)]
    pg.execute(
        "INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, amount, direction, status)"
        f" VALUES {values}",
        params,
    )
    return transfer


def platform(pg, purpose: str) -> str:
    return pg.execute("SELECT oros_platform_wallet(%s)::text AS id", (purpose,)).fetchone()["id"]


def balances(pg, wallet_id: str) -> tuple[Decimal, Decimal]:
    row = pg.execute("SELECT available_balance, pending_balance FROM wallets WHERE id = %s", (wallet_id,)).fetchone()
    return row["available_balance"], row["pending_balance"]


def test_every_seed_table_index_and_policy_exists(pg):
    tables = {r["tablename"] for r in pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert SEED_TABLES <= tables
    indexes = {r["indexname"] for r in pg.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert SEED_INDEXES <= indexes
    assert not DROPPED_SEED_INDEXES & indexes
    assert {"idx_events_campaign_occurred", "idx_events_creator_occurred"} <= indexes  # what serves their queries
    policies = {(r["tablename"], r["policyname"]) for r in pg.execute("SELECT tablename, policyname FROM pg_policies")}
    assert SEED_POLICIES <= policies
    no_rls = pg.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        " AND NOT relrowsecurity AND relname <> 'schema_migrations'"
    ).fetchall()
    assert no_rls == []


def test_migrations_are_recorded_and_idempotent(settings, pg):
    assert migrate_postgres(settings) == []
    recorded = [r["name"] for r in pg.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert recorded == [name for name, _ in sql.migrations("postgres")]


def test_negative_balances_are_refused(pg):
    wallet = wallet_of(pg, make_user(pg, "a@example.com"))
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute("UPDATE wallets SET available_balance = -0.01 WHERE id = %s", (wallet,))
    with pytest.raises(psycopg.errors.CheckViolation, match="positive_available"):
        post_one_statement(pg, [(wallet, "1.00", "debit", "settled"),
                                 (platform(pg, "fees"), "1.00", "credit", "settled")])
    assert balances(pg, wallet) == (Decimal("0.00"), Decimal("0.00"))


def test_unbalanced_transfer_is_refused(pg):
    wallet = wallet_of(pg, make_user(pg, "a@example.com"))
    with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
        post_one_statement(pg, [(wallet, "5.00", "credit", "settled"),
                                 (platform(pg, "fees"), "4.99", "debit", "settled")])


def test_pending_credit_raises_pending_then_settles_to_available(pg):
    """The seed's defect: a pending credit never reached pending_balance."""
    creator = wallet_of(pg, make_user(pg, "c@example.com"))
    post_one_statement(pg, [(creator, "3.00", "credit", "pending"),
                             (platform(pg, "clearing"), "3.00", "debit", "settled")])
    assert balances(pg, creator) == (Decimal("0.00"), Decimal("3.00"))
    pg.execute("UPDATE ledger_entries SET status = 'settled' WHERE wallet_id = %s", (creator,))
    assert balances(pg, creator) == (Decimal("3.00"), Decimal("0.00"))


def test_ledger_rows_cannot_be_deleted_or_have_amounts_changed(pg):
    creator = wallet_of(pg, make_user(pg, "c@example.com"))
    post_one_statement(pg, [(creator, "2.00", "credit", "settled"),
                             (platform(pg, "clearing"), "2.00", "debit", "settled")])
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="cannot be deleted"):
        pg.execute("DELETE FROM ledger_entries")
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="cannot be deleted"):
        pg.execute("TRUNCATE ledger_entries CASCADE")
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="immutable"):
        pg.execute("UPDATE ledger_entries SET amount = 200 WHERE wallet_id = %s", (creator,))
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="may not move"):
        pg.execute("UPDATE ledger_entries SET status = 'pending' WHERE wallet_id = %s", (creator,))
    assert pg.execute("SELECT count(*) AS n FROM ledger_entries").fetchone()["n"] == 2
    assert balances(pg, creator) == (Decimal("2.00"), Decimal("0.00"))


def test_reversing_one_leg_alone_is_refused(pg):
    creator = wallet_of(pg, make_user(pg, "c@example.com"))
    post_one_statement(pg, [(creator, "2.00", "credit", "settled"),
                             (platform(pg, "clearing"), "2.00", "debit", "settled")])
    with pytest.raises(psycopg.errors.CheckViolation, match="no longer balance"):
        pg.execute("UPDATE ledger_entries SET status = 'reversed' WHERE wallet_id = %s", (creator,))


def _as(conn, user_id: str):
    conn.execute("SELECT set_config('role', 'oros_app', true), set_config('request.jwt.claim.sub', %s, true)",
                 (user_id,))


def test_withdrawal_reserves_at_request_so_money_cannot_be_requested_twice(settings, pg):
    creator = make_user(pg, "c@example.com")
    pg.execute("UPDATE users SET kyc_status = 'approved' WHERE id = %s", (creator,))  # oros_request_withdrawal checks
    wallet = wallet_of(pg, creator)
    post_one_statement(pg, [(wallet, "15.00", "credit", "settled"),
                             (platform(pg, "clearing"), "15.00", "debit", "settled")])
    with psycopg.connect(settings.database_url) as conn:
        _as(conn, creator)
        conn.execute("SELECT oros_request_withdrawal(10.00, 'ach')")
        conn.commit()
        _as(conn, creator)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("SELECT oros_request_withdrawal(10.00, 'ach')")
        conn.rollback()
    assert balances(pg, wallet) == (Decimal("5.00"), Decimal("0.00"))
    withdrawal = pg.execute("SELECT id FROM withdrawals").fetchone()["id"]
    pg.execute("SELECT oros_finish_withdrawal(%s, false, NULL, 'bank refused')", (withdrawal,))
    assert balances(pg, wallet) == (Decimal("15.00"), Decimal("0.00"))


def test_rls_user_cannot_read_another_users_wallet_ledger_or_withdrawals(settings, pg):
    alice, bob = make_user(pg, "alice@example.com"), make_user(pg, "bob@example.com")
    for user in (alice, bob):
        wallet = wallet_of(pg, user)
        post_one_statement(pg, [(wallet, "20.00", "credit", "settled"),
                                 (platform(pg, "clearing"), "20.00", "debit", "settled")])
        pg.execute(
            "INSERT INTO withdrawals (wallet_id, amount, method) VALUES (%s, 1.00, 'ach')", (wallet,)
        )
    with psycopg.connect(settings.database_url) as conn:
        _as(conn, alice)
        wallets = conn.execute("SELECT user_id::text FROM wallets").fetchall()
        ledger = conn.execute("SELECT DISTINCT w.user_id::text FROM ledger_entries l"
                              " JOIN wallets w ON w.id = l.wallet_id").fetchall()
        withdrawals = conn.execute("SELECT w.user_id::text FROM withdrawals d"
                                   " JOIN wallets w ON w.id = d.wallet_id").fetchall()
        users = conn.execute("SELECT id::text FROM users").fetchall()
        assert wallets == [(alice,)]
        assert ledger == [(alice,)]
        assert withdrawals == [(alice,)]
        assert users == [(alice,)]
        # Money is not writable through table grants, even on one's own rows.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE wallets SET available_balance = 1000")
        conn.rollback()
        _as(conn, alice)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'admin')", (alice,))
        conn.rollback()


def test_campaign_budget_cannot_go_negative_or_exceed_funding(pg):
    business = make_user(pg, "b@example.com")
    campaign = pg.execute(
        "INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget)"
        " VALUES (%s, 't', 'click', 1.00, 50) RETURNING id", (business,)
    ).fetchone()["id"]
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute("UPDATE campaigns SET remaining_budget = 10 WHERE id = %s", (campaign,))
    pg.execute("SELECT oros_fund_campaign(%s, 30, 'manual', 'wire', NULL)", (campaign,))
    row = pg.execute("SELECT remaining_budget, funded_budget FROM campaigns WHERE id = %s", (campaign,)).fetchone()
    assert (row["remaining_budget"], row["funded_budget"]) == (Decimal("30.00"), Decimal("30.00"))
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute("UPDATE campaigns SET remaining_budget = -1 WHERE id = %s", (campaign,))
    assert balances(pg, platform(pg, "escrow")) == (Decimal("30.00"), Decimal("0.00"))
    assert balances(pg, platform(pg, "clearing")) == (Decimal("30.00"), Decimal("0.00"))
