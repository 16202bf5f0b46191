"""Outgoing webhooks: the event types, the secrets and signatures, and which addresses may be called.

Shared by the admin API (subscribing, creating secrets, refusing a private
URL at once) and the delivery process (signing, refusing a private address
when it connects). The outbox rows themselves are written by Postgres
(sql/postgres/0066); docs/webhooks.md is the receiver's side of this module.

Signature: ``OROS-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]``, each
``v1`` the lower-case hex HMAC-SHA256, under one of the endpoint's secrets
(the whole ``whsec_…`` string as UTF-8), of ``f"{t}."`` followed by the
request body's bytes. Two ``v1`` while a rotated-out secret still signs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import socket

from pydantic import ValidationInfo
from yarl import URL

from .wire import MAX_URL_LEN, refuse, rule

# Every event type, and the role whose events it announces (0065 oros_webhook_audience says the same).
EVENT_TYPES = {
    "conversion.recorded": "business",
    "event.rejected": "business",
    "settlement.completed": "business",
    "earning.credited": "creator",
    "withdrawal.paid": "creator",
    "withdrawal.failed": "creator",
}
SECRET_PREFIX = "whsec_"
MAX_ENDPOINTS = 16  # per user, enforced by oros_create_webhook_endpoint

EVENT_ID_HEADER = "OROS-Event-Id"
EVENT_TYPE_HEADER = "OROS-Event-Type"
SIGNATURE_HEADER = "OROS-Signature"
ATTEMPT_HEADER = "OROS-Delivery-Attempt"
SIGNATURE_SCHEME = "v1"
# How old a signature timestamp a receiver should accept (docs/webhooks.md): replays are refused after it.
TOLERANCE_S = 300
# How long creating an endpoint waits for DNS before letting the name through (each delivery checks again).
RESOLVE_TIMEOUT_S = 3


class UnsafeTarget(ValueError):
    """A webhook URL or address OROS will not call: not https, or not on the public internet."""


def new_secret() -> str:
    """256 random bits; the prefix lets secret scanners recognise a leaked one."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(signing_secrets: list[str], timestamp: int, body: bytes) -> str:
    """The ``OROS-Signature`` value: the timestamp, then one ``v1`` per secret (current first)."""
    return ",".join([f"t={timestamp}", *(f"{SIGNATURE_SCHEME}={sign(s, timestamp, body)}" for s in signing_secrets)])


def allowed_address(raw: str, *, allow_private: bool) -> bool:
    """Whether OROS may connect to this IP address: a public unicast one, unless local receivers are allowed.

    An IPv6 address carrying an IPv4 one (mapped, 6to4, the well-known NAT64 prefix) is judged by the
    IPv4 it reaches. Python's ``is_global`` calls two others global: the deprecated IPv4-compatible
    ``::/96`` (``::7f00:1`` reaches 127.0.0.1 on a host that still routes it) and local-use NAT64
    ``64:ff9b:1::/48`` (RFC 8215: a site's own translator, whose embedded IPv4 sits where the site
    chooses); both are refused.
    """
    try:
        address = ipaddress.ip_address(raw.split("%", 1)[0])  # a scope id (fe80::1%eth0) is link-local anyway
    except ValueError:
        return False
    if allow_private:
        return True
    if address.version == 6:
        if any(address in network for network in _NEVER_V6):
            return False
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return allowed_address(str(embedded), allow_private=False)
    return address.is_global and not address.is_multicast


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NEVER_V6 = (ipaddress.ip_network("::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def check_url(raw: object, *, allow_private: bool) -> URL:
    """A webhook URL OROS may call, parsed; else ``UnsafeTarget`` saying why.

    https only (http too while local receivers are allowed), a host, no credentials or fragment,
    and a host that is not a private address or ``localhost``. A host name is resolved
    separately (``resolve_checked``), and again each time a delivery connects.
    """
    if not isinstance(raw, str) or not raw or len(raw) > MAX_URL_LEN:
        raise UnsafeTarget(f"must be a URL of at most {MAX_URL_LEN} characters")
    if any(c.isspace() or not c.isprintable() for c in raw):
        raise UnsafeTarget("must not contain spaces or control characters")
    try:
        url = URL(raw)
        host = (url.raw_host or "").lower()
    except (ValueError, UnicodeError):
        raise UnsafeTarget("is not a valid URL") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if url.scheme not in schemes or not url.is_absolute() or not host:
        raise UnsafeTarget("must be an absolute https URL")
    if url.user is not None or url.password is not None or url.fragment:
        raise UnsafeTarget("must not carry credentials or a fragment")
    name = host.rstrip(".")  # a fully qualified "localhost." is the same name
    if not allow_private and (name == "localhost" or name.endswith(".localhost")):
        raise UnsafeTarget("must not point at this machine")
    if _is_ip(host) and not allowed_address(host, allow_private=allow_private):
        raise UnsafeTarget(f"must not point at a private, loopback or link-local address ({host})")
    return url


# The validation context key (admin_api.payload.parse) that lets a request name a local receiver.
ALLOW_PRIVATE = "allow_private_webhooks"


def _endpoint_url(raw: object, info: ValidationInfo) -> str:
    allow_private = bool((info.context or {}).get(ALLOW_PRIVATE))  # no context: the strict rule
    try:
        return str(check_url(raw, allow_private=allow_private))
    except UnsafeTarget as exc:
        refuse(str(exc))


# ``check_url`` as a wire type (oros/wire.py) for a request's endpoint URL; its host's addresses are
# checked after validation (``resolve_checked``: DNS is I/O), and again on each delivery.
WebhookUrl = rule(str, _endpoint_url, {
    "type": "string", "format": "uri", "minLength": 1, "maxLength": MAX_URL_LEN,
    "description": "https, on the public internet (no private, loopback or link-local host), without "
                   "credentials or fragment; http and local hosts only where OROS_WEBHOOKS_ALLOW_PRIVATE is set",
})


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def refused(addresses: list[str], *, allow_private: bool) -> list[str]:
    """The addresses among a host's resolved ones that OROS may not call."""
    return [a for a in addresses if not allowed_address(a, allow_private=allow_private)]


async def resolve_checked(loop, raw_url: str, *, allow_private: bool) -> None:
    """Resolve the (checked) URL's host and refuse it when any address is not allowed (``UnsafeTarget``).

    A name that does not resolve now is let through: DNS may be set up later, and every
    delivery checks the addresses it connects to anyway.
    """
    url = URL(raw_url)
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(url.raw_host, url.port or 443, type=socket.SOCK_STREAM),
                                       RESOLVE_TIMEOUT_S)
    except (OSError, UnicodeError, TimeoutError):
        return
    bad = refused([info[4][0] for info in infos], allow_private=allow_private)
    if bad:
        raise UnsafeTarget(f"resolves to a private, loopback or link-local address ({bad[0]})")
