"""The web app's session: sign up or log in into an httpOnly cookie, read it back, log out.

These are ``/v1/auth/signup`` and ``/v1/auth/login`` (same validation, same
login limits, same answers on failure) with the token moved out of the body
into a cookie that page scripts cannot read; the body carries the session's
anti-CSRF token instead (see admin_api.auth). Opening a session also needs
``X-OROS-CSRF`` (any value): a cross-site form cannot send a header, so it
cannot log a victim's browser into the attacker's account.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from aiohttp import web
from pydantic import BaseModel, StringConstraints

from oros.connections import as_user
from oros.httperrors import ApiError, unauthorized

from . import users
from .auth import CSRF_HEADER, SESSION_COOKIE, csrf_token, issue_session, revoke_session, session_claims
from .payload import respond
from .routing import Header, Routes
from .typedefs import CLIENT_IP, PG_POOL, SETTINGS

routes = Routes()

CSRF = Header(CSRF_HEADER, Annotated[str, StringConstraints(min_length=1)], required=True, description=(
    "any value to open or close a session; the session's csrf_token on every other cookie-authenticated "
    "request that is not GET, HEAD or OPTIONS"))
_COOKIE_NOTE = f"Sets the httpOnly, SameSite=Strict cookie {SESSION_COOKIE}; the body holds no token."


class Session(BaseModel):
    """The user and the session's CSRF token"""

    user: users.User
    csrf_token: str


class LoggedOut(BaseModel):
    """Done"""

    ok: bool


def _require_page_header(request: web.Request) -> None:
    if not request.headers.get(CSRF_HEADER):
        raise ApiError(403, "csrf", f"send the {CSRF_HEADER} header to open or close a session", CSRF_HEADER)


def _over_tls(request: web.Request) -> bool:
    """TLS to us, or to a proxy we trust that says so (``OROS_TRUSTED_PROXIES``)."""
    if request.secure:
        return True
    if request.headers.get("X-Forwarded-Proto", "").lower() != "https":
        return False
    return request.app[CLIENT_IP].peer_is_trusted(request)


def _with_cookie(request: web.Request, body: dict, status: int, token: str) -> web.Response:
    response = respond(body, status)
    response.set_cookie(SESSION_COOKIE, token, max_age=request.app[SETTINGS].jwt_ttl_s, path="/", httponly=True,
                        samesite="Strict", secure=_over_tls(request))
    # Neither the session nor its CSRF token belongs in any cache.
    response.headers["Cache-Control"] = "no-store"
    return response


async def _open(request: web.Request, handler) -> web.Response:
    """Run the signup or login handler, then hand its user a session instead of a token."""
    _require_page_header(request)
    answer = await handler(request)
    user = orjson.loads(answer.body)["user"]
    settings = request.app[SETTINGS]
    token, sid = issue_session(settings, user["id"])
    return _with_cookie(request, {"user": user, "csrf_token": csrf_token(settings, sid)}, answer.status, token)


@routes.post("/v1/auth/session", f"Log in to the web app. {_COOKIE_NOTE}", body=users.LoginIn,
             headers=(CSRF,), responses={200: Session}, access="public")
async def log_in(request: web.Request) -> web.Response:
    return await _open(request, users.login)


@routes.post("/v1/auth/session/signup", f"Sign up and log in to the web app. {_COOKIE_NOTE}", body=users.SignupIn,
             headers=(CSRF,), responses={201: Session}, access="public")
async def sign_up(request: web.Request) -> web.Response:
    return await _open(request, users.signup)


@routes.get("/v1/auth/session", f"The web session in the {SESSION_COOKIE} cookie: its user and CSRF token",
            responses={200: Session}, access="public")
async def current(request: web.Request) -> web.Response:
    """The session's user and CSRF token (a page reload reads them here; another origin cannot)."""
    claims = await session_claims(request)
    async with as_user(request.app[PG_POOL], claims["sub"]) as conn:
        row = await (await conn.execute(users.USER_SQL, {"id": claims["sub"]})).fetchone()
    if row is None:
        raise unauthorized("unknown or revoked credentials")
    response = respond({"user": row, "csrf_token": csrf_token(request.app[SETTINGS], claims["sid"])})
    response.headers["Cache-Control"] = "no-store"
    return response


@routes.delete("/v1/auth/session", f"Log out: the session is revoked and the {SESSION_COOKIE} cookie cleared",
               headers=(CSRF,), responses={200: LoggedOut}, access="public")
async def log_out(request: web.Request) -> web.Response:
    """End the session for good (its token is refused from now on) and clear the cookie."""
    _require_page_header(request)
    try:
        claims = await session_claims(request)
    except ApiError:
        claims = None  # no live session: clearing the cookie is all there is to do
    if claims is not None:
        await revoke_session(request, claims)
    response = respond({"ok": True})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response
