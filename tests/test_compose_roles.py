"""Compose's database roles, end to end: the init script, then `oros migrate` and the jobs as a non-superuser owner.

The script is the one mounted into the postgres image's /docker-entrypoint-initdb.d; here it runs against
the test server as its superuser, with login role names unique to this run (roles are cluster-wide).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest
import yaml
from psycopg import sql

from admin_api.app import create_app
from oros.migrate import migrate_postgres
from settler.holds import release_due
from settler.reconcile import reconcile
from webhooks.deliver import Deliverer

RUN = f"{os.getpid()}_{secrets.token_hex(3)}"
INIT_SCRIPT = Path(__file__).parents[1] / "deploy" / "postgres" / "initdb" / "10-oros-roles.sh"

pytestmark = pytest.mark.skipif(shutil.which("psql") is None, reason="the init script needs psql")


@pytest.fixture
def compose_db(base_settings, settings):
    """A database set up as compose does: ``{role: (login, password)}`` and the settings per login."""
    database = f"oros_compose_{RUN}"
    roles = ("settler", "admin", "tracker", "webhooks")
    logins = {role: (f"oros_{role}_c_{RUN}", secrets.token_hex(16)) for role in roles}
    with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    server = urlparse(base_settings.database_url)
    env = {**os.environ, "PGHOST": server.hostname, "PGPORT": str(server.port or 5432),
           "POSTGRES_USER": server.username, "POSTGRES_DB": database}
    for role, (login, password) in logins.items():
        env[f"OROS_{role.upper()}_DB_USER"], env[f"OROS_{role.upper()}_DB_PASSWORD"] = login, password
    try:
        subprocess.run(["bash", str(INIT_SCRIPT)], env=env, check=True, capture_output=True, timeout=60)
        yield {role: replace(settings, database_url=server._replace(
            netloc=f"{login}:{password}@{server.hostname}:{server.port or 5432}", path=f"/{database}").geturl())
            for role, (login, password) in logins.items()}, logins
    finally:
        with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            for login, _ in logins.values():
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login)))


async def test_compose_roles_migrate_settle_and_serve_without_a_superuser(compose_db, aiohttp_client):
    by_role, logins = compose_db
    migrate_postgres(by_role["settler"])  # as the owner, which is no superuser and cannot create roles

    with psycopg.connect(by_role["settler"].database_url) as conn:
        me = conn.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
        assert me == (False, False)
        foreign = conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace IN ('public'::regnamespace, 'auth'::regnamespace)"
            " AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)"
            " UNION ALL SELECT p.proname FROM pg_proc p"
            " WHERE p.pronamespace IN ('public'::regnamespace, 'auth'::regnamespace)"
            " AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)").fetchall()
        assert foreign == []
    assert release_due(by_role["settler"]) == 0
    assert all(check.ok for check in reconcile(by_role["settler"]))

    for role in ("admin", "tracker", "webhooks"):
        with psycopg.connect(by_role[role].database_url, autocommit=True) as conn:
            owns = conn.execute("SELECT count(*) FROM pg_class WHERE relowner = current_user::regrole").fetchone()[0]
            assert owns == 0
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(logins["settler"][0])))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE TEMP TABLE t (id int)")

    deliverer = Deliverer(by_role["webhooks"])  # its own login: claims, records and prunes, nothing more
    await deliverer.open()
    try:
        assert await deliverer.deliver_due() == [] and await deliverer.prune() == 0
    finally:
        await deliverer.close()

    api = await aiohttp_client(create_app(by_role["admin"]))
    body = {"email": "first@example.com", "password": "correct horse", "roles": ["business"]}
    assert (await api.post("/v1/auth/signup", json=body)).status == 201
    resp = await api.post("/v1/auth/login", json={"email": body["email"], "password": body["password"]})
    assert resp.status == 200


COMPOSE_FILES = [Path(__file__).parents[1] / name for name in ("docker-compose.yml", "docker-compose.cluster.yml")]
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY")


@pytest.mark.parametrize("compose", COMPOSE_FILES, ids=lambda path: path.name)
def test_compose_gives_each_service_its_own_login_and_every_secret_no_fallback(compose):
    text = compose.read_text()
    references = re.findall(r"\$\{([A-Z_]+)(:?[?-])?[^}]*\}", text)
    secrets_used = {name for name, _ in references if SECRET_NAME.search(name)}
    assert secrets_used >= {"OROS_JWT_SECRET", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "POSTGRES_PASSWORD",
                            "OROS_SETTLER_DB_PASSWORD", "OROS_ADMIN_DB_PASSWORD", "OROS_TRACKER_DB_PASSWORD",
                            "OROS_WEBHOOKS_DB_PASSWORD", "CLICKHOUSE_PASSWORD"}
    assert [name for name, how in references if name in secrets_used and how != ":?"] == []

    services = yaml.safe_load(text)["services"]
    users = {name: re.match(r"postgresql://([^:]+):", service["environment"]["DATABASE_URL"]).group(1)
             for name, service in services.items() if "DATABASE_URL" in service.get("environment", {})}
    # The webhook deliverer sends HTTP to URLs users chose: never as the owner (the settler's login).
    assert users == {"migrate": "oros_settler", "settler": "oros_settler", "admin": "oros_admin_api",
                     "tracker": "oros_tracker_svc", "ingest": "oros_tracker_svc", "webhooks": "oros_webhooks_svc"}
    assert services["postgres"]["environment"]["POSTGRES_USER"] not in users.values()
    script = INIT_SCRIPT.read_text()
    for variable, login in [("SETTLER", "oros_settler"), ("ADMIN", "oros_admin_api"), ("TRACKER", "oros_tracker_svc"),
                            ("WEBHOOKS", "oros_webhooks_svc")]:
        assert f"${{OROS_{variable}_DB_USER:-{login}}}" in script
        assert f"OROS_{variable}_DB_PASSWORD" in services["postgres"]["environment"]
    # Only the processes that use a secret get it.
    assert "OROS_JWT_SECRET" not in services["tracker"]["environment"]
    assert "STRIPE_API_KEY" not in services["tracker"]["environment"]
    # The webhook deliverer never uses Redis (oros webhooks needs no REDIS_URL): no Redis password for it.
    webhooks = services["webhooks"]["environment"]
    assert not [name for name, value in webhooks.items() if "REDIS" in name or "REDIS" in str(value)]
