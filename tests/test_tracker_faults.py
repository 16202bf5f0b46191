"""Fault injection: no click a client was answered for is ever lost.

A tracker process is SIGKILLed under load; a tracker is SIGTERMed (drain);
Redis is stopped under load and restarted; a dead tracker's spool is found. Each time, every ``oros_cid`` a
client received in a 302 must be an event in the stream. Also here, since it needs real worker
processes: every worker's ``/metrics`` counts the clicks all workers answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from oros.events import Event, uuid7_str
from tracker.app import create_app, spool_dir
from tracker.appender import Appender
from tracker.metrics import PUBLISH_INTERVAL_S, Metrics, SharedMetrics
from tracker.spool import QUARANTINE, Spool
from tracker.typedefs import APPENDER, SPOOL

from edge_server import EdgeTestServer
from factories import make_link
from processes import free_port, stop_process, wait_until
from redis_server import RedisServer

pytestmark = pytest.mark.slow


class Load:
    """Concurrent clients clicking one link; keeps the click id of every 302 received."""

    def __init__(self, base_url: str, code: str, concurrency: int = 16) -> None:
        self.url = f"{base_url}/{code}"
        self.concurrency = concurrency
        self.received: list[str] = []
        self.failures = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self.concurrency)]
        return self

    async def _client(self) -> None:
        while not self._stop.is_set():
            try:
                async with self._session.get(self.url, allow_redirects=False) as response:
                    if response.status == 302:
                        query = dict(parse_qsl(urlsplit(response.headers["Location"]).query))
                        self.received.append(query["oros_cid"])
                    else:
                        self.failures += 1
            except (TimeoutError, aiohttp.ClientError):
                self.failures += 1
                await asyncio.sleep(0.01)

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()


async def stream_ids(redis_url: str, stream: str) -> set[str]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return {Event.decode(fields[b"e"]).event_id for _, fields in await client.xrange(stream)}
    finally:
        await client.aclose()


def tracker_env(settings, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",  # never opened by a tracker, but never shared either
        "OROS_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "OROS_DATA_DIR": str(tmp_path / "data"),
        "OROS_REDIS_PREFIX": settings.redis_prefix,
    }


@contextlib.asynccontextmanager
async def tracker_process(settings, tmp_path: Path, *, workers: int = 1):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "oros_cli", "--log-level", "WARNING", "tracker", "--workers", str(workers),
         "--port", str(port)],
        env=tracker_env(settings, tmp_path),
    )
    base_url = f"http://127.0.0.1:{port}"

    async def healthy() -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{base_url}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await wait_until(healthy, 60, "the tracker to start")
        yield proc, base_url
    finally:
        stop_process(proc)  # SIGTERM first: the supervisor forwards it and its workers drain


def children_of(pid: int) -> set[int]:
    """The live processes whose parent is ``pid``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _stat(int(entry.name))[:2] == ("ppid", pid):
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    return _stat(pid)[0] not in ("gone", "zombie")


