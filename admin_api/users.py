"""Identity: signup, login, the caller's own user, roles, profiles, business API keys and the pixel secret."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from decimal import Decimal
from typing import Literal

import psycopg
import redis.exceptions
from aiohttp import web
from pydantic import BaseModel, Field

from oros import apikeys, pixel
from oros.accounts import hash_password, verify_password
from oros.connections import act_as, as_user
from oros.httperrors import ApiError, conflict, forbidden, not_found
from oros.wire import Amount, Hashtags, HttpUrl, Money, OneOf, Text, Uuid, Whole, refuse, rule

from . import attempts
from .auth import caller, issue_token
from .pages import Page
from .payload import parse, path_id, respond
from .routing import Routes
from .typedefs import PG_POOL, REDIS, SETTINGS

log = logging.getLogger(__name__)
routes = Routes()

SELF_ROLES = ("creator", "business", "supporter")
EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f]{1,64}@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,50}$")
STRIPE_ACCOUNT_RE = re.compile(r"^acct_[A-Za-z0-9]{1,90}$")

# How long the pixel secret a rotation replaces still signs, unless the request says (0: revoke at once).
PIXEL_GRACE_S = 3600
MAX_PIXEL_GRACE_S = 86400
MAX_TIP = Decimal("99999999.99")  # creator_profiles.min_tip_amount DECIMAL(10,2)

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

PAYOUT_ACCOUNT_SQL = "SELECT user_id, stripe_account_id FROM creator_profiles WHERE user_id = %(id)s"

BUSINESS_PROFILE_SQL = """
SELECT user_id, company_name, website, industry, verified, created_at, updated_at
  FROM business_profiles WHERE user_id = %(id)s
"""

API_KEY_COLUMNS = "id, user_id, name, key_prefix, created_at, last_used_at, revoked_at"


def _unique_field(exc: psycopg.errors.UniqueViolation) -> str:
    return "username" if "username" in (exc.diag.constraint_name or "") else "email"


def _email(raw: object) -> str:
    if not isinstance(raw, str) or len(raw) > 255 or not EMAIL_RE.match(raw.strip()):
        refuse("must be a valid address")
    return raw.strip().lower()


def _password(raw: object) -> str:
    if not isinstance(raw, str) or not 8 <= len(raw) <= 256:
        refuse("must be 8 to 256 characters")
    return raw


def _login_password(raw: object) -> str:
    if not isinstance(raw, str) or len(raw) > 256:
        refuse("must be a string")
    return raw


def _matching(pattern: re.Pattern, problem: str):
    def check(raw: object) -> str:
        if not isinstance(raw, str) or not pattern.match(raw):
            refuse(problem)
        return raw

    return check


def _roles(raw: object) -> list[str]:
    if not isinstance(raw, list) or not raw or any(role not in SELF_ROLES for role in raw):
        refuse(f"must be a non-empty list of {', '.join(SELF_ROLES)}")
    return sorted(set(raw))


Email = rule(str, _email, {"type": "string", "format": "email", "maxLength": 255})
Password = rule(str, _password, {"type": "string", "minLength": 8, "maxLength": 256})
Username = rule(str, _matching(USERNAME_RE, "must be 3 to 50 letters, digits, '_', '.' or '-'"),
                {"type": "string", "pattern": USERNAME_RE.pattern})
StripeAccount = rule(str, _matching(STRIPE_ACCOUNT_RE, "must be a Stripe Connect account id (acct_…)"),
                     {"type": "string", "pattern": STRIPE_ACCOUNT_RE.pattern})
Roles = rule(list[str], _roles, {"type": "array", "minItems": 1, "items": {"enum": list(SELF_ROLES)}})
DisplayName = Text(100)


class SignupIn(BaseModel):
    email: Email
    password: Password
    username: Username | None = None
    display_name: DisplayName | None = None
    roles: Roles


class LoginIn(BaseModel):
    email: Email
    password: rule(str, _login_password, {"type": "string", "maxLength": 256})


class MeIn(BaseModel):
    """The caller's public fields; a field left out keeps its value, null clears it."""

    username: Username | None = None
    display_name: DisplayName | None = None
    profile_image_url: HttpUrl(500) | None = None
    bio: Text(5000, min_len=0) | None = None


class RoleIn(BaseModel):
    role: OneOf(*SELF_ROLES)


class CreatorProfileIn(BaseModel):
    hashtags: Hashtags | None = None
    min_tip_amount: Amount(MAX_TIP) | None = None
    stripe_account_id: StripeAccount | None = None


class PayoutAccountIn(BaseModel):
    stripe_account_id: StripeAccount | None = Field(description="null: none (withdrawals then wait for one)")


