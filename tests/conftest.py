"""Real services, isolated per test.

* Postgres: ``DATABASE_URL``'s server, else the one on 127.0.0.1:5432, else an
  embedded one. Migrations run once into a template; each test gets a clone.
* Redis: ``REDIS_URL``, else 127.0.0.1:6379, else embedded Valkey; each test
  gets its own key prefix (the stream and every key live under it).
* ClickHouse: one chDB directory per test run (chDB allows one per process),
  one ClickHouse database per test. Migrating one costs a third of a test's
  set-up, so a finished test's database is emptied (every table truncated) and
  handed to the next test of the worker, if its schema is still exactly the
  migrated one; otherwise it is dropped.
* Stripe: one ``localstripe`` process per test run, started on first use and
  stopped by its PID.
* Secrets: random for every run (Settings has no default secrets); ``cli_env``
  hands the same ones to ``oros`` commands.
"""

from __future__ import annotations

import itertools
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest
import redis as sync_redis
import requests
from clickhouse_connect.driver.exceptions import DatabaseError
from psycopg import sql

from oros import embedded
from oros.connections import clickhouse_client, pg_connect, redis_client
from oros.migrate import migrate_clickhouse, migrate_postgres
from oros.settings import JWT_SECRET, STRIPE_API_KEY, STRIPE_WEBHOOK_SECRET, Settings

from edge_server import EdgeTestServer
from factories import World
from processes import adopt_orphans, free_port, left_running, stop_process

RUN_ID = f"{os.getpid()}_{secrets.token_hex(2)}"
_counter = itertools.count(1)
# A test opts in to a store by asking for its fixture; it is then marked, so `-m "not stores"` runs the pure tests
# without starting or cloning anything, and `-m stripe` only what talks to localstripe.
STORE_MARKERS = {"stores": "template_db", "stripe": "localstripe_url", "processes": "spawn", "browser": "browser"}


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session():
    """Fail the session if a process a test started is still running at its end (then killed).

    Set up first, so torn down last: every session service (localstripe, embedded servers, the browser) has
    stopped by then, and what is left a test forgot. Under xdist each worker checks its own descendants (the
    workers are the controller's children, not their own). Orphans are adopted (``adopt_orphans``): a
    supervisor's workers it left behind are ours to find too (two tracker workers once outlived the suite).
    """
    adopt_orphans()
    yield
    if sys.platform.startswith("linux"):
        left = left_running(grace_s=10)
        if left:
            pytest.fail("processes left running by the tests (killed now): "
                        + "; ".join(f"{pid}: {cmd}" for pid, cmd in sorted(left.items())), pytrace=False)


def pytest_collection_modifyitems(items):
    for item in items:
        for marker, fixture in STORE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


def with_database(url: str, name: str) -> str:
    return urlparse(url)._replace(path=f"/{name}").geturl()


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory) -> Settings:
    data_dir = tmp_path_factory.mktemp("oros")
    env_settings = Settings.from_env()
    settings, servers = embedded.resolve(
        replace(env_settings, data_dir=data_dir, clickhouse_url=f"chdb://{data_dir / 'chdb'}"),
        prefer_local=True,
    )
    settings = replace(
        settings,
        platform_fee_pct=Settings().platform_fee_pct,
        jwt_secret=secrets.token_urlsafe(48),
        stripe_webhook_secret="whsec_" + secrets.token_urlsafe(32),
        stripe_api_key="sk_test_" + secrets.token_urlsafe(32),
    )
    yield settings
    servers.stop()