def _stat(pid: int) -> tuple:
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return ("gone",)
    if fields[0] in ("Z", "X"):
        return ("zombie",)
    return ("ppid", int(fields[1]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_workers_exit_when_their_supervisor_is_sigkilled(settings, tmp_path):
    async with tracker_process(settings, tmp_path, workers=2) as (proc, _):
        workers = children_of(proc.pid)  # the two workers and multiprocessing's resource tracker
        try:
            assert len(workers) >= 2
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

            async def all_gone() -> bool:
                return not any(alive(pid) for pid in workers)

            await wait_until(all_gone, 15, "the orphaned workers to exit")
        finally:
            for pid in workers:  # only if the assertion failed: not ours to wait for, but ours to stop
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


# A supervisor that forks a worker watching it with tracker.server's fallback alone (no parent-death signal),
# prints the worker's pid and waits; the worker writes whether its stop was set once the watch ended.
WATCHED_WORKER = """
import asyncio, os, sys, time
from tracker import server
server.PARENT_CHECK_S = 0.05
worker = os.fork()
if worker:
    print(worker, flush=True)
    time.sleep(600)
else:
    stop = asyncio.Event()
    asyncio.run(server._watch_parent(os.getppid(), stop))
    with open(sys.argv[1], "w") as out:
        out.write(str(stop.is_set()))
    os._exit(0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc")
async def test_the_parent_watch_stops_a_worker_whose_supervisor_died_without_a_signal(spawn, tmp_path):
    """The fallback where no PR_SET_PDEATHSIG exists: a worker watches its parent's pid and stops once it changes."""
    stopped = tmp_path / "stopped"
    supervisor = spawn([sys.executable, "-c", WATCHED_WORKER, str(stopped)], stdout=subprocess.PIPE)
    worker = int(supervisor.stdout.readline())
    try:
        await asyncio.sleep(0.5)
        assert alive(worker) and not stopped.exists()  # watching, while its parent lives
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(timeout=10)

        async def watch_ended() -> bool:
            return stopped.exists() and stopped.read_text() == "True"

        await wait_until(watch_ended, 10, "the orphaned worker's watch to stop it")
    finally:
        if alive(worker):  # only if the assertion failed
            os.kill(worker, signal.SIGKILL)


def workers_of(pid: int) -> set[int]:
    """The tracker workers of supervisor ``pid`` (not multiprocessing's resource tracker)."""
    return {child for child in children_of(pid) if b"spawn_main" in _cmdline(child)}


def _cmdline(pid: int) -> bytes:
    """``pid``'s command line; empty once it is gone (a killed worker may be reaped between listing and reading)."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_killed_workers_are_replaced(settings, pg, tmp_path):
    """SIGKILL every worker in turn: the supervisor starts others, and clicks are still answered."""
    link = make_link(pg)
    async with tracker_process(settings, tmp_path, workers=2) as (proc, base_url):
        killed: set[int] = set()
        for _ in range(2):
            victim = min(workers_of(proc.pid) - killed)
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)

            async def replaced() -> bool:
                return len(workers_of(proc.pid) - killed) == 2

            await wait_until(replaced, 30, "a new worker")
        async with aiohttp.ClientSession() as session:
            async def redirects() -> bool:
                try:
                    async with session.get(f"{base_url}/{link['code']}", allow_redirects=False) as response:
                        return response.status == 302
                except aiohttp.ClientError:
                    return False

            await wait_until(redirects, 30, "a redirect from the new workers")
        assert proc.poll() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_connections_wait_for_a_replacement_while_every_worker_is_dead(settings, pg, tmp_path):
    """Every worker SIGKILLed at once: new connections wait in the supervisor's sockets for the replacements,
    and are answered; each worker's listening socket once died with it, and they were refused meanwhile."""
    link = make_link(pg)
    async with tracker_process(settings, tmp_path, workers=2) as (proc, base_url):
        for victim in workers_of(proc.pid):
            os.kill(victim, signal.SIGKILL)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                         timeout=aiohttp.ClientTimeout(total=60)) as session:
            async def click() -> int:
                async with session.get(f"{base_url}/{link['code']}", allow_redirects=False) as response:
                    return response.status

            assert await asyncio.gather(*(click() for _ in range(20))) == [302] * 20
        assert proc.poll() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_a_worker_that_exits_by_itself_stops_the_tracker(settings, tmp_path):
    """Not replaced: a worker that stopped on its own (here: told to drain) may fail again; whoever runs us must
    see it."""
    async with tracker_process(settings, tmp_path, workers=2) as (proc, _):
        os.kill(min(workers_of(proc.pid)), signal.SIGTERM)
        await asyncio.get_running_loop().run_in_executor(None, proc.wait, 30)


async def test_sigkill_under_load_loses_no_answered_click(settings, pg, tmp_path):
    server = RedisServer(tmp_path, "--enable-debug-command", "yes")
    await server.start()
    settings = replace(settings, redis_url=server.url)
    link = make_link(pg)
    redis = aioredis.Redis.from_url(server.url)
    try:
        async with tracker_process(settings, tmp_path) as (proc, base_url):
            async with Load(base_url, link["code"], concurrency=64) as load:
                await wait_until(lambda: _at_least(load, 300), 30, "300 clicks")
                # Stall Redis, so the kill lands with flushes in flight and clicks
                # waiting for them: a tracker answering before its flush would
                # have answered many clicks that never reach the stream.
                stall = asyncio.create_task(redis.execute_command("DEBUG", "SLEEP", "0.6"))
                await asyncio.sleep(0.3)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                await stall
        assert len(load.received) >= 300
        missing = set(load.received) - await stream_ids(server.url, settings.keys.stream)
        assert not missing, f"{len(missing)} of {len(load.received)} answered clicks are not in the stream"
    finally:
        await redis.aclose()
        server.stop()


async def test_sigterm_drains_every_worker(settings, pg, tmp_path):
    link = make_link(pg)
    async with tracker_process(settings, tmp_path, workers=2) as (proc, base_url):
        async with Load(base_url, link["code"]) as load:
            await wait_until(lambda: _at_least(load, 300), 30, "300 clicks")
            proc.send_signal(signal.SIGTERM)
            await asyncio.get_running_loop().run_in_executor(None, proc.wait, 30)
        assert proc.returncode == 0
    missing = set(load.received) - await stream_ids(settings.redis_url, settings.keys.stream)
    assert load.received and not missing


async def test_every_worker_reports_every_workers_metrics(settings, pg, tmp_path):
    """Scrapes land on any worker; each must report the clicks all workers answered."""
    link = make_link(pg)
    clicks = 40
    async with tracker_process(settings, tmp_path, workers=2) as (_, base_url):
        for _ in range(clicks):  # a connection each, so the kernel spreads them over the workers
            async with (aiohttp.ClientSession() as session,
                        session.get(f"{base_url}/{link['code']}", allow_redirects=False) as response):
                assert response.status == 302
        await asyncio.sleep(PUBLISH_INTERVAL_S * 1.5)
        expected = [f'oros_tracker_requests_total{{route="redirect",status="302"}} {clicks:.1f}',
                    f'oros_tracker_events_appended_total{{sink="stream"}} {clicks:.1f}']
        for _ in range(8):
            async with aiohttp.ClientSession() as session, session.get(f"{base_url}/metrics") as response:
                lines = (await response.text()).splitlines()
            ours = [line for line in lines if line.startswith(("oros_tracker_requests", "oros_tracker_events"))]
            assert all(line in lines for line in expected), ours


async def _at_least(load: Load, count: int) -> bool:
    return len(load.received) >= count


async def test_redis_down_mid_load_spools_and_replays_every_click(settings, pg, tmp_path):
    server = RedisServer(tmp_path)
    await server.start()
    settings = replace(settings, redis_url=server.url, data_dir=tmp_path / "data")
    link = make_link(pg)
    client = TestClient(EdgeTestServer(create_app(settings)))
    await client.start_server()
    app = client.app
    try:
        base_url = str(client.make_url("")).rstrip("/")
        async with Load(base_url, link["code"]) as load:
            await wait_until(lambda: _at_least(load, 200), 30, "clicks with redis up")
            server.stop()
            before = len(load.received)
            await wait_until(lambda: _at_least(load, before + 300), 30, "clicks with redis down")
            assert app[SPOOL].depth() > 0 and not app[APPENDER].redis_ok
            await server.start()

            async def replayed() -> bool:
                return app[APPENDER].redis_ok and app[SPOOL].depth() == 0 and not app[SPOOL].has_files()

            await wait_until(replayed, 30, "the spool to be replayed")
            after = len(load.received)
            await wait_until(lambda: _at_least(load, after + 100), 30, "clicks after redis came back")
    finally:
        await client.close()
    try:
        ids = await stream_ids(server.url, settings.keys.stream)
        missing = set(load.received) - ids
        assert not missing, f"{len(missing)} of {len(load.received)} answered clicks are not in the stream"
        # The click index was rebuilt for clicks that went through the spool.
        redis = aioredis.Redis.from_url(server.url)
        assert all(await indexed(redis, settings.keys, load.received))
        await redis.aclose()
    finally:
        server.stop()


async def test_spool_left_by_a_dead_process_is_replayed_at_start(settings, tracker_client, tmp_path, redis):
    settings = replace(settings, data_dir=tmp_path / "data")
    directory = spool_dir(settings)
    directory.mkdir(parents=True)
    clicks = [
        Event(event_id=uuid7_str(), event_type="click", ts_ms=1, campaign_id="c", link_id="l", creator_id="cr",
              business_id="b")
        for _ in range(3)
    ]
    # What a killed tracker leaves: complete lines, then a torn one it never answered for.
    (directory / "active-99999-x.log").write_bytes(b"".join(c.encode() + b"\n" for c in clicks) + b'{"event_id": "to')
    client = await tracker_client(create_app(settings))

    async def replayed() -> bool:
        return not client.app[SPOOL].has_files()

    await wait_until(replayed, 10, "the old spool file to be replayed")
    assert [e.event_id for e in map(Event.decode, (f[b"e"] for _, f in await redis.xrange(settings.keys.stream)))] == [
        c.event_id for c in clicks
    ]
    assert all(await indexed(redis, settings.keys, [c.event_id for c in clicks]))


def test_spool_depth_is_every_file_in_the_directory(tmp_path):
    """Two workers and a dead process's file: each worker's depth is all of it (it once counted only its own
    writes, and replaying another's file took its own depth to 0 with events still waiting)."""
    directory = tmp_path / "spool"
    directory.mkdir()
    (directory / "active-99999-x.log").write_bytes(b"".join(click_event().encode() + b"\n" for _ in range(3))
                                                   + b'{"event_id": "to')  # a killed writer's torn line
    first, second = Metrics(), Metrics()
    a, b = Spool(directory, first), Spool(directory, second)
    a.write([click_event().encode() for _ in range(2)])
    b.write([click_event().encode() for _ in range(4)])
    assert a.depth() == b.depth() == 9
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "1234.json").write_bytes(orjson.dumps(second.snapshot()))
    assert _sample(SharedMetrics(first, tmp_path / "metrics"), "oros_tracker_spool_depth") == 9  # not 18

    a.seal()
    for claimed in b.claim():  # b replays the dead process's file and a's
        b.replayed(len(claimed.read_events()))
        claimed.remove()
        claimed.release()
    assert a.depth() == b.depth() == 4
    b.write([click_event().encode()])
    assert a.depth() == 5
    a.close()
    b.close()