class BusinessProfileIn(BaseModel):
    company_name: Text(200) | None = None
    website: HttpUrl(500) | None = None
    industry: Text(100) | None = None


class ApiKeyIn(BaseModel):
    name: Text(100)


class PixelSecretIn(BaseModel):
    grace_s: Whole(0, MAX_PIXEL_GRACE_S) = PIXEL_GRACE_S


class User(BaseModel):
    """The user"""

    id: Uuid
    email: str
    username: str | None
    display_name: str | None
    profile_image_url: str | None
    bio: str | None
    kyc_status: Literal["pending", "approved", "rejected"]
    roles: list[str]
    created_at: datetime
    updated_at: datetime


class Auth(BaseModel):
    """The user and a token"""

    user: User
    token: str


class CreatorProfile(BaseModel):
    """The creator profile"""

    user_id: Uuid
    hashtags: list[str] | None  # a PUT may clear both
    min_tip_amount: Money | None
    ranking_score: str
    verified: bool
    stripe_account_id: str | None
    created_at: datetime
    updated_at: datetime


class BusinessProfile(BaseModel):
    """The business profile"""

    user_id: Uuid
    company_name: str | None
    website: str | None
    industry: str | None
    verified: bool
    created_at: datetime
    updated_at: datetime


class Me(User):
    """The caller, with roles and profiles"""

    creator_profile: CreatorProfile | None
    business_profile: BusinessProfile | None


class ApiKey(BaseModel):
    """The API key"""

    id: Uuid
    user_id: Uuid
    name: str
    key_prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewApiKey(ApiKey):
    """The key, with its secret (shown this once)"""

    key: str


class PixelSecret(BaseModel):
    """The new secret (shown this once)"""

    secret: str
    created_at: datetime
    previous_valid_until: datetime | None


async def load_user(conn, user_id: str) -> dict:
    row = await (await conn.execute(USER_SQL, {"id": user_id})).fetchone()
    if row is None:
        raise not_found("user")
    return row


@routes.post("/v1/auth/signup", "Create an account and log in", body=SignupIn, responses={201: Auth},
             access="public")
async def signup(request: web.Request) -> web.Response:
    body = await parse(SignupIn, request)
    # A taken email is answered before any hash is spent (the 409 says so anyway), and is not counted.
    async with request.app[PG_POOL].connection() as conn:
        if await (await conn.execute(_EMAIL_TAKEN_SQL, {"email": body.email})).fetchone():
            raise conflict("email_taken", "this email is already registered", "email")
    password_hash = await attempts.signup_hash(request, hash_password, body.password)
    # There is no uid yet: the API role creates the bare user (oros_sign_up), then
    # the new user adds their own roles and profiles, where RLS refuses 'admin'.
    async with request.app[PG_POOL].connection() as conn:
        try:
            async with conn.transaction():
                user_id = str((await (await conn.execute(
                    "SELECT oros_sign_up(%(email)s, %(hash)s, %(username)s, %(display_name)s) AS id",
                    {"email": body.email, "hash": password_hash, "username": body.username,
                     "display_name": body.display_name},
                )).fetchone())["id"])
                await act_as(conn, user_id)
                for role in body.roles:
                    await conn.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)", (user_id, role))
                await _ensure_profiles(conn, user_id, body.roles)
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


@routes.post("/v1/auth/login", "Log in", body=LoginIn, responses={200: Auth}, access="public")
async def login(request: web.Request) -> web.Response:
    body = await parse(LoginIn, request)
    email, password = body.email, body.password
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


