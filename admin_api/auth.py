"""Who is calling: a JWT from login, or a business API key, both as ``Authorization: Bearer``;
or the web app's session cookie.

Roles are read from ``user_roles`` on every request (not baked into the
token), so granting or revoking a role takes effect at once.

A session is a JWT carrying a session id (``sid``) in an httpOnly cookie
(admin_api.sessions sets it). Because a browser attaches cookies by itself,
a cookie-authenticated request that may change state (any method but GET,
HEAD, OPTIONS) must also carry ``X-OROS-CSRF``, an HMAC of the session id
that only a page of our own origin can read; a cross-site form can send
neither the header nor, under ``SameSite=Strict``, the cookie. Logging out
revokes the session id in Redis until the token would have expired, which
also stops the same token sent as a Bearer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import jwt
from aiohttp import web

from oros import apikeys
from oros.events import canonical_uuid
from oros.headers import bearer
from oros.httperrors import ApiError, forbidden, unauthorized
from oros.settings import Settings

from .typedefs import CALLER, PG_POOL, REDIS, SETTINGS

JWT_ALGORITHM = "HS256"
SESSION_COOKIE = "oros_session"
CSRF_HEADER = "X-OROS-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# One round trip resolves the user (a deleted user's token stops working) and its roles.
_USER_SQL = """
SELECT u.id::text AS id, coalesce(array_agg(r.role) FILTER (WHERE r.role IS NOT NULL), '{}') AS roles
  FROM users u LEFT JOIN user_roles r ON r.user_id = u.id
 WHERE u.id = %(id)s AND NOT u.is_system
 GROUP BY u.id
"""

_KEY_SQL = f"""
SELECT k.user_id AS id, coalesce(array_agg(r.role) FILTER (WHERE r.role IS NOT NULL), '{{}}') AS roles
  FROM ({apikeys.OWNER_SQL}) k
  LEFT JOIN user_roles r ON r.user_id = k.user_id::uuid
 GROUP BY k.user_id
"""


@dataclass(frozen=True)
class Caller:
    id: str
    roles: frozenset[str]
    via: Literal["jwt", "api_key"]

    def require(self, *roles: str) -> Caller:
        """Return self when the caller holds any of ``roles`` (admins pass every check); else 403."""
        if "admin" in self.roles or self.roles.intersection(roles):
            return self
        raise forbidden(f"requires the role {' or '.join(roles)}")

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def issue_token(settings: Settings, user_id: str, *, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims = {"sub": user_id, "iat": issued, "exp": issued + settings.jwt_ttl_s}
    return jwt.encode(claims, settings.jwt_secret, algorithm=JWT_ALGORITHM)


def issue_session(settings: Settings, user_id: str, *, now: float | None = None) -> tuple[str, str]:
    """A session token (a login JWT with a random ``sid``) and its session id."""
    issued = int(time.time() if now is None else now)
    sid = secrets.token_urlsafe(18)
    claims = {"sub": user_id, "sid": sid, "iat": issued, "exp": issued + settings.jwt_ttl_s}
    return jwt.encode(claims, settings.jwt_secret, algorithm=JWT_ALGORITHM), sid


def csrf_token(settings: Settings, sid: str) -> str:
    """The anti-CSRF token of a session: derived from its id, so nothing is stored."""
    return hmac.new(settings.jwt_secret.encode(), f"csrf:{sid}".encode(), hashlib.sha256).hexdigest()


def token_claims(settings: Settings, token: str) -> dict:
    """The claims of a valid, unexpired token, ``sub`` checked to be a UUID; 401 otherwise."""
    try:
        claims = jwt.decode(
            token, settings.jwt_secret, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise unauthorized("token expired") from None
    except jwt.InvalidTokenError:
        raise unauthorized("invalid token") from None
    claims["sub"] = canonical_uuid(claims["sub"])
    if claims["sub"] is None:
        raise unauthorized("invalid token")
    if "sid" in claims and not isinstance(claims["sid"], str):
        raise unauthorized("invalid token")
    return claims


def _bearer(request: web.Request) -> str:
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        raise unauthorized("send Authorization: Bearer <token or API key>")
    return token


def has_credentials(request: web.Request) -> bool:
    """Whether the request says who it is (a Bearer or the session cookie), rightly or not."""
    return "Authorization" in request.headers or SESSION_COOKIE in request.cookies


async def session_claims(request: web.Request) -> dict:
    """The claims of the request's session cookie when it holds a live session; 401 otherwise."""
    token = request.cookies.get(SESSION_COOKIE)
    if token is None:
        raise unauthorized("no session; log in")
    if not token.isascii():  # a JWT is ASCII; anything else is forged
        raise unauthorized("invalid token")
    claims = token_claims(request.app[SETTINGS], token)
    if "sid" not in claims:
        raise unauthorized("the session cookie holds no session")
    await _check_not_revoked(request, claims)
    return claims


def _check_csrf(request: web.Request, sid: str) -> None:
    """A cookie-authenticated request that may change state proves that our own page sent it."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER, "").encode("utf-8", "replace")
    if not hmac.compare_digest(sent, csrf_token(request.app[SETTINGS], sid).encode()):
        raise ApiError(403, "csrf", f"a session request that changes state must send {CSRF_HEADER}", CSRF_HEADER)


async def revoke_session(request: web.Request, claims: dict) -> None:
    """Refuse this session's token from now until it would have expired anyway."""
    ttl_s = int(claims["exp"]) - int(time.time())
    if ttl_s > 0:
        await request.app[REDIS].set(request.app[SETTINGS].keys.revoked_session(claims["sid"]), 1, ex=ttl_s)


async def _check_not_revoked(request: web.Request, claims: dict) -> None:
    if "sid" in claims and await request.app[REDIS].exists(request.app[SETTINGS].keys.revoked_session(claims["sid"])):
        raise unauthorized("this session has ended; log in again")


async def caller(request: web.Request) -> Caller:
    """The authenticated caller of ``request`` (cached on the request); raises 401 (403 for a CSRF failure)."""
    cached = request.get(CALLER)
    if cached is not None:
        return cached
    # A Bearer, when sent, decides alone; the cookie is the browser's fallback.
    if "Authorization" not in request.headers and SESSION_COOKIE in request.cookies:
        claims = await session_claims(request)
        _check_csrf(request, claims["sid"])
        sql, params, via = _USER_SQL, {"id": claims["sub"]}, "jwt"
    else:
        token = _bearer(request)
        if token.startswith(apikeys.KEY_PREFIX):
            sql, params, via = _KEY_SQL, {"hash": apikeys.hash_key(token)}, "api_key"
        else:
            claims = token_claims(request.app[SETTINGS], token)
            await _check_not_revoked(request, claims)
            sql, params, via = _USER_SQL, {"id": claims["sub"]}, "jwt"
    async with request.app[PG_POOL].connection() as conn:
        row = await (await conn.execute(sql, params)).fetchone()
    if row is None:
        raise unauthorized("unknown or revoked credentials")
    found = Caller(id=str(row["id"]), roles=frozenset(row["roles"]), via=via)
    request[CALLER] = found
    return found
