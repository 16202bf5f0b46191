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

from oros.connections import as_user
from oros.links import CODE_RE, qr_url

from . import openapi
from .auth import caller
from .errors import invalid, not_found
from .typedefs import PG_POOL

routes = web.RouteTableDef()

# Error correction M survives about 15% damage (a creased flyer); PNG modules are `scale` pixels.
ERROR_CORRECTION = "m"
SCALES = range(1, 41)
DEFAULT_SCALE = {"svg": 4, "png": 8}
KINDS = {"svg": "image/svg+xml", "png": "image/png"}
_LINK_URL_SQL = "SELECT url FROM tracking_links WHERE code = %(code)s"


@routes.get("/v1/links/{code}/qr.svg")
async def link_qr_svg(request: web.Request) -> web.Response:
    return await _qr(request, "svg")


@routes.get("/v1/links/{code}/qr.png")
async def link_qr_png(request: web.Request) -> web.Response:
    return await _qr(request, "png")


async def _qr(request: web.Request, kind: str) -> web.Response:
    who = await caller(request)
    code = request.match_info["code"]
    scale = _scale(request, kind)
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


def _scale(request: web.Request, kind: str) -> int:
    raw = request.query.get("scale")
    if raw is None:
        return DEFAULT_SCALE[kind]
    if not raw.isdigit() or int(raw) not in SCALES:
        raise invalid("scale", f"scale must be a whole number from {SCALES.start} to {SCALES.stop - 1}")
    return int(raw)


def _operation(kind: str) -> dict:
    return openapi.operation(
        f"The link's QR code as {kind.upper()}: its url with ?qr=1, recorded as source=qr when scanned "
        "(the link's creator, the campaign's business or an admin)",
        {"200": {"description": f"A QR code ({KINDS[kind]})",
                 "content": {KINDS[kind]: {"schema": {"type": "string", "format": "binary"}}}}},
        parameters=[
            {"name": "code", "in": "path", "required": True, "schema": {"type": "string", "pattern": CODE_RE.pattern}},
            {"name": "scale", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": SCALES.start, "maximum": SCALES.stop - 1}},
        ],
    )


OPENAPI: dict = {f"/v1/links/{{code}}/qr.{kind}": {"get": _operation(kind)} for kind in KINDS}
