"""The baseline: aiohttp + uvloop answering every GET /{code} with a fixed 302, nothing else.

Same framework, route shape, server settings and response headers as the
tracker, so the ratio measures exactly what recording a click costs.
Run: python loadtests/bare_app.py --port 8090
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web

LOCATION = "https://shop.example.com/p/1?ref=oros&oros_cid=0192f0c2-3a4b-7c5d-8e6f-0123456789ab"


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": LOCATION, "Cache-Control": "no-store"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/{code}", redirect)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
