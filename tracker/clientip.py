"""The client's IP: the socket peer, or X-Forwarded-For when the peer is a trusted proxy.

An untrusted peer could write anything into X-Forwarded-For, so the header
is read only when the peer is inside ``OROS_TRUSTED_PROXIES``, and then from
the right: the first address that is not itself a trusted proxy is the
client (everything left of it was supplied by the client).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web


class ClientIp:
    def __init__(self, trusted: tuple) -> None:
        self._trusted = trusted
        # The hot path asks about the same few peers (the load balancers) over and over.
        self.is_trusted = lru_cache(maxsize=1024)(self._is_trusted)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def __call__(self, request: web.BaseRequest) -> str | None:
        peer = request.remote
        if not self._trusted or peer is None or not self.is_trusted(peer):
            return peer
        header = request.headers.get("X-Forwarded-For")
        if not header:
            return peer
        client = peer
        for part in reversed(header.split(",")[-16:]):
            hop = part.strip()
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return client  # a malformed hop: believe nothing left of it
            client = hop
            if not self.is_trusted(hop):
                return hop
        return client
