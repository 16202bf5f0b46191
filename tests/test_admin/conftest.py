"""Fixtures for the admin API tests: the app on a test server, and users made quickly.

Users other than the one a test signs up over HTTP are inserted directly with
a token from ``issue_token`` (argon2 hashing per user would dominate the run).
"""

from __future__ import annotations

import secrets

import pytest

from admin_api.app import create_app
from admin_api.auth import issue_token
from oros.accounts import create_admin
from settler.jobs import OWNER_JOBS

from admin_flows import User


@pytest.fixture
async def api(aiohttp_client, settings):
    return await aiohttp_client(create_app(settings, OWNER_JOBS))


@pytest.fixture
def make_user(pg, settings):
    """``make_user(*roles, kyc="pending", stripe_account=None) -> User`` inserted as the owner."""

    def make(*roles: str, kyc: str = "pending", stripe_account: str | None = None) -> User:
        row = pg.execute(
            "INSERT INTO users (email, kyc_status) VALUES (%s, %s) RETURNING id::text AS id",
            (f"{secrets.token_hex(6)}@example.com", kyc),
        ).fetchone()
        for role in roles:
            pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)", (row["id"], role))
        if "creator" in roles:
            pg.execute("INSERT INTO creator_profiles (user_id, stripe_account_id) VALUES (%s, %s)",
                       (row["id"], stripe_account))
        if "business" in roles:
            pg.execute("INSERT INTO business_profiles (user_id) VALUES (%s)", (row["id"],))
        return User(row["id"], {"Authorization": f"Bearer {issue_token(settings, row['id'])}"})

    return make


@pytest.fixture
def admin(settings) -> User:
    user_id = create_admin(settings, f"admin-{secrets.token_hex(4)}@example.com", "admin-password")
    return User(user_id, {"Authorization": f"Bearer {issue_token(settings, user_id)}"})
