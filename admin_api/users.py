"""Identity: signup, login, the caller's own user, roles, profiles, business API keys and the pixel secret."""

from __future__ import annotations

import logging
import re

import psycopg
import redis.exceptions
from aiohttp import web

from oros import apikeys, pixel
from oros.accounts import hash_password, verify_password
from oros.connections import act_as, as_user

from . import attempts
from . import openapi as oa
from .auth import caller, issue_token
from .errors import ApiError, conflict, forbidden, invalid, not_found
from .payload import amount, choice, http_url, path_id, read_json, respond, text, whole
from .payload import hashtags as hashtags_field
from .typedefs import PG_POOL, REDIS, SETTINGS

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

SELF_ROLES = ("creator", "business", "supporter")
EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f]{1,64}@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,50}$")
STRIPE_ACCOUNT_RE = re.compile(r"^acct_[A-Za-z0-9]{1,90}$")

# How long the pixel secret a rotation replaces still signs, unless the request says (0: revoke at once).
PIXEL_GRACE_S = 3600
MAX_PIXEL_GRACE_S = 86400

# A valid hash of a random password: login runs one verification even for an
# unknown email, so response time does not reveal which emails exist.
_DUMMY_HASH = hash_password("unknown-user-dummy-password")

_EMAIL_TAKEN_SQL = "SELECT 1 FROM users WHERE email = %(email)s"

USER_SQL = """
SELECT u.id, u.email, u.username, u.display_name, u.profile_image_url, u.bio, u.kyc_status,
       u.created_at, u.updated_at,
       coalesce(array_agg(r.role ORDER BY r.role) FILTER (WHERE r.role IS NOT NULL), '{}') AS roles
  FROM users u LEFT JOIN user_roles r ON r.user_id = u.id
 WHERE u.id = %(id)s
 GROUP BY u.id
"""

CREATOR_PROFILE_SQL = """
SELECT user_id, hashtags, min_tip_amount, ranking_score, verified, stripe_account_id, created_at, updated_at
  FROM creator_profiles WHERE user_id = %(id)s
"""

BUSINESS_PROFILE_SQL = """
SELECT user_id, company_name, website, industry, verified, created_at, updated_at
  FROM business_profiles WHERE user_id = %(id)s
"""

API_KEY_COLUMNS = "id, user_id, name, key_prefix, created_at, last_used_at, revoked_at"


def _email(body: dict) -> str:
    raw = body.get("email")
    if not isinstance(raw, str) or len(raw) > 255 or not EMAIL_RE.match(raw.strip()):
        raise invalid("email", "email must be a valid address")
    return raw.strip().lower()


def _password(body: dict) -> str:
    raw = body.get("password")
    if not isinstance(raw, str) or not 8 <= len(raw) <= 256:
        raise invalid("password", "password must be 8 to 256 characters")
    return raw


def _username(body: dict) -> str | None:
    raw = body.get("username")
    if raw is None:
        return None
    if not isinstance(raw, str) or not USERNAME_RE.match(raw):
        raise invalid("username", "username must be 3 to 50 letters, digits, '_', '.' or '-'")
    return raw


def _roles(body: dict) -> list[str]:
    raw = body.get("roles")
    if not isinstance(raw, list) or not raw or any(role not in SELF_ROLES for role in raw):
        raise invalid("roles", f"roles must be a non-empty list of {', '.join(SELF_ROLES)}")
    return sorted(set(raw))


def _unique_field(exc: psycopg.errors.UniqueViolation) -> str:
    return "username" if "username" in (exc.diag.constraint_name or "") else "email"


async def load_user(conn, user_id: str) -> dict:
    row = await (await conn.execute(USER_SQL, {"id": user_id})).fetchone()
    if row is None:
        raise not_found("user")
    return row


