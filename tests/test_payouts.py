"""``oros payouts``: withdrawals paid by Stripe transfers, exactly once, against the transfer double."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import replace
from decimal import Decimal

import psycopg
import pytest

from oros.connections import pg_connect
from oros.locks import PAYOUTS_LOCK
from settler.payouts import NO_ACCOUNT, pay_withdrawals, run_payouts_command

from stripe_double import StripeDouble

SYSTEM = "00000000-0000-0000-0000-000000000001"


@pytest.fixture
def double():
    server = StripeDouble().start()
    yield server
    server.stop()


@pytest.fixture
def pay_settings(settings, double):
    return replace(settings, stripe_api_base=double.url)


def creator_with_balance(pg, account: str | None, balance: str = "100.00") -> str:
    """A KYC-approved creator holding ``balance`` available (a balanced adjustment from clearing)."""
    user = pg.execute("INSERT INTO users (email, kyc_status) VALUES (%s, 'approved') RETURNING id::text AS id",
                      (f"{secrets.token_hex(6)}@example.com",)).fetchone()["id"]
    pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'creator')", (user,))
    pg.execute("INSERT INTO creator_profiles (user_id, stripe_account_id) VALUES (%s, %s)", (user, account))
    pg.execute(
        """INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, amount, direction, status)
           SELECT w, t, 'adjustment', %(amount)s, d, 'settled'
             FROM (VALUES ((SELECT id FROM wallets WHERE user_id = %(user)s AND purpose = 'main'), 'credit'),
                          (oros_platform_wallet('clearing'), 'debit')) AS legs(w, d),
                  (SELECT gen_random_uuid() AS t) AS tr""",
        {"amount": Decimal(balance), "user": user},
    )
    return user


def request_withdrawal(settings, user: str, amount: str, method: str = "ach") -> str:
    with pg_connect(settings) as conn, conn.transaction():
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (user,))
        return str(conn.execute("SELECT (oros_request_withdrawal(%s, %s)).id", (Decimal(amount), method))
                   .fetchone()["id"])


def available(pg, user: str) -> Decimal:
    return pg.execute("SELECT available_balance FROM wallets WHERE user_id = %s AND purpose = 'main'",
                      (user,)).fetchone()["available_balance"]


def withdrawal(pg, wid: str) -> dict:
    return pg.execute("SELECT status, stripe_transfer_id, failure_reason FROM withdrawals WHERE id = %s",
                      (wid,)).fetchone()


def clearing(pg) -> Decimal:
    return pg.execute("SELECT available_balance FROM wallets WHERE user_id = %s AND purpose = 'clearing'",
                      (SYSTEM,)).fetchone()["available_balance"]


def test_withdrawal_paid_once_with_its_id_as_idempotency_key(pg, pay_settings, double):
    double.accounts.add("acct_creator1")
    user = creator_with_balance(pg, "acct_creator1")
    wid = request_withdrawal(pay_settings, user, "25.00")
    assert available(pg, user) == Decimal("75.00")  # reserved at request time

    first = pay_withdrawals(pay_settings)
    second = pay_withdrawals(pay_settings)

    assert first == {"paid": 1, "failed": 0, "deferred": 0, "amount_paid": "25.00"}
    assert second == {"paid": 0, "failed": 0, "deferred": 0, "amount_paid": "0.00"}
    [transfer] = double.transfers
    assert (transfer["amount"], transfer["currency"], transfer["destination"], transfer["transfer_group"]) == (
        2500, "usd", "acct_creator1", wid)
    assert transfer["metadata"] == {"oros_withdrawal_id": wid, "method": "ach"}
    assert [r["idempotency_key"] for r in double.requests] == [wid]
    assert withdrawal(pg, wid) == {"status": "completed", "stripe_transfer_id": transfer["id"], "failure_reason": None}
    assert available(pg, user) == Decimal("75.00")
    assert clearing(pg) == Decimal("75.00")  # 100 cash in, 25 paid out
    legs = pg.execute("SELECT status FROM ledger_entries WHERE source_id = %s", (wid,)).fetchall()
    assert [leg["status"] for leg in legs] == ["settled", "settled"]


def test_refused_transfer_fails_and_returns_the_money(pg, pay_settings, double):
    user = creator_with_balance(pg, "acct_closed")  # the double knows no such account
    wid = request_withdrawal(pay_settings, user, "60.00")

    result = pay_withdrawals(pay_settings)

    assert result["failed"] == 1 and result["paid"] == 0
    row = withdrawal(pg, wid)
    assert row["status"] == "failed" and row["stripe_transfer_id"] is None
    assert "No such destination" in row["failure_reason"]
    assert available(pg, user) == Decimal("100.00")
    assert clearing(pg) == Decimal("100.00")
    assert double.transfers == []


def test_creator_without_connected_account_gets_the_money_back(pg, pay_settings, double):
    user = creator_with_balance(pg, None)
    wid = request_withdrawal(pay_settings, user, "10.00")

    assert pay_withdrawals(pay_settings)["failed"] == 1

    assert withdrawal(pg, wid)["failure_reason"] == NO_ACCOUNT
    assert available(pg, user) == Decimal("100.00")
    assert double.requests == []


def test_lost_response_is_deferred_and_the_rerun_pays_nothing_twice(pg, pay_settings, double):
    double.accounts.add("acct_creator2")
    user = creator_with_balance(pg, "acct_creator2")
    wid = request_withdrawal(pay_settings, user, "30.00")
    double.fail_after_accept = 3  # Stripe made the transfer, but every answer (with retries) is lost

    first = pay_withdrawals(pay_settings)

    assert first["deferred"] == 1
    assert withdrawal(pg, wid)["status"] == "processing"
    assert available(pg, user) == Decimal("70.00")  # still reserved, not returned: the money may have left
    assert len(double.transfers) == 1

    second = pay_withdrawals(pay_settings)

    assert second["paid"] == 1
    assert len(double.transfers) == 1
    assert withdrawal(pg, wid)["stripe_transfer_id"] == double.transfers[0]["id"]
    assert available(pg, user) == Decimal("70.00")
    assert clearing(pg) == Decimal("70.00")


def test_processing_without_a_transfer_is_sent_on_the_next_run(pg, pay_settings, double):
    """A crash after marking it processing but before Stripe saw it: the rerun sends it."""
    double.accounts.add("acct_creator3")
    user = creator_with_balance(pg, "acct_creator3")
    wid = request_withdrawal(pay_settings, user, "15.00")
    pg.execute("UPDATE withdrawals SET status = 'processing' WHERE id = %s", (wid,))

    assert pay_withdrawals(pay_settings)["paid"] == 1
    assert [t["transfer_group"] for t in double.transfers] == [wid]


def test_only_one_payout_run_at_a_time(pg, pay_settings, double):
    double.accounts.add("acct_creator4")
    user = creator_with_balance(pg, "acct_creator4")
    request_withdrawal(pay_settings, user, "15.00")
    with psycopg.connect(pay_settings.database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (PAYOUTS_LOCK,))
        assert pay_withdrawals(pay_settings)["skipped"] is True
    assert double.requests == []


def test_payouts_command_prints_and_exits_non_zero_when_deferred(pg, pay_settings, double, capsys):
    double.accounts.add("acct_creator5")
    user = creator_with_balance(pg, "acct_creator5")
    request_withdrawal(pay_settings, user, "12.00")
    double.fail_after_accept = 3

    assert run_payouts_command(pay_settings) == 1
    assert '"deferred":1' in capsys.readouterr().out
    assert run_payouts_command(pay_settings) == 0


@pytest.mark.slow
def test_crash_after_stripe_accepted_does_not_pay_twice(pg, pay_settings, double, tmp_path):
    """``oros payouts --once`` is killed while Stripe holds the transfer it asked for; the rerun pays nothing new."""
    double.accounts.add("acct_creator6")
    user = creator_with_balance(pg, "acct_creator6")
    wid = request_withdrawal(pay_settings, user, "40.00")
    double.hold()
    env = {
        **os.environ,
        "DATABASE_URL": pay_settings.database_url,
        "REDIS_URL": pay_settings.redis_url,
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
        "OROS_REDIS_PREFIX": pay_settings.redis_prefix,
        "OROS_CLICKHOUSE_DATABASE": pay_settings.clickhouse_database,
        "STRIPE_API_BASE": double.url,
        "STRIPE_API_KEY": pay_settings.stripe_api_key,
    }
    proc = subprocess.Popen([sys.executable, "-m", "oros_cli", "payouts", "--once"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert double.accepted.wait(timeout=60), "the payout job never reached Stripe"
    finally:
        os.kill(proc.pid, 9)
        proc.wait(timeout=30)
    double.release()
    assert withdrawal(pg, wid)["status"] == "processing"
    # The killed run's session, and with it the advisory lock, goes away when Postgres notices.
    deadline = time.monotonic() + 30
    while (result := pay_withdrawals(pay_settings)).get("skipped") and time.monotonic() < deadline:
        time.sleep(0.2)

    assert result["paid"] == 1

    assert len(double.transfers) == 1
    assert withdrawal(pg, wid) == {"status": "completed", "stripe_transfer_id": double.transfers[0]["id"],
                                   "failure_reason": None}
    assert available(pg, user) == Decimal("60.00")
