"""What ingest adds to each event before ClickHouse: where it came from, on what, and whether a bot sent it.

The tracker records the raw IP and user agent and stays as fast as it is;
this runs in ingest, off the click's path. Per event it adds the country
(``iptocc``: RIR allocation data inside the wheel, no network), device type,
browser and OS with their versions (``ua-parser`` with its bundled regexes,
compiled in Rust by ``ua-parser-rs``), the referrer's host and a keyed hash
of the full IP; it flags crawlers that ``crawlerdetect``'s maintained list
knows and the tracker's own patterns missed; and with
``OROS_ANONYMIZE_IP=true`` it truncates the stored IP (IPv4 /24, IPv6 /48).

It must not become the pipeline's bottleneck (``loadtests/bench_ingest.py
--enrich``): every lookup is cached per distinct user agent, IP prefix and
referrer, and an event is not re-serialised. The edge writes compact JSON
in the event model's field order (``Event.encode()``), so the new fields are
appended before the closing brace and the two fields enrichment may change
(``ip``, ``is_bot``/``bot_reason``) are replaced in place; the result is
byte for byte what ``orjson.dumps`` of the enriched object would be, which
``ingest.rows.check`` verifies when ClickHouse refuses a batch.
"""

from __future__ import annotations

import ipaddress
import json
import re
from urllib.parse import urlsplit

import iptocc
import orjson
import re2
import ua_parser
from crawlerdetect.providers.crawlers import data as CRAWLER_PATTERNS
from crawlerdetect.providers.exclusions import data as EXCLUSION_PATTERNS

from oros.bots import IN_APP_RE, MAX_UA, classify_user_agent
from oros.clientip import ip_hash, ip_hash_bytes, ip_hash_key
from oros.events import ENRICHED_LIMITS
from oros.settings import Settings

CRAWLER = "crawler"  # oros.bots' reason name for what crawlerdetect finds
# The sources a browser (or something pretending to be one) sends: the only ones judged by user agent.
BROWSER_SOURCES = frozenset({"redirect", "qr", "pixel"})
# Distinct keys each cache holds before it starts over: a cleared dict costs one cold batch,
# LRU bookkeeping would cost every lookup.
CACHE_SIZE = 100_000
IPV6_PREFIX_BITS = 48
_IPV6_MASK = ((1 << IPV6_PREFIX_BITS) - 1) << (128 - IPV6_PREFIX_BITS)
_COUNTRY = re.compile(r"[A-Z]{2}").fullmatch
_OCTETS = frozenset(str(n).encode() for n in range(256))
_BROWSER_SOURCES_JSON = frozenset(orjson.dumps(source) for source in BROWSER_SOURCES)
_NO_VISITOR = orjson.dumps(dict.fromkeys(ENRICHED_LIMITS, ""))[1:-1].join((b",", b""))
_NOT_FLAGGED = b',"is_bot":false,"bot_reason":null'
_FLAGGED = b',"is_bot":true,"bot_reason":' + orjson.dumps(CRAWLER)
_MOBILE_OS = ("iOS", "Windows Phone", "BlackBerry", "KaiOS", "Firefox OS", "Symbian", "Tizen", "HarmonyOS")
_DESKTOP_OS = ("Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "Debian", "FreeBSD", "OpenBSD",
               "Mint", "Arch Linux", "openSUSE", "Red Hat", "Gentoo", "Solaris", "NetBSD")


def _crawler_matcher():
    """crawlerdetect's verdict (its exclusions removed, then any crawler pattern), over RE2.

    crawlerdetect runs its 1,400 patterns as one Python alternation, about a millisecond per
    user agent; RE2 takes the same patterns in microseconds. The few with look-around, which
    RE2 lacks, stay with Python's engine. tests/test_enrich.py holds the verdicts equal.
    """
    options = re2.Options()
    options.case_sensitive = False
    options.max_mem = 64 << 20
    lookaround = [p for p in CRAWLER_PATTERNS if re.search(r"\(\?<?[=!]", p)]
    fast = re2.compile("|".join(p for p in CRAWLER_PATTERNS if p not in lookaround), options)
    slow = re.compile("|".join(lookaround), re.IGNORECASE) if lookaround else None
    exclusions = re.compile("|".join(EXCLUSION_PATTERNS), re.IGNORECASE)

    def is_crawler(user_agent: str) -> bool:
        agent = exclusions.sub("", user_agent.strip())
        if not agent:
            return False
        return fast.search(agent) is not None or (slow is not None and slow.search(agent) is not None)

    return is_crawler


is_crawler = _crawler_matcher()


def _version(part) -> str:
    if part is None or not part.major:
        return ""
    return part.major if not part.minor else f"{part.major}.{part.minor}"


