"""Users, in one place: lookup, password hashes and their check, authentication, token
revocation and the administration the CLI exposes. The API, the builder (the development demo
user), the CLI and the benchmark all go through here."""

from __future__ import annotations

from typing import Any, cast

from passlib.context import CryptContext
from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.database import utcnow
from storage.models import User

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


class UserExistsError(ValueError):
    pass


def get_user(*, db: Session, user_id: int) -> User | None:
    """The user with this id, if any."""
    return db.get(User, user_id)


def get_caller(*, db: Session, user_id: int) -> Any:
    """What authenticating a request needs of the user with this id (``id``, ``username``,
    ``tokens_valid_after``, ``max_priority``), read as one row without loading the whole
    account; None when there is none. Every authenticated request reads it."""
    return db.execute(
        select(User.id, User.username, User.tokens_valid_after, User.max_priority).where(
            User.id == user_id
        )
    ).first()


def get_user_by_username(*, db: Session, username: str) -> User | None:
    """The user with this name, if any."""
    return db.scalar(select(User).where(User.username == username))


def authenticate(*, db: Session, username: str, password: str) -> User | None:
    """The user if the password matches; the same work is done when the user is unknown."""
    user = get_user_by_username(db=db, username=username)
    ok = verify_password(password, user.password_hash if user else None)
    return user if ok else None


def create_user(*, db: Session, username: str, password: str) -> User:
    """Add a user; raises UserExistsError when the name is taken."""
    user = User(username=username, password_hash=hash_password(password))
    db.add(user)
    try:
        db.commit()
    except IntegrityError as exc:
        db.rollback()
        raise UserExistsError(f"user {username!r} already exists") from exc
    return user


def list_users(*, db: Session) -> list[User]:
    """Every user, by id."""
    return list(db.scalars(select(User).order_by(User.id)))


def set_password(*, db: Session, username: str, password: str) -> bool:
    """Change a user's password; False when there is no such user."""
    user = get_user_by_username(db=db, username=username)
    if user is None:
        return False
    user.password_hash = hash_password(password)
    user.tokens_valid_after = utcnow()  # every token issued before is refused from now
    db.commit()
    return True


def set_max_priority(*, db: Session, username: str, priority: int) -> bool:
    """Let the user ask for priorities up to ``priority`` (0 to 9); False when there is no
    such user."""
    if not 0 <= priority <= 9:
        raise ValueError("a priority is 0 to 9")
    result = cast(
        CursorResult,
        db.execute(update(User).where(User.username == username).values(max_priority=priority)),
    )
    db.commit()
    return bool(result.rowcount)


def revoke_tokens(*, db: Session, user_id: int) -> None:
    """Log out everywhere: every token issued until now is refused."""
    db.execute(update(User).where(User.id == user_id).values(tokens_valid_after=utcnow()))
    db.commit()


def delete_user(*, db: Session, username: str) -> bool:
    """Delete a user and, by cascade, their tasks; False when there is no such user."""
    user = get_user_by_username(db=db, username=username)
    if user is None:
        return False
    db.delete(user)
    db.commit()
    return True


def ensure_user(*, db: Session, username: str, password: str) -> bool:
    """Create the user unless it exists; True when it was created."""
    if get_user_by_username(db=db, username=username) is not None:
        return False
    try:
        create_user(db=db, username=username, password=password)
    except UserExistsError:  # another replica made it first
        return False
    return True