@routes.post("/v1/auth/signup")
async def signup(request: web.Request) -> web.Response:
    body = await read_json(request)
    email, password = _email(body), _password(body)
    username = _username(body)
    display_name = text(body, "display_name", max_len=100)
    roles = _roles(body)
    # A taken email is answered before any hash is spent (the 409 says so anyway), and is not counted.
    async with request.app[PG_POOL].connection() as conn:
        if await (await conn.execute(_EMAIL_TAKEN_SQL, {"email": email})).fetchone():
            raise conflict("email_taken", "this email is already registered", "email")
    await attempts.begin_signup(request)
    password_hash = await attempts.hashed(request, hash_password, password)
    # There is no uid yet: the API role creates the bare user (oros_sign_up), then
    # the new user adds their own roles and profiles, where RLS refuses 'admin'.
    async with request.app[PG_POOL].connection() as conn:
        try:
            async with conn.transaction():
                user_id = str((await (await conn.execute(
                    "SELECT oros_sign_up(%(email)s, %(hash)s, %(username)s, %(display_name)s) AS id",
                    {"email": email, "hash": password_hash, "username": username, "display_name": display_name},
                )).fetchone())["id"])
                await act_as(conn, user_id)
                for role in roles:
                    await conn.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)", (user_id, role))
                await _ensure_profiles(conn, user_id, roles)
                user = await load_user(conn, user_id)
        except psycopg.errors.UniqueViolation as exc:
            field = _unique_field(exc)
            raise conflict(f"{field}_taken", f"this {field} is already registered", field) from None
    token = issue_token(request.app[SETTINGS], str(user_id))
    return respond({"user": user, "token": token}, 201)


async def _ensure_profiles(conn, user_id, roles: list[str]) -> None:
    """A creator or business role comes with its (empty) profile row."""
    if "creator" in roles:
        await conn.execute("INSERT INTO creator_profiles (user_id) VALUES (%s) ON CONFLICT DO NOTHING", (user_id,))
    if "business" in roles:
        await conn.execute("INSERT INTO business_profiles (user_id) VALUES (%s) ON CONFLICT DO NOTHING", (user_id,))