def _device_type(user_agent: str, parsed, crawler: bool) -> str:
    if not user_agent:
        return ""
    device = parsed.device.family if parsed.device else ""
    if crawler or device == "Spider":
        return "bot"
    os = parsed.os.family if parsed.os else ""
    if device == "iPad" or "Tablet" in user_agent or device.startswith("Kindle") or (
            parsed.device and parsed.device.brand == "Generic_Android_Tablet"):
        return "tablet"
    if os == "Android":
        # Android tablets leave "Mobile" out of their user agent (Google's own guidance).
        return "mobile" if "Mobile" in user_agent else "tablet"
    if os.startswith(_MOBILE_OS) or "Mobile" in user_agent:
        return "mobile"
    if os.startswith(_DESKTOP_OS):
        return "desktop"
    return "other"


def describe_agent(user_agent: str) -> tuple[dict, str | None]:
    """The device fields for a user agent, and the bot reason it earns when nothing flagged it yet."""
    parsed = ua_parser.parse(user_agent[:MAX_UA])
    reason = classify_user_agent(user_agent) if user_agent else None
    if reason is None and user_agent and IN_APP_RE.search(user_agent) is None and is_crawler(user_agent[:MAX_UA]):
        reason = CRAWLER
    fields = {
        "device_type": _device_type(user_agent, parsed, reason is not None),
        "browser": parsed.user_agent.family if parsed.user_agent else "",
        "browser_version": _version(parsed.user_agent),
        "os": parsed.os.family if parsed.os else "",
        "os_version": _version(parsed.os),
    }
    return {k: v[:ENRICHED_LIMITS[k]] for k, v in fields.items()}, reason


def referrer_host(referrer: str) -> str:
    """The referrer's host, lower case, without port or credentials ('' when it has none)."""
    try:
        host = urlsplit(referrer).hostname or ""
    except ValueError:
        return ""
    return host[:ENRICHED_LIMITS["referrer_host"]] if host.isprintable() else ""


def ip_network(ip: str) -> tuple[str, str] | None:
    """(the address's network, the address truncated to it): /24 for IPv4, /48 for IPv6; None when no IP.

    The common spellings are read from the text (``ipaddress`` costs more than all the rest of an
    event): four decimal octets, or IPv6 with its first three groups written out and not zero.
    The tracker records only addresses it parsed (tracker/clientip.py).
    """
    parts = ip.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
        network = ".".join(parts[:3])
        return network, network + ".0"
    groups = ip.split(":", 3)
    if len(groups) == 4 and "." not in ip and all(0 < len(g) <= 4 for g in groups[:3]):
        try:
            values = tuple(int(g, 16) for g in groups[:3])
        except ValueError:
            return None
        if all(values):
            truncated = "{:x}:{:x}:{:x}::".format(*values)
            return truncated, truncated
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return ip_network(str(address.ipv4_mapped))
    if address.version == 4:  # a spelling the fast path refused (leading zeros are refused by both)
        return ip_network(str(address))
    truncated = str(ipaddress.IPv6Address(int(address) & _IPV6_MASK))
    return truncated, truncated


class _Bounded(dict):
    """A cache that starts over when full (see ``CACHE_SIZE``)."""

    def put(self, key, value):
        if len(self) >= CACHE_SIZE:
            self.clear()
        self[key] = value
        return value


