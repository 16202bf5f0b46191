"""Server-side request forgery, refused where it happens: at connect time, on the addresses actually dialled.

An endpoint's URL was checked when it was created (``oros.webhooks.check_url``
and ``resolve_checked``), but DNS may answer differently now (a rebinding
attack: public at creation, 169.254.169.254 at delivery). aiohttp connects
only to the addresses its resolver returns, so this resolver drops the ones
OROS may not call and fails when none is left; an IP literal in the URL never
reaches a resolver, so the deliverer checks the URL again (``check_url``) before each request. No proxy
is used (``trust_env`` stays off) and redirects are not followed, so the
checked address is the one that receives the request.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from oros.webhooks import allowed_address, refused


class RefusedAddress(OSError):
    """Every address the host resolved to is private (aiohttp reports it as a connection error)."""


class PublicResolver(AbstractResolver):
    """The default resolver, keeping only the addresses OROS may call."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if allowed_address(r["host"], allow_private=self._allow_private)]
        if not allowed:
            bad = refused([r["host"] for r in found], allow_private=self._allow_private)
            raise RefusedAddress(f"{host} resolves to a private, loopback or link-local address ({bad[0]})")
        return allowed

    async def close(self) -> None:
        await self._inner.close()

