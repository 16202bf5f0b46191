"""Who is calling: a JWT from login, or a business API key, both as ``Authorization: Bearer``.

Roles are read from ``user_roles`` on every request (not baked into the
token), so granting or revoking a role takes effect at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import jwt
from aiohttp import web

from oros import apikeys
from oros.events import canonical_uuid
from oros.headers import bearer
from oros.settings import Settings

from .errors import forbidden, unauthorized
from .typedefs import CALLER, PG_POOL, SETTINGS

JWT_ALGORITHM = "HS256"

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

    def require(self, *roles: str) -> "Caller":
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


def verify_token(settings: Settings, token: str) -> str:
    """The user id of a valid, unexpired token; 401 otherwise."""
    try:
        claims = jwt.decode(
            token, settings.jwt_secret, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise unauthorized("token expired") from None
    except jwt.InvalidTokenError:
        raise unauthorized("invalid token") from None
    user_id = canonical_uuid(claims["sub"])
    if user_id is None:
        raise unauthorized("invalid token")
    return user_id


def _bearer(request: web.Request) -> str:
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        raise unauthorized("send Authorization: Bearer <token or API key>")
    return token


async def caller(request: web.Request) -> Caller:
    """The authenticated caller of ``request`` (cached on the request); raises 401."""
    cached = request.get(CALLER)
    if cached is not None:
        return cached
    token = _bearer(request)
    if token.startswith(apikeys.KEY_PREFIX):
        sql, params, via = _KEY_SQL, {"hash": apikeys.hash_key(token)}, "api_key"
    else:
        user_id = verify_token(request.app[SETTINGS], token)
        sql, params, via = _USER_SQL, {"id": user_id}, "jwt"
    async with request.app[PG_POOL].connection() as conn:
        row = await (await conn.execute(sql, params)).fetchone()
    if row is None:
        raise unauthorized("unknown or revoked credentials")
    found = Caller(id=str(row["id"]), roles=frozenset(row["roles"]), via=via)
    request[CALLER] = found
    return found
