"""The processes a test starts: a free port to give them, waiting until they answer, and stopping them by their
PID, SIGTERM then SIGKILL, always reaped; and, at the end of a session, the ones that were not."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick; closed again, so a process can take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    """Stop ``proc`` (SIGTERM, which a tracker supervisor forwards to its workers; SIGKILL after 20 s) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(timeout=30)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


async def wait_until(predicate, timeout_s: float, what: str) -> None:
    """Poll ``predicate`` (awaited) every 50 ms until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def dev_localstripe() -> Iterator[str]:
    """localstripe exactly as ``oros dev`` runs it (its child module, with the billing extensions), on the
    loopback port it reports; stopped and reaped after the block."""
    proc = subprocess.Popen([sys.executable, "-m", "oros.localstripe_child", "--parent-pid", str(os.getpid())],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}"
    finally:
        stop_process(proc)


def adopt_orphans() -> None:
    """Make this process the one an orphaned descendant is reparented to, instead of init (Linux only).

    A test that kills a supervisor and not its children (tracker workers, once) leaves processes that would
    otherwise belong to init, out of sight of ``left_running``.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def left_running(grace_s: float) -> dict[int, str]:
    """This process's live descendants still there after ``grace_s`` (their command lines), SIGKILLed and reaped.

    Zombies are reaped, not counted: they have exited. The grace lets what is on its way out (a browser after
    its driver quit) go by itself.
    """
    deadline = time.monotonic() + grace_s
    while (left := _descendants()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    _descendants()  # reaps the killed ones that were our children
    return left


def _descendants() -> dict[int, str]:
    """The live (non-zombie) descendants of this process, from /proc; reaps the zombies among its children."""
    children: dict[int, list[int]] = {}
    zombies = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):  # gone meanwhile
            continue
        children.setdefault(int(ppid), []).append(int(entry.name))
        if state in ("Z", "X"):
            zombies.add(int(entry.name))
    for pid in zombies & set(children.get(os.getpid(), ())):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    found, stack = {}, list(children.get(os.getpid(), ()))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, ()))
        if pid not in zombies:
            found[pid] = _cmdline(pid)
    return found


def _cmdline(pid: int) -> str:
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:300]
