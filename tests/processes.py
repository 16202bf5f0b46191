"""The processes a test starts: a free port to give them, waiting until they answer, and stopping them by their
PID, SIGTERM then SIGKILL, always reaped."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


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
