"""Default, empty and short secrets are refused; ``oros dev`` keeps its own in ``.oros/``.

The refusals run real ``oros`` processes: on a build that accepts a weak
secret the process starts serving instead of exiting, and the bounded wait
below fails the test.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
import requests

from oros import embedded
from oros.settings import IP_HASH_KEY, JWT_SECRET, STRIPE_API_KEY, STRIPE_WEBHOOK_SECRET, Settings, SettingsError

STRONG = "s" * 32
# Every value this project or its compose file ever shipped as a default.
OLD_DEFAULTS = {
    JWT_SECRET: "oros-dev-secret-change-me-in-production",
    STRIPE_WEBHOOK_SECRET: "whsec_oros_dev",
    STRIPE_API_KEY: "sk_test_oros",
}
SECRET_VARS = (JWT_SECRET, STRIPE_WEBHOOK_SECRET, STRIPE_API_KEY)


def oros(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run ``oros ARGS``; a process that starts serving instead of refusing is killed and fails the test."""
    try:
        return subprocess.run([sys.executable, "-m", "oros_cli", *args], env=env, capture_output=True, text=True,
                              timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"oros {' '.join(args)} started instead of refusing its configuration")


@pytest.fixture
def env(settings, tmp_path) -> dict[str, str]:
    """The test's servers, strong secrets for all three, nothing else from the caller's OROS_/STRIPE_ variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OROS_", "STRIPE_"))}
    return {
        **base,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
        "OROS_REDIS_PREFIX": settings.redis_prefix,
        "OROS_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "OROS_DATA_DIR": str(tmp_path / "data"),
        JWT_SECRET: "j" * 40,
        STRIPE_WEBHOOK_SECRET: "whsec_" + "w" * 40,
        STRIPE_API_KEY: "sk_test_" + "k" * 40,
    }


def without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


@pytest.mark.parametrize(
    "command, variable",
    [
        pytest.param(("admin",), JWT_SECRET, id="admin-jwt"),
        pytest.param(("admin",), STRIPE_WEBHOOK_SECRET, id="admin-webhook"),
        pytest.param(("settler",), STRIPE_API_KEY, id="settler-stripe-key"),
        pytest.param(("payouts", "--once"), STRIPE_API_KEY, id="payouts-stripe-key"),
    ],
)
@pytest.mark.parametrize("problem", ["missing", "empty", "short", "old default"])
def test_a_process_refuses_a_missing_or_weak_secret(env, port, command, variable, problem):
    bad = {
        "missing": without(env, variable),
        "empty": {**env, variable: ""},
        "short": {**env, variable: "x" * 31},
        "old default": {**env, variable: OLD_DEFAULTS[variable]},
    }[problem]
    if command[0] == "admin":
        command = (*command, "--port", str(port()))

    result = oros(bad, *command)

    assert result.returncode == 2, result.stderr
    assert variable in result.stderr
    # The message names the variable, never the value it was given.
    if bad.get(variable):
        assert bad[variable] not in result.stderr


@pytest.mark.parametrize("problem", ["missing", "short"])
@pytest.mark.parametrize("command", [("ingest", "--once"), ("admin",)])
def test_ingest_and_admin_refuse_to_anonymize_without_a_strong_ip_hash_key(env, problem, command, port):
    """Truncated IPs leave the keyed hash to tell visitors apart: a guessable key would unmask them. The admin
    API hashes a share link's maker's address with it (docs/supporters.md, "Share links")."""
    bad = {"missing": {**env, "OROS_ANONYMIZE_IP": "true"},
           "short": {**env, "OROS_ANONYMIZE_IP": "true", IP_HASH_KEY: "x" * 31}}[problem]
    result = oros(bad, *command, *(("--port", str(port())) if command == ("admin",) else ()))
    assert result.returncode == 2 and IP_HASH_KEY in result.stderr, result.stderr
    assert "x" * 31 not in result.stderr


def test_ingest_needs_no_ip_hash_key_while_it_keeps_ips(env):
    result = oros(env, "ingest", "--once")
    assert result.returncode == 0, result.stderr


def test_admin_starts_without_a_stripe_key(env, port, spawn, tmp_path):
    """Card funding then answers 503 (tests/test_stripe_funding.py); the process itself is not refused."""
    admin_port = port()
    with open(tmp_path / "admin.log", "wb") as log:
        proc = spawn([sys.executable, "-m", "oros_cli", "admin", "--port", str(admin_port)],
                     env=without(env, STRIPE_API_KEY), stdout=log, stderr=log)
    deadline = time.monotonic() + 120  # a bound on a slow machine, not a measurement
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "admin.log").read_text()[-2000:]
        try:
            if requests.get(f"http://127.0.0.1:{admin_port}/healthz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail("oros admin did not serve /healthz without a Stripe key")


@pytest.mark.parametrize("weak", ["sk_test_oros", "sk_test_replace_me", "", "sk_test_short"])
def test_admin_refuses_a_weak_stripe_key_it_may_go_without(env, port, weak):
    result = oros({**env, STRIPE_API_KEY: weak}, "admin", "--port", str(port()))
    assert result.returncode == 2 and STRIPE_API_KEY in result.stderr, result.stderr


def test_commands_without_secrets_need_none(env):
    """migrate (like ingest, settle, reconcile and the tracker) holds no secret, so none is asked for."""
    result = oros(without(env, *SECRET_VARS), "migrate")
    assert result.returncode == 0, result.stderr


def test_refusal_comes_before_any_embedded_server_starts(env, port, tmp_path):
    bare = without(env, "DATABASE_URL", "REDIS_URL", JWT_SECRET)

    result = oros(bare, "admin", "--port", str(port()))

    assert result.returncode == 2 and JWT_SECRET in result.stderr
    assert not (tmp_path / "data" / "postgres").exists()


def test_check_secrets_names_each_problem():
    strong = Settings(jwt_secret="j" * 32, stripe_webhook_secret="w" * 32, stripe_api_key="k" * 32)
    strong.check_secrets(JWT_SECRET, STRIPE_WEBHOOK_SECRET, STRIPE_API_KEY)
    cases = {
        "is not set": replace(strong, jwt_secret=None),
        "is empty": replace(strong, jwt_secret=""),
        "31 bytes": replace(strong, jwt_secret="j" * 31),
        "published default": replace(strong, jwt_secret=OLD_DEFAULTS[JWT_SECRET]),
    }
    for words, settings in cases.items():
        with pytest.raises(SettingsError, match=JWT_SECRET) as caught:
            settings.check_secrets(JWT_SECRET)
        assert words in str(caught.value)
    # Bytes, not characters: 11 three-byte characters are 33 bytes.
    replace(strong, jwt_secret="€" * 11).check_secrets(JWT_SECRET)


def test_dev_secrets_are_random_private_and_reused(tmp_path):
    first = embedded.dev_secrets(tmp_path)
    again = embedded.dev_secrets(tmp_path)
    other = embedded.dev_secrets(tmp_path / "elsewhere")

    assert first == again and first != other
    assert set(first) == set(SECRET_VARS)
    path = tmp_path / embedded.SECRETS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    replace(Settings(), **embedded.secret_fields(first)).check_secrets(*SECRET_VARS)


def test_dev_secrets_created_once_under_a_race(tmp_path):
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(embedded.dev_secrets(tmp_path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and all(r == results[0] for r in results)
    assert [p.name for p in tmp_path.iterdir()] == [embedded.SECRETS_FILE]


def test_dev_secrets_file_readable_by_others_is_refused(tmp_path):
    embedded.dev_secrets(tmp_path)
    path = tmp_path / embedded.SECRETS_FILE
    path.chmod(0o644)
    with pytest.raises(SettingsError, match="readable by others"):
        embedded.dev_secrets(tmp_path)


def test_dev_secrets_file_behind_a_symlink_is_refused(tmp_path):
    planted = tmp_path / "planted.json"
    embedded.dev_secrets(tmp_path / "other")
    planted.write_bytes((tmp_path / "other" / embedded.SECRETS_FILE).read_bytes())
    planted.chmod(0o600)
    data = tmp_path / "data"
    data.mkdir()
    (data / embedded.SECRETS_FILE).symlink_to(planted)
    with pytest.raises(SettingsError, match="symlink"):
        embedded.dev_secrets(data)


def test_damaged_dev_secrets_file_is_refused(tmp_path):
    path = tmp_path / embedded.SECRETS_FILE
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b'{"OROS_JWT_SECRET": "short"}')
    os.close(fd)
    with pytest.raises(SettingsError, match=str(path)):
        embedded.dev_secrets(tmp_path)