@routes.post("/v1/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await read_json(request)
    email, password = _email(body), body.get("password")
    if not isinstance(password, str) or len(password) > 256:
        raise invalid("password", "password must be a string")
    attempt = await attempts.begin_login(request, email)
    failed = False
    try:
        async with request.app[PG_POOL].connection() as conn, conn.transaction():
            row = await (await conn.execute(
                "SELECT id, password_hash FROM users WHERE email = %(email)s AND NOT is_system", {"email": email}
            )).fetchone()
            ok = await attempts.hashed(request, verify_password, row["password_hash"] if row else _DUMMY_HASH,
                                       password)
            if row is None or not ok:
                failed = True  # the one outcome that stays counted
                raise ApiError(401, "invalid_credentials", "email or password is wrong")
            await act_as(conn, str(row["id"]))
            user = await load_user(conn, row["id"])
    finally:
        if not failed:  # a success, or refused before the password was judged (503)
            await attempt.release(request.app[REDIS])
    await attempts.remember_address(request, email)
    return respond({"user": user, "token": issue_token(request.app[SETTINGS], str(row["id"]))})


@routes.get("/v1/me")
async def get_me(request: web.Request) -> web.Response:
    who = await caller(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        user = await load_user(conn, who.id)
        user["creator_profile"] = await (await conn.execute(CREATOR_PROFILE_SQL, {"id": who.id})).fetchone()
        user["business_profile"] = await (await conn.execute(BUSINESS_PROFILE_SQL, {"id": who.id})).fetchone()
    return respond(user)


@routes.patch("/v1/me")
async def patch_me(request: web.Request) -> web.Response:
    who = await caller(request)
    body = await read_json(request)
    changes = {
        "username": _username(body),
        "display_name": text(body, "display_name", max_len=100),
        "profile_image_url": http_url(body, "profile_image_url"),
        "bio": text(body, "bio", max_len=5000, min_len=0),
    }
    if changes["profile_image_url"] is not None and len(changes["profile_image_url"]) > 500:
        raise invalid("profile_image_url", "profile_image_url must be at most 500 characters")
    changes = {k: v for k, v in changes.items() if k in body}
    async with as_user(request.app[PG_POOL], who.id) as conn:
        if changes:
            assignments = ", ".join(f"{column} = %({column})s" for column in changes)
            try:
                await conn.execute(f"UPDATE users SET {assignments} WHERE id = %(id)s", {**changes, "id": who.id})
            except psycopg.errors.UniqueViolation:
                raise conflict("username_taken", "this username is taken", "username") from None
        user = await load_user(conn, who.id)
    return respond(user)


@routes.post("/v1/me/roles")
async def add_role(request: web.Request) -> web.Response:
    who = await caller(request)
    body = await read_json(request)
    role = choice(body, "role", SELF_ROLES)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await conn.execute(
            "INSERT INTO user_roles (user_id, role) VALUES (%s, %s) ON CONFLICT DO NOTHING", (who.id, role)
        )
        await _ensure_profiles(conn, who.id, [role])
        user = await load_user(conn, who.id)
    return respond(user)


@routes.put("/v1/me/creator-profile")
async def put_creator_profile(request: web.Request) -> web.Response:
    who = (await caller(request)).require("creator")
    body = await read_json(request)
    fields = {
        "hashtags": hashtags_field(body),
        "min_tip_amount": amount(body, "min_tip_amount", required=False),
        "stripe_account_id": _stripe_account(body),
    }
    if fields["min_tip_amount"] is not None and fields["min_tip_amount"] > 99999999:
        raise invalid("min_tip_amount", "min_tip_amount is too large")
    changes = {k: v for k, v in fields.items() if k in body}
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await _upsert(conn, "creator_profiles", who.id, changes)
        row = await (await conn.execute(CREATOR_PROFILE_SQL, {"id": who.id})).fetchone()
    return respond(row)


def _stripe_account(body: dict) -> str | None:
    raw = body.get("stripe_account_id")
    if raw is not None and (not isinstance(raw, str) or not STRIPE_ACCOUNT_RE.match(raw)):
        raise invalid("stripe_account_id", "stripe_account_id must be a Stripe Connect account id (acct_…)")
    return raw


@routes.put("/v1/me/business-profile")
async def put_business_profile(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business")
    body = await read_json(request)
    fields = {
        "company_name": text(body, "company_name", max_len=200),
        "website": http_url(body, "website"),
        "industry": text(body, "industry", max_len=100),
    }
    if fields["website"] is not None and len(fields["website"]) > 500:
        raise invalid("website", "website must be at most 500 characters")
    changes = {k: v for k, v in fields.items() if k in body}
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await _upsert(conn, "business_profiles", who.id, changes)
        row = await (await conn.execute(BUSINESS_PROFILE_SQL, {"id": who.id})).fetchone()
    return respond(row)


async def _upsert(conn, table: str, user_id: str, changes: dict) -> None:
    """Insert the caller's profile row or update the given columns (a PUT of a partial body keeps the rest)."""
    columns = ["user_id", *changes]
    values = ", ".join(f"%({c})s" for c in columns)
    update = ", ".join(f"{c} = EXCLUDED.{c}" for c in changes)
    on_conflict = f"DO UPDATE SET {update}" if update else "DO NOTHING"
    await conn.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) ON CONFLICT (user_id) {on_conflict}",
        {**changes, "user_id": user_id},
    )


@routes.post("/v1/api-keys")
async def create_api_key(request: web.Request) -> web.Response:
    who = await _key_manager(request)
    body = await read_json(request)
    name = text(body, "name", required=True, max_len=100)
    secret, prefix, key_hash = apikeys.generate()
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute(
            f"INSERT INTO api_keys (user_id, name, key_prefix, key_hash)"
            f" VALUES (%(user_id)s, %(name)s, %(prefix)s, %(hash)s) RETURNING {API_KEY_COLUMNS}",
            {"user_id": who.id, "name": name, "prefix": prefix, "hash": key_hash},
        )).fetchone()
    # The secret is shown this once; only its hash is stored.
    return respond({**row, "key": secret}, 201)