@routes.get("/v1/me", "The caller, with roles and profiles", responses={200: Me})
async def get_me(request: web.Request) -> web.Response:
    who = await caller(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        user = await load_user(conn, who.id)
        user["creator_profile"] = await (await conn.execute(CREATOR_PROFILE_SQL, {"id": who.id})).fetchone()
        user["business_profile"] = await (await conn.execute(BUSINESS_PROFILE_SQL, {"id": who.id})).fetchone()
    return respond(user)


@routes.patch("/v1/me", "Change the caller's public fields", body=MeIn, responses={200: User})
async def patch_me(request: web.Request) -> web.Response:
    who = await caller(request)
    changes = (await parse(MeIn, request)).model_dump(exclude_unset=True)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        if changes:
            assignments = ", ".join(f"{column} = %({column})s" for column in changes)
            try:
                await conn.execute(f"UPDATE users SET {assignments} WHERE id = %(id)s", {**changes, "id": who.id})
            except psycopg.errors.UniqueViolation:
                raise conflict("username_taken", "this username is taken", "username") from None
        user = await load_user(conn, who.id)
    return respond(user)


@routes.post("/v1/me/roles", "Add one of the caller's own roles", body=RoleIn, responses={200: User})
async def add_role(request: web.Request) -> web.Response:
    who = await caller(request)
    role = (await parse(RoleIn, request)).role
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await conn.execute(
            "INSERT INTO user_roles (user_id, role) VALUES (%s, %s) ON CONFLICT DO NOTHING", (who.id, role)
        )
        await _ensure_profiles(conn, who.id, [role])
        user = await load_user(conn, who.id)
    return respond(user)


@routes.put("/v1/me/creator-profile", "Set the caller's creator profile (a field left out keeps its value)",
            body=CreatorProfileIn, responses={200: CreatorProfile})
async def put_creator_profile(request: web.Request) -> web.Response:
    who = (await caller(request)).require("creator")
    changes = (await parse(CreatorProfileIn, request)).model_dump(exclude_unset=True)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await _upsert(conn, "creator_profiles", who.id, changes)
        row = await (await conn.execute(CREATOR_PROFILE_SQL, {"id": who.id})).fetchone()
    return respond(row)


class PayoutAccount(BaseModel):
    """Where the caller's withdrawals are paid"""

    user_id: Uuid
    stripe_account_id: str | None


@routes.put("/v1/me/payout-account", "Set the Stripe Connect account the caller's withdrawals are paid to (a creator, "
            "or a supporter withdrawing its rewards)", body=PayoutAccountIn, responses={200: PayoutAccount})
async def put_payout_account(request: web.Request) -> web.Response:
    """A supporter has no creator profile to set it on, yet withdraws its rewards like earnings: the account is
    kept in the seed's one column for it, ``creator_profiles.stripe_account_id`` (docs/supporters.md)."""
    who = (await caller(request)).require("creator", "supporter")
    account = (await parse(PayoutAccountIn, request)).stripe_account_id
    async with as_user(request.app[PG_POOL], who.id) as conn:
        await _upsert(conn, "creator_profiles", who.id, {"stripe_account_id": account})
        row = await (await conn.execute(PAYOUT_ACCOUNT_SQL, {"id": who.id})).fetchone()
    return respond(row)


@routes.put("/v1/me/business-profile", "Set the caller's business profile (a field left out keeps its value)",
            body=BusinessProfileIn, responses={200: BusinessProfile})
async def put_business_profile(request: web.Request) -> web.Response:
    who = (await caller(request)).require("business")
    changes = (await parse(BusinessProfileIn, request)).model_dump(exclude_unset=True)
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


@routes.post("/v1/api-keys", "Create a business API key; the secret is returned once as key", body=ApiKeyIn,
             responses={201: NewApiKey})
async def create_api_key(request: web.Request) -> web.Response:
    who = await _key_manager(request)
    name = (await parse(ApiKeyIn, request)).name
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


@routes.get("/v1/api-keys", "The caller's API keys (all of them: next_cursor is null)",
            responses={200: Page[ApiKey]})
async def list_api_keys(request: web.Request) -> web.Response:
    who = await _key_manager(request)
    async with as_user(request.app[PG_POOL], who.id) as conn:
        rows = await (await conn.execute(
            f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE user_id = %(id)s ORDER BY created_at DESC, id",
            {"id": who.id},
        )).fetchall()
    return respond({"items": rows, "next_cursor": None})


@routes.delete("/v1/api-keys/{id}", "Revoke an API key", responses={200: ApiKey})
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
        # Revoked in Postgres, which the admin API checks; the settler tells the trackers once Redis is back.
        log.warning("api key revoked but trackers not told yet", exc_info=True,
                    extra={"api_key": str(row["id"]), "retry_every_s": apikeys.REPLAY_INTERVAL_S})
    return respond(row)


@routes.post("/v1/pixel-secret", "Make the business's pixel secret, returned once as secret; the previous one "
             "signs for grace_s more", body=PixelSecretIn, body_required=False, responses={201: PixelSecret})
async def rotate_pixel_secret(request: web.Request) -> web.Response:
    """A new pixel secret for the calling business, shown this once; the previous one expires after ``grace_s``."""
    who = await _key_manager(request)
    grace_s = (await parse(PixelSecretIn, request)).grace_s
    secret = pixel.new_secret()
    async with as_user(request.app[PG_POOL], who.id) as conn:
        row = await (await conn.execute("SELECT * FROM oros_rotate_pixel_secret(%(secret)s, %(grace_s)s)",
                                        {"secret": secret, "grace_s": grace_s})).fetchone()
    # Only the settler reads it back (to check signatures); no endpoint shows it again.
    return respond({"secret": secret, **row}, 201)
