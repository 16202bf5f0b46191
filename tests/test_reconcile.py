"""Reconcile names each kind of corruption (tampering as the owner, triggers off where needed)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from settler.reconcile import _merge_by_id, reconcile, run_reconcile_command
from settler.run import settle_once

from factories import now_ms


@pytest.fixture
def settled(world):
    """A settled click campaign and a settled sale campaign; books clean."""
    clicks = world.campaign(fund="20.00")
    alice = world.creator(clicks)
    sales = world.campaign(objective="sale", payout="4.00", fund="40.00")
    bob = world.creator(sales)
    click = world.click(sales, bob)
    world.put([world.click(clicks, alice) for _ in range(5)] + [click, world.conversion(click, kind="sale",
                                                                                        order_id="o-1")])
    assert settle_once(world.settings)["events_paid"] == 6
    assert all(c.ok for c in reconcile(world.settings))
    world.ids = {"clicks": clicks, "alice": alice, "sales": sales, "bob": bob}
    return world


def failing(world) -> set[str]:
    return {c.name for c in reconcile(world.settings) if not c.ok}


def tamper(world, sql: str, params=()) -> None:
    world.pg.execute("SET session_replication_role = replica")
    try:
        world.pg.execute(sql, params)
    finally:
        world.pg.execute("SET session_replication_role = DEFAULT")


def test_wallet_balance_off_its_ledger(settled):
    settled.pg.execute("UPDATE wallets SET pending_balance = pending_balance + 1 WHERE user_id = %s",
                       (settled.ids["alice"][0],))
    assert failing(settled) == {"wallet_balances_match_ledger"}


def test_unbalanced_transfer(settled):
    tamper(settled, "UPDATE ledger_entries SET amount = amount + 0.01 WHERE direction = 'credit'"
                    " AND source_type = 'campaign' AND wallet_id = oros_platform_wallet('fees')")
    assert {"transfers_balance", "wallet_balances_match_ledger"} <= failing(settled)


def test_budget_changed_behind_the_ledger(settled):
    settled.pg.execute("UPDATE campaigns SET remaining_budget = remaining_budget - 1 WHERE id = %s",
                       (settled.ids["clicks"],))
    assert failing(settled) == {"escrow_equals_remaining_budgets", "campaign_paid_matches_budget"}


def test_event_paid_twice(settled):
    row = settled.pg.execute("SELECT * FROM events WHERE status = 'paid' AND event_type = 'click' LIMIT 1").fetchone()
    settled.pg.execute(
        "INSERT INTO events (id, campaign_id, creator_id, event_type, status, transfer_id, payout_amount,"
        " platform_fee, paid, occurred_at) VALUES (%s, %s, %s, 'click', 'paid', %s, %s, %s, TRUE, %s)",
        (str(uuid.uuid4()), row["campaign_id"], row["creator_id"], row["transfer_id"], row["payout_amount"],
         row["platform_fee"], row["occurred_at"]))
    broken = failing(settled)
    assert {"no_event_paid_twice", "paid_events_match_clickhouse", "campaign_paid_matches_budget"} <= broken


def test_order_paid_twice(settled):
    tamper(settled, "DROP INDEX idx_events_paid_order")
    row = settled.pg.execute("SELECT * FROM events WHERE event_type = 'sale'").fetchone()
    settled.pg.execute(
        "INSERT INTO events (id, campaign_id, creator_id, event_type, status, order_id, occurred_at)"
        " VALUES (%s, %s, %s, 'sale', 'paid', 'o-1', %s)",
        (str(uuid.uuid4()), row["campaign_id"], row["creator_id"], row["occurred_at"]))
    assert "no_event_paid_twice" in failing(settled)


def test_order_paid_twice_to_unsigned_pixels(settled):
    # Beside the business's own sale, one unsigned pixel may be paid for its order (sql/postgres/0167), never two.
    row = settled.pg.execute("SELECT * FROM events WHERE event_type = 'sale'").fetchone()

    def pixel_sale() -> None:
        settled.pg.execute(
            "INSERT INTO events (id, campaign_id, creator_id, event_type, status, order_id, occurred_at,"
            " unsigned_pixel) VALUES (%s, %s, %s, 'sale', 'paid', 'o-1', %s, true)",
            (str(uuid.uuid4()), row["campaign_id"], row["creator_id"], row["occurred_at"]))

    pixel_sale()
    assert "no_event_paid_twice" not in failing(settled)
    tamper(settled, "DROP INDEX idx_events_paid_unsigned_pixel_order")
    pixel_sale()
    assert "no_event_paid_twice" in failing(settled)


def test_total_earned_and_negative_balance(settled):
    settled.pg.execute("UPDATE campaign_creators SET total_earned = -1 WHERE creator_id = %s",
                       (settled.ids["bob"][0],))
    assert failing(settled) == {"total_earned_matches_events", "no_negative_balances"}


def test_negative_wallet(settled):
    settled.pg.execute("ALTER TABLE wallets DROP CONSTRAINT positive_available")
    settled.pg.execute("UPDATE wallets SET available_balance = -5 WHERE user_id = %s", (settled.ids["alice"][0],))
    assert {"no_negative_balances", "wallet_balances_match_ledger"} <= failing(settled)


def test_clickhouse_event_never_settled(settled):
    """An event ClickHouse holds from before the watermark that Postgres never decided."""
    lost = settled.click(settled.ids["clicks"], settled.ids["alice"], ts_ms=now_ms() - 3_600_000)
    settled.put([lost])
    future = datetime.now(UTC) + timedelta(hours=1)
    settled.pg.execute("UPDATE settler_state SET watermark = %s", (future,))
    assert failing(settled) == {"paid_events_match_clickhouse"}


def test_command_exit_status(settled, capsys):
    assert run_reconcile_command(settled.settings) == 0
    settled.pg.execute("UPDATE wallets SET available_balance = available_balance + 1"
                       " WHERE id = oros_platform_wallet('escrow')")
    assert run_reconcile_command(settled.settings) == 1
    out = capsys.readouterr().out
    assert "FAIL escrow_equals_remaining_budgets" in out


def test_merge_by_id_pairs_every_id_once():
    ids = sorted(str(uuid.uuid4()) for _ in range(300))
    pg = [{"id": i} for n, i in enumerate(ids) if n % 3 != 0]
    ch = [(i,) for n, i in enumerate(ids) if n % 2 != 0]
    pairs = list(_merge_by_id(iter(pg), iter(ch)))
    assert [(p or {"id": c[0]})["id"] for p, c in pairs] == [i for n, i in enumerate(ids) if n % 6 != 0]
    assert all(p is None or c is None or p["id"] == c[0] for p, c in pairs)
    assert sum(p is not None for p, _ in pairs) == len(pg) and sum(c is not None for _, c in pairs) == len(ch)


def test_paid_once_check_joins_nothing(settled):
    """Its cost cannot depend on the planner's estimates: one aggregate over both sides, no join (a nested
    loop over freshly grown tables ran for minutes in the chaos run)."""
    from settler.reconcile import TRANSFER_EVENTS_SQL

    plan = "\n".join(row["QUERY PLAN"] for row in settled.pg.execute("EXPLAIN " + TRANSFER_EVENTS_SQL))
    assert "Join" not in plan and "Nested Loop" not in plan, plan
    assert not failing(settled)


def test_transfer_with_a_second_escrow_leg(settled):
    row = settled.pg.execute("SELECT * FROM ledger_entries WHERE source_type = 'campaign' AND direction = 'debit'"
                             " LIMIT 1").fetchone()
    tamper(settled, "INSERT INTO ledger_entries (wallet_id, transfer_id, amount, direction, status, source_type,"
                    " source_id, metadata) SELECT wallet_id, transfer_id, amount, direction, status, source_type,"
                    f" source_id, metadata FROM ledger_entries WHERE id = '{row['id']}'")
    assert "no_event_paid_twice" in failing(settled)
