"""Who is calling: the user a bearer token or an API key names, read in a session of its own
(blocking: the caller runs it in the thread pool)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from storage.database import as_utc
from storage.keys import caller_for_key, mark_used, needs_marking
from storage.users import get_caller


@dataclass(frozen=True)
class Caller:
    """The authenticated user, as routes see it."""

    id: int
    username: str
    max_priority: int = 5  # the highest priority the user may ask for (docs/api.md §E10)
    # The API key the request came with (docs/api.md §E12); None for a password login's token.
    key_id: int | None = None


def load_caller(
    sessions: sessionmaker[Session], user_id: int, issued_at: float | None = None
) -> Caller | None:
    """The user with this id; None when there is none, or when a token issued at
    ``issued_at`` predates the user's last password change or logout."""
    with sessions() as db:
        user = get_caller(db=db, user_id=user_id)
        if user is None:
            return None
        revoked = user.tokens_valid_after
        if (
            revoked is not None
            and issued_at is not None
            and issued_at < as_utc(revoked).timestamp()
        ):
            return None
        return Caller(id=user.id, username=user.username, max_priority=user.max_priority)


def load_key_caller(
    read_sessions: sessionmaker[Session], sessions: sessionmaker[Session], key: str
) -> Caller | None:
    """The owner of a live API key, read on ``read_sessions``; None for a malformed, unknown
    or revoked key. The key is marked used on ``sessions`` only when its mark is a minute
    old, so keyed requests stay off the main pool."""
    with read_sessions() as db:
        row = caller_for_key(db=db, key=key)
    if row is None:
        return None
    if needs_marking(row[4]):
        with sessions() as db:
            mark_used(db=db, key_id=row[3])
    return Caller(id=row[0], username=row[1], max_priority=row[2], key_id=row[3])
