"""Shared rate counters: fixed windows in one table, one upsert per event."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import CursorResult, delete, select, text
from sqlalchemy.orm import Session

from storage.database import upsert_insert
from storage.models import RateCounter


def add(*, db: Session, key: str, window_start: datetime) -> int:
    """Count one event for ``key`` in the window; the window's count with it (the caller
    commits)."""
    if db.get_bind().dialect.name == "postgresql":
        # A lost count after a crash costs nothing: no waiting for the WAL flush.
        db.execute(text("SET LOCAL synchronous_commit TO OFF"))
    statement = upsert_insert(db, RateCounter).values(key=key, window_start=window_start, count=1)
    count = db.scalar(statement.on_conflict_do_update(
        index_elements=[RateCounter.key, RateCounter.window_start],
        set_={"count": RateCounter.count + 1}).returning(RateCounter.count))
    return int(count or 0)


def count(*, db: Session, key: str, window_start: datetime) -> int:
    """Events counted for ``key`` in the window."""
    return db.scalar(select(RateCounter.count).where(
        RateCounter.key == key, RateCounter.window_start == window_start)) or 0


def clear(*, db: Session, key: str) -> None:
    """Forget ``key``'s counts (a successful login clears its failures)."""
    db.execute(delete(RateCounter).where(RateCounter.key == key))
    db.commit()


def purge_before(*, db: Session, moment: datetime) -> int:
    """Drop the windows that started before ``moment``; how many rows went."""
    result = cast(CursorResult, db.execute(delete(RateCounter).where(
        RateCounter.window_start < moment)))
    db.commit()
    return int(result.rowcount or 0)