class Enricher:
    """Enriches stream entries in the wire format; anything else passes through for ClickHouse to judge
    (made ``anonymized`` first while ``OROS_ANONYMIZE_IP`` is on).

    The fields are found by their keys' bytes, not by parsing: in the edge's compact JSON a
    key's quote cannot occur inside a string value (it would be escaped), and the model's
    order (``ip``, ``user_agent``, ``referrer``, ``is_bot``, ``bot_reason``, ``source``,
    ``metadata``) is fixed. Caches are keyed by the values' JSON bytes; only a miss decodes.
    """

    def __init__(self, settings: Settings) -> None:
        self.anonymize = settings.anonymize_ip
        self._key = ip_hash_key(settings.ip_hash_key)
        self._agents = _Bounded()  # user agent (JSON) -> (fragment, bot reason)
        self._networks = _Bounded()  # IPv4 /24 ("a.b.c") or other address -> (fragment, truncated ip as JSON)
        self._referrers = _Bounded()  # referrer (JSON) -> fragment
        self._visitors = _Bounded()  # address -> its keyed hash (a visitor clicks again; process memory only)

    def lines(self, raws: list[bytes]) -> list[bytes | None]:
        return [self.line(raw) for raw in raws]

    def line(self, raw: bytes) -> bytes | None:
        """The entry enriched; one not in the edge's format as it is (ClickHouse decides), or while
        anonymizing with its IP truncated and hashed all the same (None: it holds no IP we can find, and
        ingest dead-letters it, so a full IP is never stored)."""
        try:
            enriched = self._line(raw)
        except (ValueError, TypeError, AttributeError):  # a value of no JSON type the edge writes
            enriched = None
        if enriched is not None:
            return enriched
        return anonymized(raw, self._key) if self.anonymize else raw

    def _line(self, raw: bytes) -> bytes | None:
        ip_at = raw.find(b',"ip":') + 6
        agent_at = raw.find(b',"user_agent":', ip_at)
        referrer_at = raw.find(b',"referrer":', agent_at)
        flag_at = raw.find(b',"is_bot":', referrer_at)
        source_at = raw.find(b',"source":', flag_at)
        metadata_at = raw.find(b',"metadata":', source_at)
        if ip_at == 5 or min(agent_at, referrer_at, flag_at, source_at, metadata_at) < 0 or raw[-2:] != b"}}":
            return None  # not the edge's format: ClickHouse decides (ingest.rows.NotWireFormat)
        ip = raw[ip_at:agent_at]
        if ip == b"null":
            country, stored_ip, digest = b',"country":""', ip, b""
        elif ip[:1] != b'"':
            return None
        else:
            address = orjson.loads(ip).encode() if b"\\" in ip else ip[1:-1]
            country, truncated = self._networks.get(_network_key(address)) or self._network(address)
            stored_ip = truncated if self.anonymize else ip
            digest = self._visitors.get(address) or self._visitors.put(address, ip_hash_bytes(address, self._key))
        if raw[source_at + 10:metadata_at] not in _BROWSER_SOURCES_JSON:
            # A business's server sent it (the API, Stripe): its address and agent say nothing of a visitor.
            return b"".join((raw[:ip_at], stored_ip, raw[agent_at:-1], _NO_VISITOR, b"}"))
        agent = raw[agent_at + 14:referrer_at]
        referrer = raw[referrer_at + 12:flag_at]
        agent_fragment, reason = self._agents.get(agent) or self._agent(agent)
        referrer_fragment = self._referrers.get(referrer) or self._referrer(referrer)
        flag = raw[flag_at:source_at]
        if reason is not None and flag == _NOT_FLAGGED:
            flag = _FLAGGED
        return b"".join((raw[:ip_at], stored_ip, raw[agent_at:flag_at], flag, raw[source_at:-1], country,
                         agent_fragment, referrer_fragment, b',"ip_hash":"', digest, b'"}'))

    def _agent(self, agent_json: bytes) -> tuple[bytes, str | None]:
        fields, reason = describe_agent(orjson.loads(agent_json) or "")
        return self._agents.put(agent_json, (orjson.dumps(fields)[1:-1].join((b",", b"")), reason))

    def _network(self, address: bytes) -> tuple[bytes, bytes]:
        found = ip_network(address.decode("utf-8", "replace"))
        if found is None:
            # Not an address (the tracker writes none such): nothing to locate, nothing kept when anonymizing.
            # Cached under itself, never under a key a real address of that network shares.
            return self._networks.put(address, (b',"country":""', b'""'))
        country = iptocc.country_code(found[1]) or ""
        country = country if _COUNTRY(country) else ""  # the column holds ISO alpha-2 or nothing
        return self._networks.put(_network_key(address), (b',"country":' + orjson.dumps(country),
                                                          orjson.dumps(found[1])))

    def _referrer(self, referrer_json: bytes) -> bytes:
        host = referrer_host(orjson.loads(referrer_json) or "")
        return self._referrers.put(referrer_json, b',"referrer_host":' + orjson.dumps(host))


def anonymized(raw: bytes, key: bytes | None = None) -> bytes | None:
    """An entry the byte-level path cannot read, parsed: its IP truncated (and with a ``key`` the keyed hash
    of the full IP added as ``ip_hash``); None when it is no JSON object or its IP no text.

    Python's parser takes what orjson refuses (a lone surrogate escape, bytes that are not UTF-8,
    read with ``surrogateescape``). The result is in the edge's compact form when orjson can write
    it (so a dead letter stays replayable), else escaped to ASCII.
    """
    try:
        event = json.loads(raw.decode("utf-8", "surrogateescape"))
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    # ClickHouse may match a key in another case, and reads a repeated key: every spelling is judged.
    for name in [name for name in event if name.lower() == "ip"]:
        ip = event[name]
        if ip is not None and not isinstance(ip, str):
            return None
        if ip:
            found = ip_network(ip)
            event[name] = found[1] if found else ""
            if key is not None:
                event["ip_hash"] = ip_hash(ip, key)
    try:
        return orjson.dumps(event)
    except TypeError:  # a lone surrogate orjson will not write
        return json.dumps(event, separators=(",", ":")).encode()


def _network_key(address: bytes) -> bytes:
    """The cache key of an address's network, from its text alone (parsing costs more than the rest).

    IPv4 (or IPv4-mapped) addresses that differ only in a valid last octet share a /24; IPv6
    addresses whose first three groups are written out share a /48. Anything else is its own key.
    """
    network, dot, last = address.rpartition(b".")
    if dot:
        return network if last in _OCTETS else address
    groups = address.split(b":", 3)
    return b":".join(groups[:3]).lower() if len(groups) == 4 and all(groups[:3]) else address
