"""Password hashing (argon2id) and the admin account the CLI creates."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .connections import pg_transaction
from .settings import Settings

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_admin(settings: Settings, email: str, password: str) -> str:
    """Create the user or promote an existing one; either way it ends up an admin with this password."""
    email = email.strip().lower()
    if "@" not in email or len(password) < 8:
        raise ValueError("an admin needs a valid email and a password of at least 8 characters")
    with pg_transaction(settings) as conn:
        row = conn.execute(
            "INSERT INTO users (email, password_hash, kyc_status) VALUES (%(email)s, %(hash)s, 'approved')"
            " ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash"
            " RETURNING id::text AS id",
            {"email": email, "hash": hash_password(password)},
        ).fetchone()
        conn.execute(
            "INSERT INTO user_roles (user_id, role) VALUES (%(id)s, 'admin') ON CONFLICT DO NOTHING", row
        )
    return row["id"]
