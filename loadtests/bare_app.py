"""The baseline: aiohttp + uvloop answering every GET /{code} with a fixed 302, nothing else.

The framework's hello-world for a redirect: an ``Application`` with one
route, the server settings and response headers of the tracker, so the
ratio measures what recording a click costs on top of the framework's own
request path (which the tracker's cached redirects need not take,
docs/tracker.md). ``--workers N`` runs N such processes on one port
(``SO_REUSEPORT``), as ``oros tracker --workers N`` does.
Run: python loadtests/bare_app.py --port 8090 [--workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal

import uvloop
from aiohttp import web

LOCATION = "https://shop.example.com/p/1?ref=oros&oros_cid=0192f0c2-3a4b-7c5d-8e6f-0123456789ab"


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": LOCATION, "Cache-Control": "no-store"})


def serve(port: int) -> None:
    app = web.Application()
    app.router.add_get("/{code}", redirect)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, reuse_port=True,
                loop=uvloop.new_event_loop())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.workers <= 1:
        serve(args.port)
        return
    workers = [multiprocessing.Process(target=serve, args=(args.port,)) for _ in range(args.workers)]
    for worker in workers:
        worker.start()
    signal.signal(signal.SIGTERM, lambda *_: [w.terminate() for w in workers])  # each drains like run_app does
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