async def _key_manager(request: web.Request):
    """API keys are managed by a logged-in business, not by another API key."""
    who = (await caller(request)).require("business")
    if who.via != "jwt":
        raise forbidden("API keys are managed with a login token, not an API key")
    return who


@routes.get("/v1/api-keys")
async def list_api_keys(request: web.Request) -> web.Response:
    who = await _key_manager(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        rows = await (await conn.execute(
            f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE user_id = %(id)s ORDER BY created_at DESC, id",
            {"id": who.id},
        )).fetchall()
    return respond({"items": rows, "next_cursor": None})


@routes.delete("/v1/api-keys/{id}")
async def revoke_api_key(request: web.Request) -> web.Response:
    who = await _key_manager(request)
    key_id = path_id(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute(
            f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
            f" WHERE id = %(id)s AND user_id = %(user_id)s RETURNING {API_KEY_COLUMNS}, key_hash",
            {"id": key_id, "user_id": who.id},
        )).fetchone()
    if row is None:
        raise not_found("api key")
    try:
        await apikeys.revoke(request.app[REDIS], request.app[SETTINGS].keys, row.pop("key_hash").strip())
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException):
        # Revoked in Postgres, which the admin API checks; trackers see it when their entry expires.
        log.warning("api key revoked but trackers not told", exc_info=True,
                    extra={"api_key": str(row["id"]), "within_s": apikeys.CACHE_TTL_S})
    return respond(row)


@routes.post("/v1/pixel-secret")
async def rotate_pixel_secret(request: web.Request) -> web.Response:
    """A new pixel secret for the calling business, shown this once; the previous one expires after ``grace_s``."""
    who = await _key_manager(request)
    grace_s = whole(await read_json(request), "grace_s", default=PIXEL_GRACE_S, low=0, high=MAX_PIXEL_GRACE_S)
    secret = pixel.new_secret()
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute("SELECT * FROM oros_rotate_pixel_secret(%(secret)s, %(grace_s)s)",
                                        {"secret": secret, "grace_s": grace_s})).fetchone()
    # Only the settler reads it back (to check signatures); no endpoint shows it again.
    return respond({"secret": secret, **row}, 201)


USER = oa.obj({
    "id": oa.UUID, "email": {"type": "string"}, "username": oa.nullable({"type": "string"}),
    "display_name": oa.nullable({"type": "string"}), "profile_image_url": oa.nullable({"type": "string"}),
    "bio": oa.nullable({"type": "string"}), "kyc_status": {"enum": ["pending", "approved", "rejected"]},
    "roles": {"type": "array", "items": {"type": "string"}},
    "created_at": oa.TIMESTAMP, "updated_at": oa.TIMESTAMP,
}, ["id", "email", "kyc_status", "roles"])
AUTH = oa.obj({"user": USER, "token": {"type": "string"}}, ["user", "token"])
CREATOR_PROFILE = oa.obj({
    "user_id": oa.UUID, "hashtags": {"type": "array", "items": {"type": "string"}},
    "min_tip_amount": oa.MONEY, "ranking_score": {"type": "string"}, "verified": {"type": "boolean"},
    "stripe_account_id": oa.nullable({"type": "string"}), "created_at": oa.TIMESTAMP, "updated_at": oa.TIMESTAMP,
}, ["user_id"])
BUSINESS_PROFILE = oa.obj({
    "user_id": oa.UUID, "company_name": oa.nullable({"type": "string"}), "website": oa.nullable({"type": "string"}),
    "industry": oa.nullable({"type": "string"}), "verified": {"type": "boolean"},
    "created_at": oa.TIMESTAMP, "updated_at": oa.TIMESTAMP,
}, ["user_id"])
ME = {**USER, "properties": {**USER["properties"], "creator_profile": oa.nullable(CREATOR_PROFILE),
                             "business_profile": oa.nullable(BUSINESS_PROFILE)}}
