"""oros.clientip's visitor key: the C library's parse gives every spelling the key ipaddress gives it."""

from __future__ import annotations

import ipaddress
import random

from addresses import ADDRESSES

from oros.clientip import _ipv6_key, ip_hash, ip_hash_bytes, visitor_key


def _spellings(rng: random.Random, n: int) -> list[str]:
    """Random IPv6 addresses, zero runs frequent, each compressed, written out and upper-case."""
    found = []
    for _ in range(n):
        words = [rng.choice([0, 0, 0, 1, 0xFFFF, rng.randrange(65536)]) for _ in range(8)]
        address = ipaddress.IPv6Address(b"".join(w.to_bytes(2, "big") for w in words))
        found += [str(address), address.exploded, address.exploded.upper()]
    return found


def test_visitor_key_agrees_with_ipaddress_on_every_spelling():
    for address in ADDRESSES + _spellings(random.Random(7), 20_000) + [" ::1", "::1 ", "a\x00::1", "\udcff::1"]:
        expected = address if ":" not in address else _ipv6_key.__wrapped__(address)
        assert visitor_key(address) == expected, address


def test_ingest_hashes_an_address_as_the_api_does():
    key = bytes(range(64))
    for address in ["1.2.3.4", "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::9", "::ffff:1.2.3.4", "garbage"]:
        assert ip_hash_bytes(address.encode(), key) == ip_hash(address, key).encode()
    assert ip_hash("2001:db8:1:2::1", key) == ip_hash("2001:db8:1:2:ffff::", key) != ip_hash("2001:db8:1:3::1", key)
