"""localstripe, the embedded Stripe, as a child process of ``oros dev``.

``python -m oros.localstripe_child --parent-pid N`` serves localstripe's app
on 127.0.0.1 only (localstripe's own entrypoint listens on every interface,
and its ``/_config`` API needs no key), on a port the kernel picks, written as
one line on stdout. It exits when its parent dies: ``PR_SET_PDEATHSIG`` on
Linux, and a parent watch everywhere. Its store lives in memory for the life
of the parent (localstripe would otherwise pickle it to a fixed file in /tmp).
It serves subscriptions in the shape admin_api.billing asks for
(oros.localstripe_billing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys

PR_SET_PDEATHSIG = 1
PARENT_WATCH_S = 1.0


def die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        sys.exit(0)


def _watch_parent(parent_pid: int):
    async def watch(app):
        async def poll() -> None:
            while os.getppid() == parent_pid:
                await asyncio.sleep(PARENT_WATCH_S)
            os.kill(os.getpid(), signal.SIGTERM)

        task = asyncio.create_task(poll())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return watch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="oros.localstripe_child")
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid)

    from aiohttp import web
    from localstripe import resources
    from localstripe.server import app

    from oros import localstripe_billing

    resources.store.dump_to_disk = lambda: None
    localstripe_billing.install()
    app.cleanup_ctx.append(_watch_parent(args.parent_pid))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue from now on, before the app accepts them
    print(sock.getsockname()[1], flush=True)
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the parent has stopped reading
    web.run_app(app, sock=sock, print=None, access_log=None)


if __name__ == "__main__":
    main()
