"""The client's IP: the socket peer, or X-Forwarded-For when the peer is a trusted proxy.

The one owner of this rule, for the tracker (click records, rate limits) and
the admin API (login limits, TLS behind a proxy). An untrusted peer could
write anything into X-Forwarded-For, so the header is read only when the
peer is inside ``OROS_TRUSTED_PROXIES``, and then from the right: the first
address that is not itself a trusted proxy is the client (everything left of
it was supplied by the client). A proxy may append its own header line
rather than extend the client's, so every line is read, in order, as one list.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Sequence
from functools import lru_cache

from aiohttp import web

MAX_HOPS = 16  # hops walked from the right; a longer chain is the client's own padding


def ip_hash_key(secret: str | None) -> bytes:
    """The BLAKE2b key of IP hashes from ``OROS_IP_HASH_KEY`` (no secret: unkeyed)."""
    # BLAKE2b takes a key of up to 64 bytes: a secret of any length is reduced to one.
    return b"" if secret is None else hashlib.blake2b(secret.encode(), digest_size=64, person=b"oros-ip-key").digest()


def visitor_key(address: str) -> str:
    """Who a visitor is, by its address: an IPv4 address itself, an IPv6 address's /64 (``2001:db8:1:2::/64``).

    The one owner of this rule, for click deduplication, unique visitors and a share link's "own clicks"
    (``ip_hash``; the settler's ClickHouse twin is ``settler.load.VISITOR``): an IPv6 host is handed a whole
    /64 and may use any address in it, so its addresses tell one visitor no better than its /64 does. An
    IPv4-mapped IPv6 address is its IPv4 address; anything that is not an address is itself.
    """
    if ":" not in address:
        return address
    return _ipv6_prefix(address) or _ipv6_key(address)


_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, IPv4-mapped


def _ipv6_prefix(address: str) -> str | None:
    """``_ipv6_key`` by the C library's parser (ipaddress's parse was most of ingest's cost for IPv6); None for
    what it refuses (a zone, no address): ``_ipv6_key`` judges."""
    try:
        packed = socket.inet_pton(socket.AF_INET6, address)
    except (OSError, ValueError):
        return None
    if packed[:12] == _MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    # The /64's zeros end the address, so inet_ntop's compression is ipaddress's: the longest run, lowercase.
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"


@lru_cache(maxsize=4096)  # what the text path leaves: rare spellings
def _ipv6_key(address: str) -> str:
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


def ip_hash(address: str, key: bytes) -> str:
    """The keyed hash of a visitor (``visitor_key``), as ClickHouse's ``ip_hash`` holds it (ingest) and a share
    link its maker's (admin API): 32 hex digits."""
    # surrogatepass: an unreadable entry's address may hold a lone surrogate (ingest.enrich.anonymized)
    return hashlib.blake2b(visitor_key(address).encode("utf-8", "surrogatepass"), key=key, digest_size=16).hexdigest()


def ip_hash_bytes(address: bytes, key: bytes) -> bytes:
    """``ip_hash`` of an address as ingest reads it, UTF-8 bytes: an IPv4 address is its own visitor, so it is
    hashed as it is (the bulk of traffic, with no decoding)."""
    if b":" not in address:
        return hashlib.blake2b(address, key=key, digest_size=16).hexdigest().encode()
    return ip_hash(address.decode("utf-8", "replace"), key).encode()


def ip_hash_key_id(key: bytes) -> str:
    """The fingerprint of the key (and scheme) ``ip_hash`` hashes under: a share link stores it beside its hash, so
    the settler never compares hashes made under different keys (sql/postgres/0180). 16 hex digits; a keyed hash
    of a constant, which says nothing of the key."""
    return hashlib.blake2b(b"oros-visitor-key-v64", key=key, digest_size=8).hexdigest()


class ClientIp:
    def __init__(self, trusted: tuple) -> None:
        self._trusted = trusted
        self.trusts_any = bool(trusted)  # else X-Forwarded-For is never read
        # The hot path asks about the same few peers (the load balancers) over and over.
        self.is_trusted = lru_cache(maxsize=1024)(self._is_trusted)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def peer_is_trusted(self, request: web.BaseRequest) -> bool:
        """Whether the socket peer is a proxy whose forwarded headers we believe."""
        peer = request.remote
        return bool(self._trusted) and peer is not None and self.is_trusted(peer)

    def __call__(self, request: web.BaseRequest) -> str | None:
        return self.of(request.remote, request.headers.getall("X-Forwarded-For", ()) if self._trusted else ())

    def of(self, peer: str | None, lines: Sequence[str]) -> str | None:
        """The client of a request from the socket peer ``peer`` with these ``X-Forwarded-For`` header lines
        (the tracker's edge has no ``web.Request``)."""
        if not self._trusted or peer is None or not self.is_trusted(peer):
            return peer
        if not lines:
            return peer
        client = peer
        for part in reversed(",".join(lines).split(",")[-MAX_HOPS:]):
            hop = part.strip()
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return client  # a malformed hop: believe nothing left of it
            client = hop
            if not self.is_trusted(hop):
                return hop
        return client