@pytest.fixture(scope="session")
def template_db(base_settings) -> str:
    name = f"oros_tpl_{RUN_ID}"
    with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
        # Roles are cluster-wide: parallel workers migrating their templates would race creating and granting them.
        conn.execute("SELECT pg_advisory_lock(hashtext('oros-test-template'))")
        conn.execute(f'CREATE DATABASE "{name}"')
        migrate_postgres(replace(base_settings, database_url=with_database(base_settings.database_url, name)))
    yield name
    with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ClickHouseDatabases:
    """This worker's migrated ClickHouse databases that no test holds: each is empty and exactly as migrated."""

    # What a database's schema is: its tables' definitions (with the database's own name taken out) and the
    # migrations it recorded. A test that dropped, altered or added a table changes it.
    SCHEMA = """
    SELECT groupArray((name, engine, replaceAll(create_table_query, {db:String} || '.', ''))),
           (SELECT groupArray(name) FROM (SELECT name FROM {db:Identifier}.schema_migrations ORDER BY name))
      FROM (SELECT * FROM system.tables WHERE database = {db:String} ORDER BY name)"""
    # Views hold no rows; the migrations' record is the schema itself.
    DATA_TABLES = """
    SELECT name FROM system.tables WHERE database = {db:String}
       AND engine NOT IN ('View', 'MaterializedView') AND name <> 'schema_migrations'"""

    def __init__(self) -> None:
        self.free: list[str] = []
        self.migrated: tuple | None = None

    def take(self, settings: Settings) -> Settings:
        if self.free:
            return replace(settings, clickhouse_database=self.free.pop())
        migrate_clickhouse(settings)
        if self.migrated is None:
            self.migrated = self._schema(settings)
            # Unread, every database would look "as migrated", one a test dropped included.
            assert self.migrated is not None, "cannot read the migrated ClickHouse schema"
        return settings

    def give_back(self, settings: Settings) -> None:
        server = clickhouse_client(settings, database="")
        name = settings.clickhouse_database
        if self._schema(settings) != self.migrated:
            server.command(f"DROP DATABASE IF EXISTS `{name}`")
            return
        for (table,) in server.query(self.DATA_TABLES, parameters={"db": name}).result_rows:
            server.command(f"TRUNCATE TABLE `{name}`.`{table}`")
        self.free.append(name)

    @classmethod
    def _schema(cls, settings: Settings) -> tuple | None:
        server = clickhouse_client(settings, database="")
        try:
            return tuple(server.query(cls.SCHEMA, parameters={"db": settings.clickhouse_database}).result_rows[0])
        except DatabaseError:  # no database or no migrations table: not the migrated schema
            return None


_clickhouse_databases = ClickHouseDatabases()