def _sample(shared: SharedMetrics, name: str) -> float:
    return next(s.value for family in text_string_to_metric_families(shared.render().decode())
                for s in family.samples if s.name == name)


def test_a_new_spool_file_is_in_a_synced_directory_before_its_first_batch_is_acknowledged(tmp_path, monkeypatch):
    """Written and fdatasynced is not enough: after a power loss the file's directory entry may be gone."""
    synced = []

    class Recording:
        def __getattr__(self, name):
            return getattr(os, name)

        def fsync(self, fd):
            synced.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            return os.fsync(fd)

        def fdatasync(self, fd):
            synced.append(("fdatasync", os.readlink(f"/proc/self/fd/{fd}")))
            return os.fdatasync(fd)

    monkeypatch.setattr("tracker.spool.os", Recording())
    spool = Spool(tmp_path / "spool", Metrics())
    spool.write([click_event().encode()])
    spool.write([click_event().encode()])
    [active] = (tmp_path / "spool").glob("*.log")
    assert synced == [("fsync", str(tmp_path / "spool")), ("fdatasync", str(active)), ("fdatasync", str(active))]
    spool.close()


async def indexed(redis, keys, click_ids) -> list:
    """Each click's entry in the click index (None where it has none)."""
    async with redis.pipeline(transaction=False) as pipe:
        for click_id in click_ids:
            pipe.hget(keys.clicks_of(click_id), click_id)
        return await pipe.execute()


