"""The web app: its shell at ``/``, its files under ``/app/``, and the public ``GET /v1/config`` it starts from.

The app (``admin_api/web/``, plain ES modules, no build step; see
docs/webapp.md) talks only to the public ``/v1`` API. Its pages are sent
with a Content-Security-Policy that allows scripts from our origin and
Stripe.js only (no inline script, no eval), forbids framing (clickjacking),
and the app renders API data as text, never as HTML.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from aiohttp import web
from pydantic import BaseModel

from oros.httperrors import not_found
from oros.money import fmt
from oros.settings import Settings
from oros.wire import Money

from .payload import respond
from .routing import Routes, content
from .typedefs import SETTINGS

routes = Routes()

WEB_DIR = Path(__file__).with_name("web")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".png": "image/png", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8",
}
STRIPE_JS_URL = "https://js.stripe.com/v3/"
# What real Stripe.js loads, frames and calls (https://docs.stripe.com/security/guide#content-security-policy).
STRIPE_ORIGINS = {"script": "https://js.stripe.com", "frame": "https://js.stripe.com https://hooks.stripe.com",
                  "connect": "https://api.stripe.com"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _load(root: Path) -> dict[str, Asset]:
    """Every servable file under ``root`` by its relative path: nothing outside it can ever be named."""
    assets = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in CONTENT_TYPES:
            body = path.read_bytes()
            assets[path.relative_to(root).as_posix()] = Asset(
                body, CONTENT_TYPES[path.suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return assets


ASSETS = _load(WEB_DIR)
NOT_MODIFIED = content("not modified")


class StripeConfig(BaseModel):
    publishable_key: str | None
    js_url: str


class Config(BaseModel):
    """The configuration"""

    tracker_url: str
    stripe: StripeConfig
    min_withdrawal: Money
    platform_fee_pct: str
    hold_days: int


def stripe_js_url(settings: Settings) -> str:
    """Stripe.js, or localstripe's stand-in for it when the API talks to localstripe."""
    if settings.stripe_api_base:
        return settings.stripe_api_base.rstrip("/") + "/js.stripe.com/v3/"
    return STRIPE_JS_URL


def content_security_policy(settings: Settings) -> str:
    if settings.stripe_api_base:
        parsed = urlparse(settings.stripe_api_base)
        origin = f"{parsed.scheme}://{parsed.netloc}"
        stripe = {"script": origin, "frame": origin, "connect": origin}
    else:
        stripe = STRIPE_ORIGINS
    return "; ".join([
        "default-src 'none'",
        f"script-src 'self' {stripe['script']}",
        "style-src 'self'",
        # Creators' https images in community posts (docs/webapp.md, "Communities and posts").
        "img-src 'self' data: https:",
        f"connect-src 'self' {stripe['connect']}",
        f"frame-src {stripe['frame']}",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ])


def _asset_response(request: web.Request, asset: Asset) -> web.Response:
    headers = {
        "Content-Security-Policy": content_security_policy(request.app[SETTINGS]),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        # Revalidated each time (cheap with the ETag), so a deploy is seen at once.
        "Cache-Control": "no-cache",
        "ETag": asset.etag,
    }
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


@routes.get("/", "The web app (an HTML page that loads /app/js/main.js)",
            responses={200: content("the page", ["text/html"]), 304: NOT_MODIFIED}, access="public")
async def shell(request: web.Request) -> web.Response:
    return _asset_response(request, ASSETS["index.html"])


@routes.get("/app/{path:.+}", "A file of the web app", params={"path": str}, access="public",
            responses={200: content("the file", sorted({t.split(";")[0] for t in CONTENT_TYPES.values()})),
                       304: NOT_MODIFIED})
async def asset(request: web.Request) -> web.Response:
    found = ASSETS.get(request.match_info["path"])
    if found is None:
        raise not_found("file")
    return _asset_response(request, found)


@routes.get("/v1/config", "Public client configuration: tracker URL, Stripe.js and its key, limits",
            responses={200: Config}, access="public")
async def config(request: web.Request) -> web.Response:
    """What a client needs before it logs in: where links point, Stripe.js and its publishable key, the rules."""
    settings = request.app[SETTINGS]
    return respond({
        "tracker_url": settings.tracker_url,
        "stripe": {"publishable_key": settings.stripe_publishable_key, "js_url": stripe_js_url(settings)},
        "min_withdrawal": fmt(settings.min_withdrawal),
        "platform_fee_pct": str(settings.platform_fee_pct),
        "hold_days": settings.hold_days,
    })
