"""API keys (docs/api.md §E12): made after a password login, shown once, stored as their
SHA-256, listed without their secret, revoked by deleting the row.

A key is ``prim_`` and 43 URL-safe characters (32 random bytes). A key is looked up by its
digest on every request, like a token's user, so a revoked key fails on every replica at
once; ``last_used_at`` is written at most once a minute per key, in the lookup's own
transaction.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from storage.database import utcnow
from storage.models import ApiKey, User

PREFIX = "prim_"
_SHAPE = re.compile(r"prim_[A-Za-z0-9_-]{43}")
TOUCH_EVERY = timedelta(minutes=1)


class TooManyKeys(Exception):
    """The user already has as many keys as allowed."""


@dataclass(frozen=True)
class NewKey:
    """A key just made: its row and its secret (shown this once)."""

    id: int
    name: str
    key: str
    created_at: datetime


def looks_like_key(credential: str) -> bool:
    """Whether a bearer credential is meant as a key (a token is a JWT, never ``prim_``)."""
    return credential.startswith(PREFIX)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(*, db: Session, user_id: int, name: str, limit: int) -> NewKey:
    """A new key for the user (TooManyKeys when they hold ``limit``); the user's row is
    locked first, so racing requests cannot pass the limit."""
    db.execute(select(User.id).where(User.id == user_id).with_for_update())
    held = db.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.user_id == user_id))
    if held is not None and held >= limit:
        db.rollback()
        raise TooManyKeys
    key = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(user_id=user_id, name=name, digest=_digest(key), created_at=utcnow())
    db.add(row)
    db.commit()
    return NewKey(id=row.id, name=row.name, key=key, created_at=row.created_at)


def list_keys(*, db: Session, user_id: int) -> list[ApiKey]:
    """The user's keys, oldest first (digests only: the secrets are not kept)."""
    return list(db.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id)))


def revoke_key(*, db: Session, user_id: int, key_id: int) -> bool:
    """Delete the user's key; False when they have none with this id."""
    gone = db.execute(delete(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id))
    db.commit()
    return bool(getattr(gone, "rowcount", 0))


def caller_for_key(*, db: Session, key: str) -> Any:
    """(user id, user name, max priority, key id) for a live key, or None for a malformed,
    unknown or revoked one. Marks the key used, at most once a minute."""
    if not _SHAPE.fullmatch(key):
        return None
    row = db.execute(
        select(User.id, User.username, User.max_priority, ApiKey.id, ApiKey.last_used_at)
        .join(ApiKey, ApiKey.user_id == User.id)
        .where(ApiKey.digest == _digest(key))
    ).first()
    if row is None:
        return None
    now = utcnow()
    last = row[4]
    if last is not None and last.tzinfo is None:  # SQLite hands back naive UTC
        last = last.replace(tzinfo=now.tzinfo)
    if last is None or now - last > TOUCH_EVERY:
        db.execute(update(ApiKey).where(ApiKey.id == row[3]).values(last_used_at=now))
        db.commit()
    return row
