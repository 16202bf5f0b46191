"""The ``oros`` command line against this test's servers."""

from __future__ import annotations

from oros import embedded
from oros.accounts import verify_password
from oros_cli import main as cli


def test_migrate_is_idempotent(cli_env, capsys):
    assert cli.main(["migrate"]) == 0
    assert "postgres: 0 applied, clickhouse: 0 applied" in capsys.readouterr().out


def test_create_admin_creates_then_promotes(cli_env, pg):
    pg.execute("INSERT INTO users (email) VALUES ('ops@example.com')")
    assert cli.main(["create-admin", "--email", "Ops@Example.com", "--password", "long-enough-1"]) == 0
    assert cli.main(["create-admin", "--email", "new@example.com", "--password", "long-enough-2"]) == 0
    rows = pg.execute(
        "SELECT u.email, u.password_hash FROM users u JOIN user_roles r ON r.user_id = u.id"
        " WHERE r.role = 'admin' ORDER BY u.email"
    ).fetchall()
    assert [r["email"] for r in rows] == ["new@example.com", "ops@example.com"]
    assert verify_password(rows[1]["password_hash"], "long-enough-1")


def test_create_admin_refuses_a_short_password(cli_env, pg, capsys):
    assert cli.main(["create-admin", "--email", "ops@example.com", "--password", "short"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert pg.execute("SELECT count(*) AS n FROM users WHERE email = 'ops@example.com'").fetchone()["n"] == 0


def test_bad_configuration_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("OROS_PLATFORM_FEE_PCT", "ten")
    assert cli.main(["reconcile"]) == 2
    assert "OROS_PLATFORM_FEE_PCT" in capsys.readouterr().err


def test_webhooks_runs_without_redis(cli_env, monkeypatch):
    # Compose gives the deliverer no REDIS_URL (it never uses Redis): it must not start a Valkey of its own.
    monkeypatch.delenv("REDIS_URL")

    def no_valkey(*args, **kwargs):
        raise AssertionError("oros webhooks started a Valkey")

    monkeypatch.setattr(embedded, "start_valkey", no_valkey)
    assert cli.main(["webhooks", "--once"]) == 0