async def test_a_hung_redis_is_dropped_and_its_batch_spooled(settings, tmp_path):
    """Redis stops answering (SIGSTOP) with a flush in flight and the tracker draining: within the
    timeout the flush goes to the spool and the drain ends; once Redis resumes the spool is replayed."""
    server = RedisServer(tmp_path)
    await server.start()
    client = aioredis.Redis.from_url(server.url)
    metrics = Metrics()
    spool = Spool(tmp_path / "spool", metrics)
    appender = Appender(client, settings.keys, spool, metrics, index_ttl_s=60, max_batch=100, timeout_s=0.3)
    appender.start()
    first, second = (
        Event(event_id=uuid7_str(), event_type="click", ts_ms=1, campaign_id="c", link_id="l", business_id="b")
        for _ in range(2)
    )
    try:
        await appender.append(first.encode())  # the connection is open and the script loaded
        os.kill(server.proc.pid, signal.SIGSTOP)
        started = time.monotonic()
        waiting = appender.append(second.encode())
        await asyncio.wait_for(appender.close(), 5)  # SIGTERM's drain, with that flush unanswered
        assert time.monotonic() - started < 2, "the drain waited for the hung redis"
        assert waiting.done() and waiting.exception() is None
        assert (spool.depth(), appender.redis_ok) == (1, False)
        os.kill(server.proc.pid, signal.SIGCONT)
        assert await appender.replay_spool() == 1
        assert await stream_ids(server.url, settings.keys.stream) == {first.event_id, second.event_id}
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        await appender.close()
        spool.close()
        await client.aclose()
        server.stop()


