"""What the tracker needs to know about a link, and how it is cached.

Postgres is the source of truth; Redis holds ``link:{code}`` (the encoded
``LinkInfo``, or ``NEGATIVE`` for an unknown code) so trackers rarely query
Postgres; each tracker keeps a short-TTL in-process cache on top, dropped
when a code is published on the invalidation channel. Whoever changes a link
or its campaign calls ``publish`` (admin API, settler on completion). A
disabled link (outside its campaign's allowed hosts, migration 0032) is not
found: its code answers 404 like an unknown one.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import orjson

from .keys import Keys

CODE_RE = re.compile(r"^[A-Za-z0-9_-]{4,20}$")
# The query part a link's QR code carries, so the tracker records the click as a scan (source "qr").
QR_MARK = "qr=1"


def qr_url(url: str) -> str:
    """What a link's QR code encodes: its url, marked as a scan."""
    return f"{url}?{QR_MARK}"


def unmark_scan(raw_query: str) -> str | None:
    """The query without the scan mark, or None when it carries none (the mark is not passed on)."""
    parts = raw_query.split("&")
    if QR_MARK not in parts:
        return None
    return "&".join(part for part in parts if part != QR_MARK)
NEGATIVE = b"-"
REDIS_TTL_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class LinkInfo:
    link_id: str
    code: str
    campaign_id: str
    creator_id: str
    supporter_id: str | None
    business_id: str
    destination_url: str
    campaign_status: str  # clicks on a non-active campaign are recorded, never billable

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> LinkInfo:
        return cls(**orjson.loads(raw))


LINK_SQL = """
SELECT l.id::text AS link_id, l.code, l.campaign_id::text AS campaign_id,
       l.creator_id::text AS creator_id, l.supporter_id::text AS supporter_id,
       c.business_id::text AS business_id, l.destination_url, c.status AS campaign_status
  FROM tracking_links l
  JOIN campaigns c ON c.id = l.campaign_id
 WHERE l.code = %(code)s AND l.disabled_at IS NULL
"""

CAMPAIGN_CODES_SQL = "SELECT code FROM tracking_links WHERE campaign_id = %(campaign_id)s"


async def publish(redis, keys: Keys, codes: list[str], infos: dict[str, LinkInfo] | None = None) -> None:
    """Refresh (or drop) the Redis entries of ``codes`` and tell every tracker to forget them."""
    if not codes:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for code in codes:
            info = (infos or {}).get(code)
            if info is None:
                pipe.delete(keys.link(code))
            else:
                pipe.set(keys.link(code), info.encode(), ex=REDIS_TTL_S)
            # Not pipe.publish, which redis-py refuses in a cluster pipeline; PUBLISH itself reaches
            # every subscriber of the cluster from whichever node it is sent to.
            pipe.execute_command("PUBLISH", keys.invalidations, code)
        await pipe.execute()
