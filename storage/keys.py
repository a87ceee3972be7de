"""API keys (docs/api.md §E12): made after a password login, shown once, stored as their
SHA-256, listed without their secret, revoked by deleting the row.

A key is ``prim_`` and 43 URL-safe characters (32 random bytes). A key is looked up by its
digest on every request, like a token's user, so a revoked key fails on every replica at
once. The lookup only reads (on the read pool); ``last_used_at`` is written at most once a
minute per key (``mark_used``, a conditional update: replicas racing to stamp it write once).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from storage.database import as_utc, utcnow
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
    """(user id, user name, max priority, key id, last used) for a live key, or None for a
    malformed, unknown or revoked one. Reads only."""
    if not _SHAPE.fullmatch(key):
        return None
    return db.execute(
        select(User.id, User.username, User.max_priority, ApiKey.id, ApiKey.last_used_at)
        .join(ApiKey, ApiKey.user_id == User.id)
        .where(ApiKey.digest == _digest(key))
    ).first()


def needs_marking(last_used_at: datetime | None) -> bool:
    """Whether a key last used at ``last_used_at`` is due to be marked used again."""
    if last_used_at is None:
        return True
    return utcnow() - as_utc(last_used_at) > TOUCH_EVERY


def mark_used(*, db: Session, key_id: int) -> None:
    """Stamp the key used now, unless someone stamped it within the last minute."""
    now = utcnow()
    db.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - TOUCH_EVERY),
        )
        .values(last_used_at=now)
    )
    db.commit()