# -- a full or failing disk under the spool -----------------------------------------------------


class FailingDisk:
    """``os`` as tracker/spool.py sees it, with a disk that can fill up or fail (fault injection at the OS boundary).

    ``full_after(n)``: writes take ``n`` more bytes (a short write), then raise ENOSPC. ``fail_sync(k)``,
    ``fail_truncate(k)``, ``fail_close(k)``: the next ``k`` of these calls raise EIO (a failed close has freed
    the descriptor all the same, as on Linux). ``fail_read(*errors)``: the next reads raise these, one each.
    """

    def __init__(self) -> None:
        self._room: int | None = None
        self._failures = {"sync": 0, "truncate": 0, "close": 0}
        self._read_failures: list[BaseException] = []

    def __getattr__(self, name):
        return getattr(os, name)

    def full_after(self, room: int | None) -> None:
        self._room = room

    def fail_sync(self, times: int) -> None:
        self._failures["sync"] = times

    def fail_truncate(self, times: int) -> None:
        self._failures["truncate"] = times

    def fail_close(self, times: int) -> None:
        self._failures["close"] = times

    def _eio(self, call: str) -> None:
        if self._failures[call]:
            self._failures[call] -= 1
            raise OSError(errno.EIO, "Input/output error")

    def fail_read(self, *errors: BaseException) -> None:
        self._read_failures = list(errors)

    def pread(self, fd, size, offset):
        if self._read_failures:
            raise self._read_failures.pop(0)
        return os.pread(fd, size, offset)

    def write(self, fd, data):
        if self._room is None:
            return os.write(fd, data)
        if self._room == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = os.write(fd, bytes(data[: self._room]))
        self._room -= written
        return written

    def _sync(self, call, fd):
        self._eio("sync")
        return call(fd)

    def ftruncate(self, fd, length):
        self._eio("truncate")
        return os.ftruncate(fd, length)

    def close(self, fd):
        os.close(fd)
        self._eio("close")

    def fsync(self, fd):
        return self._sync(os.fsync, fd)

    def fdatasync(self, fd):
        return self._sync(os.fdatasync, fd)


def click_event() -> Event:
    return Event(event_id=uuid7_str(), event_type="click", ts_ms=1, campaign_id="c", link_id="l", business_id="b")


async def spooling_appender(settings, directory: Path, metrics: Metrics) -> tuple[Appender, Spool, aioredis.Redis]:
    """An appender whose Redis is unreachable, so every batch goes to the spool in ``directory``."""
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    spool = Spool(directory, metrics)
    appender = Appender(dead, settings.keys, spool, metrics, index_ttl_s=60, max_batch=100, timeout_s=0.5)
    appender.start()
    return appender, spool, dead


@pytest.mark.parametrize("sync_fails", [False, True], ids=["short write", "short write and failed sync"])
async def test_a_torn_write_is_cut_back_so_no_acknowledged_click_is_lost(settings, redis, tmp_path, monkeypatch,
                                                                         sync_fails):
    disk = FailingDisk()
    monkeypatch.setattr("tracker.spool.os", disk)
    metrics = Metrics()
    appender, spool, dead = await spooling_appender(settings, tmp_path / "spool", metrics)
    acked, refused = [], []
    try:
        async def batch(events: list[Event], into: list) -> None:
            results = await asyncio.gather(*(appender.append(e.encode()) for e in events), return_exceptions=True)
            into += [e.event_id for e, r in zip(events, results, strict=True) if r is None]
            refused.extend(e.event_id for e, r in zip(events, results, strict=True) if r is not None)

        await batch([click_event() for _ in range(3)], acked)  # Redis fails, these are spooled
        disk.full_after(40)  # the next batch is cut off mid-line
        await batch([click_event() for _ in range(3)], acked)
        assert len(refused) == 3
        disk.full_after(None)
        await batch([click_event() for _ in range(3)], acked)
        if sync_fails:
            disk.fail_sync(1)  # written whole, but not known to be on disk: refused and cut back too
            await batch([click_event() for _ in range(2)], acked)
        await batch([click_event()], acked)
        assert (len(acked), len(refused)) == (7, 5 if sync_fails else 3)
    finally:
        await appender.close()
        spool.close()
        await dead.aclose()
    monkeypatch.undo()
    metrics = Metrics()
    replayer = Appender(redis, settings.keys, Spool(tmp_path / "spool", metrics), metrics, index_ttl_s=60,
                        max_batch=100)
    replayer.start()
    assert await replayer.replay_spool() == 7
    await replayer.close()
    assert [Event.decode(f[b"e"]).event_id for _, f in await redis.xrange(settings.keys.stream)] == acked


