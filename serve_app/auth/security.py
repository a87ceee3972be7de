"""Password hashing and access tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jose import JWTError, jwt
from passlib.context import CryptContext

# argon2: passlib's bcrypt backend breaks on bcrypt>=5 (its self-test hashes 73 bytes).
password_context = CryptContext(schemes=["argon2"], deprecated="auto")

# Verified against when a login names no user, so both failures cost one argon2 verify.
_DUMMY_HASH = password_context.hash("not a password anyone has")


def hash_password(password: str) -> str:
    return password_context.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Check a password; with no hash, spend the same time and say no."""
    if password_hash is None:
        password_context.verify(password, _DUMMY_HASH)
        return False
    try:
        return password_context.verify(password, password_hash)
    except (ValueError, TypeError):
        return False


def create_access_token(*, user_id: int, secret: str, algorithm: str, expires_minutes: int) -> str:
    now = datetime.now(UTC)
    payload = {"sub": str(user_id), "iat": now, "exp": now + timedelta(minutes=expires_minutes),
               "type": "access"}
    return jwt.encode(payload, secret, algorithm=algorithm)


def decode_access_token(token: str, *, secret: str, algorithm: str) -> int | None:
    """The user id a valid token names, or None for anything forged, expired or malformed."""
    try:
        payload = jwt.decode(token, secret, algorithms=[algorithm],
                             options={"require_exp": True, "require_sub": True})
    except (JWTError, ValueError, TypeError):
        return None
    sub = payload.get("sub")
    if payload.get("type") != "access" or not isinstance(sub, str) or not sub.isdecimal():
        return None
    return int(sub)