class DatabaseDropper:
    """Drops finished tests' Postgres databases on a thread of its own, in the order they finished.

    DROP DATABASE forces an immediate checkpoint (Postgres 15), which writes out every dirty buffer
    of every test's database: on 2 busy cores a test waited about half a second for it in teardown.
    The queue is bounded, so a dropper that falls behind makes teardowns wait rather than let
    databases (and whatever a test left connected to them) pile up; a failed drop fails the next
    teardown, naming the database.
    """

    BACKLOG = 32

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: queue.Queue[str | None] = queue.Queue(maxsize=self.BACKLOG)
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._drop_each, name="database-dropper", daemon=True)
        self.thread.start()

    def drop(self, name: str) -> None:
        self._raise_failures()
        self.names.put(name)

    def close(self) -> None:
        self.names.put(None)
        self.thread.join()
        self._raise_failures()

    def _raise_failures(self) -> None:
        assert self.thread.is_alive() or self.names.empty(), "the database dropper died"
        if self.failures:
            failed, self.failures = self.failures, []
            pytest.fail("could not drop test databases: " + "; ".join(failed))

    def _drop_each(self) -> None:
        while (name := self.names.get()) is not None:
            try:  # a connection of its own each time: one lost connection costs one drop, not the rest
                with psycopg.connect(self.admin_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error as exc:
                self.failures.append(f"{name}: {exc}")


@pytest.fixture(scope="session")
def database_dropper(base_settings, template_db):
    # Asks for the template so the template outlives every clone's drop (fixtures end in reverse order).
    dropper = DatabaseDropper(base_settings.database_url)
    yield dropper
    dropper.close()


@pytest.fixture
def settings(base_settings, template_db, database_dropper) -> Settings:
    """Settings for one test: its own Postgres database, Redis prefix and ClickHouse database."""
    n = next(_counter)
    db_name = f"oros_t_{RUN_ID}_{n}"
    with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}" TEMPLATE "{template_db}"')
    test_settings = replace(
        base_settings,
        database_url=with_database(base_settings.database_url, db_name),
        clickhouse_database=f"t_{RUN_ID}_{n}",
        redis_prefix=f"t:{RUN_ID}:{n}:",
    )
    migrate_postgres(test_settings)  # applies nothing new, but the database's own ACL (not cloned)
    test_settings = _clickhouse_databases.take(test_settings)
    yield test_settings
    try:
        _clickhouse_databases.give_back(test_settings)
        client = sync_redis.Redis.from_url(base_settings.redis_url)
        keys = list(client.scan_iter(match=f"{test_settings.redis_prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    finally:
        database_dropper.drop(db_name)


@pytest.fixture
def pg(settings):
    """A synchronous owner connection to the test's database (autocommit)."""
    with pg_connect(settings, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def redis(settings):
    client = redis_client(settings)
    yield client
    await client.aclose()


@pytest.fixture
def cli_env(monkeypatch, settings, tmp_path):
    """Environment under which ``oros …`` commands see this test's servers."""
    for name, value in {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "CLICKHOUSE_URL": settings.clickhouse_url,
        "OROS_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "OROS_REDIS_PREFIX": settings.redis_prefix,
        "OROS_DATA_DIR": str(tmp_path),
        JWT_SECRET: settings.jwt_secret,
        STRIPE_WEBHOOK_SECRET: settings.stripe_webhook_secret,
        STRIPE_API_KEY: settings.stripe_api_key,
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def world(pg, settings) -> World:
    """Users, campaigns, links and events written straight into this test's stores (tests/factories.py)."""
    return World(pg, settings)


@pytest.fixture
def ch(settings):
    return clickhouse_client(settings)


@pytest.fixture
def port():
    """``port()`` is a free loopback port, for a process the test starts."""
    return free_port


@pytest.fixture(scope="session")
def localstripe_url(tmp_path_factory):
    """A fake but stateful Stripe (PaymentIntents, signed webhooks) on a free port."""
    port = free_port()
    binary = Path(sys.executable).with_name("localstripe")
    log = open(tmp_path_factory.mktemp("localstripe") / "localstripe.log", "wb")
    proc = subprocess.Popen([str(binary), "--port", str(port), "--from-scratch"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                requests.get(f"{url}/v1/balance", auth=("sk_test_x", ""), timeout=1)
                break
            except requests.ConnectionError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("localstripe did not start") from exc
                time.sleep(0.2)
        yield url
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture
def tracker_client(aiohttp_client):
    """``await tracker_client(app, **http)``: a test client of a tracker app served as ``oros tracker`` serves it
    (``EdgeTestServer``); ``http`` overrides tracker.server.HTTP."""

    async def make(app, **http):
        return await aiohttp_client(EdgeTestServer(app, http=http))

    return make


@pytest.fixture
def spawn():
    """``spawn(args, **popen_kwargs)``: a process that is stopped and reaped after the test, whether it passed or
    not."""
    started: list[subprocess.Popen] = []

    def start(args, **kwargs) -> subprocess.Popen:
        started.append(subprocess.Popen(args, **kwargs))
        return started[-1]

    yield start
    for proc in started:
        stop_process(proc)


@pytest.fixture(scope="session")
def service_logins(base_settings, template_db) -> dict[str, tuple[str, str]]:
    """``group -> (login, password)``: login roles holding only ``oros_api``, ``oros_tracker`` or ``oros_webhooks``.

    Roles are cluster-wide, so their names are unique to this run and they are dropped after it.
    """
    groups = ("oros_api", "oros_tracker", "oros_webhooks")
    logins = {group: (f"{group}_t_{RUN_ID}", secrets.token_hex(16)) for group in groups}
    with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
        for group, (login, password) in logins.items():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(login), sql.Literal(password), sql.Identifier(group)))
    yield logins
    with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
        for login, _ in logins.values():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login)))


def as_login(settings: Settings, login: str, password: str) -> Settings:
    """The same test database, connected as ``login``."""
    url = urlparse(settings.database_url)
    netloc = f"{login}:{password}@{url.hostname}:{url.port or 5432}"
    return replace(settings, database_url=url._replace(netloc=netloc).geturl())


@pytest.fixture
def api_settings(settings, service_logins) -> Settings:
    """The test's settings with Postgres reached as a login that has only the admin API's group role."""
    return as_login(settings, *service_logins["oros_api"])


@pytest.fixture
def tracker_settings(settings, service_logins) -> Settings:
    """The test's settings with Postgres reached as a login that has only the tracker's group role."""
    return as_login(settings, *service_logins["oros_tracker"])


@pytest.fixture
def webhooks_settings(settings, service_logins) -> Settings:
    """The test's settings with Postgres reached as a login that has only the webhook deliverer's group role."""
    return as_login(settings, *service_logins["oros_webhooks"])