@pytest.mark.parametrize("truncate_at_exit", [True, False], ids=["cut back at exit", "set aside at exit"])
async def test_a_refused_batch_left_torn_at_exit_is_never_replayed(settings, redis, tmp_path, monkeypatch,
                                                                   truncate_at_exit):
    # A batch written whole whose sync failed is refused; its cut-back fails too, and the process exits
    # before another write retries it. Its whole lines were once sealed with the file and replayed.
    disk = FailingDisk()
    monkeypatch.setattr("tracker.spool.os", disk)
    spool = Spool(tmp_path / "spool", Metrics())
    acked = [click_event() for _ in range(2)]
    spool.write([e.encode() for e in acked])
    disk.fail_sync(1)
    disk.fail_truncate(1 if truncate_at_exit else 2)  # the cut-back, then (or not) the one at exit
    with pytest.raises(OSError):
        spool.write([click_event().encode() for _ in range(3)])
    spool.close()
    monkeypatch.undo()
    metrics = Metrics()
    replayer = Appender(redis, settings.keys, Spool(tmp_path / "spool", metrics), metrics, index_ttl_s=60,
                        max_batch=100)
    replayer.start()
    assert await replayer.replay_spool() == (2 if truncate_at_exit else 0)
    await replayer.close()
    streamed = [Event.decode(f[b"e"]).event_id for _, f in await redis.xrange(settings.keys.stream)]
    assert streamed == ([e.event_id for e in acked] if truncate_at_exit else [])
    if not truncate_at_exit:  # kept for an operator, with the length that was acknowledged
        [kept] = (tmp_path / "spool").glob(f"*{QUARANTINE}")
        size = int(kept.name.split(".")[-2])
        assert [Event.decode(line).event_id for line in kept.read_bytes()[:size].splitlines()] == [
            e.event_id for e in acked]


async def health(client) -> tuple[int, dict]:
    response = await client.get("/healthz")
    return response.status, await response.json()


async def test_replay_survives_a_failing_disk_and_a_bug_and_healthz_says_so(settings, tracker_client, tmp_path, redis,
                                                                             monkeypatch):
    """A dead process's spool: reads fail (EIO twice, then an error no tick expects), and the file holds
    lines that are no events. Replay backs off, is restarted, gets through, and /healthz tells it all along."""
    disk = FailingDisk()
    monkeypatch.setattr("tracker.spool.os", disk)
    disk.fail_read(OSError(errno.EIO, "Input/output error"), OSError(errno.EIO, "Input/output error"), MemoryError())
    settings = replace(settings, data_dir=tmp_path / "data")
    directory = spool_dir(settings)
    directory.mkdir(parents=True)
    clicks = [click_event() for _ in range(2)]
    poison = [b"[1, 2]", b'{"no": "type"}', b'{"event_type": "click", "event_id": "x", "link_id": "l"}', b"not json"]
    lines = [clicks[0].encode(), *poison, clicks[1].encode()]
    (directory / "active-99999-x.log").write_bytes(b"\n".join(lines) + b"\n")
    client = await tracker_client(create_app(settings))

    async def failing() -> bool:
        status, body = await health(client)
        return status == 200 and body["status"] == "degraded" and body["replayer"] == "failing"

    await wait_until(failing, 10, "/healthz to report the failing replay")

    async def recovered() -> bool:
        status, body = await health(client)
        replayed = (status, body["status"], body["replayer_restarts"]) == (200, "ok", 1)
        return replayed and not client.app[SPOOL].has_files()

    await wait_until(recovered, 30, "the replayer to be restarted and the spool replayed")
    replayed = [f[b"e"] for _, f in await redis.xrange(settings.keys.stream)]
    # Objects go on (ingest dead-letters what is no event); lines that are no JSON object cannot be events.
    assert replayed == [clicks[0].encode(), poison[1], poison[2], clicks[1].encode()]
    assert all(await indexed(redis, settings.keys, [c.event_id for c in clicks]))


