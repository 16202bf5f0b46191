"""A test server that serves an app the way ``oros tracker`` does: on ``tracker.edge.EdgeSite``.

aiohttp's ``TestServer`` listens with a ``SockSite``, whose connections all go
through the Application; the tracker's redirects are answered below it
(tracker/edge.py), so tests of the tracker run through the same site.
"""

from __future__ import annotations

import socket

from aiohttp.test_utils import TestServer
from yarl import URL

from tracker.edge import EdgeSite
from tracker.server import DRAIN_TIMEOUT_S, HTTP


class EdgeTestServer(TestServer):
    def __init__(self, app, *, http: dict | None = None, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self.http = {**HTTP, **(http or {})}
        self.site: EdgeSite | None = None

    async def start_server(self, loop=None, **kwargs) -> None:
        if self.runner:
            return
        self._loop = loop
        self.runner = await self._make_runner(handler_cancellation=True, **self.http, **kwargs)
        await self.runner.setup()
        sock = self.socket_factory(self.host, self.port or 0, socket.AF_INET)
        self.host, self.port = sock.getsockname()[:2]
        self.site = EdgeSite(self.runner, sock=sock, http=self.http, drain_timeout_s=DRAIN_TIMEOUT_S)
        await self.site.start()
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")
