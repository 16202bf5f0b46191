"""``oros tracker``: N uvloop processes sharing one port with SO_REUSEPORT.

The kernel spreads connections across the workers, so no process proxies
another; their metrics meet in a directory the parent makes, so any
worker's ``/metrics`` reports all of them (``SharedMetrics``). With one
worker the server runs in this process; the parent of N replaces a worker
that is killed, and stops when one exits by itself. The parent makes the
N listening sockets and hands slot n's to worker n: when a worker dies its
socket stays open in the parent, so the connections the kernel gives that
slot wait in its backlog for the replacement instead of being refused. SIGTERM (or SIGINT) drains: the
listening socket closes, in-flight requests finish, the appender flushes its
last batch, then the process exits; the parent of N workers forwards the
signal and waits for them. Workers never outlive the parent: the kernel
sends them SIGTERM when it dies, even by SIGKILL (``PR_SET_PDEATHSIG``), and
each also watches its parent's pid, where there is no such signal.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path

import uvloop
from aiohttp import web

from oros.logs import setup_logging
from oros.settings import Settings

from .app import create_app
from .edge import EdgeSite

log = logging.getLogger(__name__)

HOST = "0.0.0.0"
DRAIN_TIMEOUT_S = 10.0
# Hard limits the HTTP parser enforces before a handler runs (400 beyond them).
MAX_LINE_BYTES = 4096  # request line: method, code, query
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 64
# What aiohttp's request handlers and the edge's parser both apply; the keep-alive timeout is aiohttp's default.
HTTP = {"max_line_size": MAX_LINE_BYTES, "max_field_size": MAX_FIELD_BYTES, "max_headers": MAX_HEADERS,
        "keepalive_timeout": 3630.0}
BACKLOG = 2048
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_CHECK_S = 1.0


async def serve(
    settings: Settings, port: int, *, reuse_port: bool, metrics_dir: Path | None = None, parent_pid: int | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or, for a worker, until ``parent_pid`` is no longer its parent), then drain.

    ``sock``: a listening socket to accept on (a worker's slot) instead of binding ``port``.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watch = asyncio.create_task(_watch_parent(parent_pid, stop)) if parent_pid is not None else None
    runner = web.AppRunner(
        create_app(settings, metrics_dir=metrics_dir),
        access_log=None,  # one log line per click would cost more than the click
        shutdown_timeout=DRAIN_TIMEOUT_S,
        **HTTP,
    )
    await runner.setup()
    # Redirects are answered on the edge's own connections; the rest is handed to aiohttp (tracker/edge.py).
    # The backlog again for an inherited socket too: listen() on it sets the slot's queue anew.
    site = EdgeSite(runner, HOST, port, http=HTTP, drain_timeout_s=DRAIN_TIMEOUT_S, sock=sock, reuse_port=reuse_port,
                    backlog=BACKLOG)
    await site.start()
    log.info("tracker listening", extra={"port": port, "pid": os.getpid()})
    await stop.wait()
    log.info("draining", extra={"pid": os.getpid()})
    if watch is not None:
        watch.cancel()
    await runner.cleanup()
    log.info("stopped", extra={"pid": os.getpid()})


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """Stop once the supervising process is gone: the fallback where no parent-death signal exists."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(PARENT_CHECK_S)
    log.warning("the supervising process is gone, stopping", extra={"parent": parent_pid})
    stop.set()


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGTERM this worker (a normal drain) when its parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed", extra={"errno": ctypes.get_errno()})
    # The parent may have died before the signal was asked for: then nobody sends it.
    if os.getppid() != parent_pid:
        sys.exit("the supervising process died before this worker started")


def _worker(settings: Settings, sock: socket.socket, log_level: str, metrics_dir: Path, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    setup_logging(log_level)
    uvloop.run(serve(settings, sock.getsockname()[1], reuse_port=True, metrics_dir=metrics_dir,
                     parent_pid=parent_pid, sock=sock))


def _listening(port: int) -> socket.socket:
    """One worker slot's socket: bound with SO_REUSEPORT beside the others, and listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((HOST, port))
    sock.listen(BACKLOG)
    return sock


def run_tracker(settings: Settings, workers: int, port: int) -> None:
    if workers <= 1:
        uvloop.run(serve(settings, port, reuse_port=True))
        return
    with tempfile.TemporaryDirectory(prefix="oros-tracker-metrics-") as metrics_dir:
        _run_workers(settings, workers, port, Path(metrics_dir))


def _run_workers(settings: Settings, workers: int, port: int, metrics_dir: Path) -> None:
    # spawn, not fork: the parent may already run threads (embedded servers).
    context = multiprocessing.get_context("spawn")
    log_level = logging.getLevelName(logging.getLogger().level)
    stopping = False
    sockets = [_listening(port) for _ in range(workers)]  # kept open here for as long as the tracker runs

    def start(n: int) -> multiprocessing.Process:
        child = context.Process(target=_worker, args=(settings, sockets[n], log_level, metrics_dir, os.getpid()),
                                name=f"tracker-{n}")
        child.start()
        return child

    children = [start(n) for n in range(workers)]

    def forward(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for sock in sockets:  # each closes for good as its worker stops accepting: refused, not left waiting
            sock.close()
        for child in children:
            if child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while not stopping:
        multiprocessing.connection.wait([child.sentinel for child in children])
        for n, child in enumerate(children):
            if child.exitcode is None or stopping:
                continue
            if child.exitcode < 0 and child.exitcode != -signal.SIGTERM:
                # Killed (SIGKILL, the OOM killer): replace it. Nobody else would: whoever runs this
                # process sees it alive, and with every worker gone it would serve nothing. (SIGTERM
                # is a request to stop, even one that came before the worker could drain.)
                log.error("worker killed, starting another", extra={"worker": child.name, "signal": -child.exitcode})
                children[n] = start(n)
            else:
                # It stopped by itself (it could not start, or a bug): stop, so whoever runs this process sees it.
                log.error("worker exited, stopping", extra={"worker": child.name, "exitcode": child.exitcode})
                forward(signal.SIGTERM, None)
    for child in children:
        child.join()
    failed = [child.name for child in children if child.exitcode not in (0, -signal.SIGTERM)]
    if failed:
        log.error("workers exited abnormally", extra={"workers": failed})
