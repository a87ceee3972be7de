"""Access tokens (JWT): made at login, read on every request."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from jose import JWTError, jwt


def create_access_token(*, user_id: int, secret: str, algorithm: str, expires_minutes: int) -> str:
    now = datetime.now(UTC)
    # iat to the millisecond (a NumericDate may have a fraction): a token made the moment
    # after a password change or a logout is told from one made the moment before.
    payload = {
        "sub": str(user_id),
        "iat": math.floor(now.timestamp() * 1000) / 1000,
        "exp": now + timedelta(minutes=expires_minutes),
        "type": "access",
    }
    return jwt.encode(payload, secret, algorithm=algorithm)


def read_access_token(token: str, *, secret: str, algorithm: str) -> tuple[int, float] | None:
    """(user id, issued at as a UNIX time) of a valid token, or None for anything forged,
    expired or malformed."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[algorithm],
            options={"require_exp": True, "require_sub": True, "require_iat": True},
        )
    except (JWTError, ValueError, TypeError):
        return None
    sub, issued_at = payload.get("sub"), payload.get("iat")
    if (
        payload.get("type") != "access"
        or not isinstance(sub, str)
        or not sub.isdecimal()
        or not isinstance(issued_at, int | float)
    ):
        return None
    return int(sub), float(issued_at)


def decode_access_token(token: str, *, secret: str, algorithm: str) -> int | None:
    """The user id a valid token names, or None for anything forged, expired or malformed."""
    read = read_access_token(token, secret=secret, algorithm=algorithm)
    return read[0] if read is not None else None