async def test_healthz_is_degraded_while_spooling_and_failing_when_nothing_can_record(settings, pg, tmp_path,
                                                                                      monkeypatch):
    disk = FailingDisk()
    monkeypatch.setattr("tracker.spool.os", disk)
    server = RedisServer(tmp_path)
    await server.start()
    settings = replace(settings, redis_url=server.url, data_dir=tmp_path / "data")
    link = make_link(pg)
    client = TestClient(EdgeTestServer(create_app(settings)))
    await client.start_server()
    try:
        assert (await client.get(f"/{link['code']}", allow_redirects=False)).status == 302
        assert (await health(client))[1]["status"] == "ok"
        server.stop()
        assert (await client.get(f"/{link['code']}", allow_redirects=False)).status == 302  # spooled
        status, body = await health(client)
        # A load balancer keeps sending clicks: they are recorded.
        assert (status, body["status"], body["spooling"], body["spool_depth"]) == (200, "degraded", True, 1)
        disk.full_after(0)
        assert (await client.get(f"/{link['code']}", allow_redirects=False)).status == 503
        status, body = await health(client)
        assert (status, body["status"]) == (503, "failing")  # ... unless nothing can be recorded here
        disk.full_after(None)
        await server.start()

        async def ok() -> bool:
            return await health(client) == (200, {**body, "status": "ok", "redis": True, "spooling": False,
                                                  "spool_depth": 0, "problems": []})

        await wait_until(ok, 30, "/healthz to be ok again")
    finally:
        await client.close()
        server.stop()


def click_id_of(response) -> str:
    return dict(parse_qsl(urlsplit(response.headers["Location"]).query))["oros_cid"]


@pytest.mark.parametrize("fault", ["close", "truncate"])
async def test_sealing_the_spool_fails_and_replay_retries_until_every_acknowledged_click_is_streamed(
        settings, pg, tmp_path, monkeypatch, fault):
    """The replayer's own syscalls on the active file fail once Redis is back. ``close``: close(2) reports EIO
    (the descriptor is freed regardless); the spool once kept the dead descriptor as its active file, which
    was then never replayed. ``truncate``: a short write's cut-back fails, and the file stays torn; it was
    sealed only by a later spool write, and none comes while Redis answers. Either way /healthz says the
    replay fails, then the replayer retries until every click answered 302 is in the stream, and none
    answered 503."""
    disk = FailingDisk()
    monkeypatch.setattr("tracker.spool.os", disk)
    server = RedisServer(tmp_path)
    await server.start()
    settings = replace(settings, redis_url=server.url, data_dir=tmp_path / "data")
    link = make_link(pg)
    client = TestClient(EdgeTestServer(create_app(settings)))
    await client.start_server()

    async def click():
        return await client.get(f"/{link['code']}", allow_redirects=False)

    try:
        acked = [click_id_of(await click())]
        server.stop()
        for _ in range(3):
            acked.append(click_id_of(await click()))  # spooled
        if fault == "truncate":
            disk.full_after(40)  # a short write, refused
            disk.fail_truncate(3)  # its cut-back, then the first two seals
            assert (await click()).status == 503
            disk.full_after(None)
        else:
            disk.fail_close(1)
        await server.start()

        async def failing() -> bool:
            status, body = await health(client)
            return (status, body["status"], body["replayer"]) == (200, "degraded", "failing")

        await wait_until(failing, 10, "/healthz to report the failing replay")

        async def recovered() -> bool:
            status, body = await health(client)
            return (status, body["status"], body["spool_depth"]) == (200, "ok", 0) and not client.app[SPOOL].has_files()

        await wait_until(recovered, 30, "the spool to be sealed and replayed")
        ids = await stream_ids(server.url, settings.keys.stream)
        assert len(ids) == len(acked) and set(acked) == ids
    finally:
        await client.close()
        server.stop()
