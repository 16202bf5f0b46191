"""A link's QR code: ``GET /v1/links/{code}/qr.svg`` and ``/qr.png`` (``segno``, pure Python).

The code encodes the link's url marked as a scan (``oros.links.qr_url``:
``?qr=1``), so the tracker records a click through it with ``source=qr``
(docs/analytics.md). Only who may see the link gets its code: its creator,
the campaign's business, an admin (Postgres RLS on ``tracking_links``);
anyone else, and an unknown code, get 404.
"""

from __future__ import annotations

import io

import segno
from aiohttp import web
from pydantic import BaseModel

from oros.connections import as_user
from oros.httperrors import not_found
from oros.links import CODE_RE, qr_url
from oros.wire import Code, QueryWhole

from .auth import caller
from .payload import parse_query
from .routing import Routes, content
from .typedefs import PG_POOL

routes = Routes()

# Error correction M survives about 15% damage (a creased flyer); PNG modules are `scale` pixels.
ERROR_CORRECTION = "m"
SCALES = range(1, 41)
DEFAULT_SCALE = {"svg": 4, "png": 8}
KINDS = {"svg": "image/svg+xml", "png": "image/png"}
_LINK_URL_SQL = "SELECT url FROM tracking_links WHERE code = %(code)s"


class QrQuery(BaseModel):
    scale: QueryWhole(SCALES.start, SCALES.stop - 1) = None  # pixels per module; default by kind


def _qr_route(kind: str):
    return routes.get(
        f"/v1/links/{{code}}/qr.{kind}",
        f"The link's QR code as {kind.upper()}: its url with ?qr=1, recorded as source=qr when scanned "
        "(the link's creator, the campaign's business or an admin)",
        params={"code": Code}, query=QrQuery,
        responses={200: content(f"A QR code ({KINDS[kind]})", [KINDS[kind]], {"type": "string", "format": "binary"})})


@_qr_route("svg")
async def link_qr_svg(request: web.Request) -> web.Response:
    return await _qr(request, "svg")


@_qr_route("png")
async def link_qr_png(request: web.Request) -> web.Response:
    return await _qr(request, "png")


async def _qr(request: web.Request, kind: str) -> web.Response:
    who = await caller(request)
    code = request.match_info["code"]
    scale = parse_query(QrQuery, request).scale or DEFAULT_SCALE[kind]
    if not CODE_RE.match(code):
        raise not_found("link")
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute(_LINK_URL_SQL, {"code": code})).fetchone()
    if row is None:
        raise not_found("link")
    image = io.BytesIO()
    segno.make(qr_url(row["url"]), error=ERROR_CORRECTION).save(image, kind=kind, scale=scale, border=4,
                                                                **({"xmldecl": False} if kind == "svg" else {}))
    # The url of a code never changes; the image may be cached by the caller only.
    return web.Response(body=image.getvalue(), content_type=KINDS[kind],
                        headers={"Cache-Control": "private, max-age=86400"})