API_KEY = oa.obj({
    "id": oa.UUID, "user_id": oa.UUID, "name": {"type": "string"}, "key_prefix": {"type": "string"},
    "created_at": oa.TIMESTAMP, "last_used_at": oa.nullable(oa.TIMESTAMP), "revoked_at": oa.nullable(oa.TIMESTAMP),
}, ["id", "name", "key_prefix"])
ROLE_LIST = {"type": "array", "minItems": 1, "items": {"enum": list(SELF_ROLES)}}

OPENAPI = {
    "/v1/auth/signup": {"post": oa.operation(
        "Create an account and log in", {"201": oa.json_response("the new user and a token", AUTH)},
        body=oa.json_body(oa.obj({
            "email": {"type": "string", "format": "email"}, "password": {"type": "string", "minLength": 8},
            "username": {"type": "string"}, "display_name": {"type": "string"}, "roles": ROLE_LIST,
        }, ["email", "password", "roles"])), public=True)},
    "/v1/auth/login": {"post": oa.operation(
        "Log in", {"200": oa.json_response("the user and a token", AUTH)},
        body=oa.json_body(oa.obj({"email": {"type": "string"}, "password": {"type": "string"}},
                                 ["email", "password"])), public=True)},
    "/v1/me": {
        "get": oa.operation("The caller, with roles and profiles", {"200": oa.json_response("the caller", ME)}),
        "patch": oa.operation("Change the caller's public fields", {"200": oa.json_response("the caller", USER)},
                              body=oa.json_body(oa.obj({
                                  "username": {"type": "string"}, "display_name": {"type": "string"},
                                  "profile_image_url": {"type": "string"}, "bio": {"type": "string"}}))),
    },
    "/v1/me/roles": {"post": oa.operation(
        "Add one of the caller's own roles", {"200": oa.json_response("the caller", USER)},
        body=oa.json_body(oa.obj({"role": {"enum": list(SELF_ROLES)}}, ["role"])))},
    "/v1/me/creator-profile": {"put": oa.operation(
        "Set the caller's creator profile", {"200": oa.json_response("the profile", CREATOR_PROFILE)},
        body=oa.json_body(oa.obj({"hashtags": {"type": "array", "items": {"type": "string"}},
                                  "min_tip_amount": oa.AMOUNT, "stripe_account_id": {"type": "string"}})))},
    "/v1/me/business-profile": {"put": oa.operation(
        "Set the caller's business profile", {"200": oa.json_response("the profile", BUSINESS_PROFILE)},
        body=oa.json_body(oa.obj({"company_name": {"type": "string"}, "website": {"type": "string"},
                                  "industry": {"type": "string"}})))},
    "/v1/api-keys": {
        "post": oa.operation(
            "Create a business API key; the secret is returned once as key",
            {"201": oa.json_response("the key, with its secret", {
                **API_KEY, "properties": {**API_KEY["properties"], "key": {"type": "string"}},
                "required": [*API_KEY["required"], "key"]})},
            body=oa.json_body(oa.obj({"name": {"type": "string", "minLength": 1, "maxLength": 100}}, ["name"]))),
        "get": oa.operation("The caller's API keys", {"200": oa.json_response("keys", oa.page_of(API_KEY))}),
    },
    "/v1/pixel-secret": {"post": oa.operation(
        "Make the business's pixel secret, returned once as secret; the previous one signs for grace_s more",
        {"201": oa.json_response("the new secret", oa.obj({
            "secret": {"type": "string"}, "created_at": oa.TIMESTAMP,
            "previous_valid_until": oa.nullable(oa.TIMESTAMP)}, ["secret", "created_at", "previous_valid_until"]))},
        body=oa.json_body(oa.obj({"grace_s": {"type": "integer", "minimum": 0, "maximum": MAX_PIXEL_GRACE_S,
                                              "default": PIXEL_GRACE_S}}), required=False))},
    "/v1/api-keys/{id}": {"delete": oa.operation(
        "Revoke an API key", {"200": oa.json_response("the revoked key", API_KEY)},
        parameters=[oa.path_param()])},
}
