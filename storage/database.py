"""Engine, session factories, the one session-per-call wrapper (``Sessions``) and the
declarative base of the ORM classes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, MetaData, create_engine, event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# A pooled connection idle longer than this is pinged before use (a restarted PostgreSQL
# leaves dead ones behind); busier ones are not: a ping per checkout was a round trip per
# query. A connection that dies anyway fails its statement, SQLAlchemy then invalidates the
# whole pool, and the API answers that one request 503 with Retry-After.
IDLE_PING_SECONDS = 1.0


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored moment as an aware UTC datetime: SQLite hands back naive ones (stored as
    UTC), PostgreSQL aware ones."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def upsert_insert(db: Session, entity: Any) -> Any:
    """An INSERT for ``entity`` that takes ``on_conflict_do_update``/``_do_nothing``: the
    PostgreSQL or the SQLite form, whichever the session is bound to."""
    if db.get_bind().dialect.name == "postgresql":
        return postgresql.insert(entity)
    return sqlite.insert(entity)


def make_engine(url: str, *, pool_size: int = 5, autocommit: bool = False) -> Engine:
    """Create the engine; pooled connections idle for a while are pinged before use.

    ``autocommit`` is for reads: psycopg2 otherwise sends BEGIN before the first statement
    and the pool a ROLLBACK after the last, three round trips for one SELECT. Never write
    through it: each statement would commit on its own.
    """
    isolation = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,
            **isolation,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # LIFO: the connection used last is used next, so under load the same few stay warm
    # (and are never pinged) while the rest idle. hide_parameters: an error's log line names
    # the statement, never its values (a password hash, a webhook secret, an image).
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        pool_use_lifo=True,
        hide_parameters=True,
        **isolation,
    )
    event.listen(engine, "checkin", _note_checkin)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """SQLAlchemy's pessimistic disconnect recipe, for idle connections only: raising
    DisconnectionError makes the pool replace the connection and try again."""
    if time.monotonic() - record.info.get("checked_in_at", 0.0) < IDLE_PING_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
    except Exception as error:
        raise exc.DisconnectionError() from error


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class Sessions:
    """One short session per call, closed when the call returns, so a long-lived holder (the
    API's routes, the queue's claim store, the webhook sender's delivery store) never keeps a
    pooled connection between calls. ``run`` hands ``fn`` a session of the main factory (the
    storage function commits); ``read`` one of ``read_sessions`` (autocommit: no BEGIN or
    ROLLBACK round trips), the main factory when there is none."""

    def __init__(
        self, sessions: sessionmaker[Session], read_sessions: sessionmaker[Session] | None = None
    ):
        self.sessions = sessions
        self.read_sessions = read_sessions or sessions

    def run(self, fn: Callable[[Session], T]) -> T:
        with self.sessions() as db:
            return fn(db)

    def read(self, fn: Callable[[Session], T]) -> T:
        with self.read_sessions() as db:
            return fn(db)
