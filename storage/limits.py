"""Shared rate counters: fixed windows in one table, one upsert per event."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import CursorResult, delete, select, text
from sqlalchemy.orm import Session

from storage.database import upsert_insert
from storage.models import RateCounter


def add(*, db: Session, key: str, window_start: datetime, count: int = 1) -> int:
    """Count ``count`` events for ``key`` in the window; the window's count with them (the
    caller commits)."""
    if db.get_bind().dialect.name == "postgresql":
        # A lost count after a crash costs nothing: no waiting for the WAL flush.
        db.execute(text("SET LOCAL synchronous_commit TO OFF"))
    statement = upsert_insert(db, RateCounter).values(
        key=key, window_start=window_start, count=count
    )
    total = db.scalar(
        statement.on_conflict_do_update(
            index_elements=[RateCounter.key, RateCounter.window_start],
            set_={"count": RateCounter.count + count},
        ).returning(RateCounter.count)
    )
    return int(total or 0)


def counts(
    *, db: Session, keys: Collection[str], window_starts: Collection[datetime]
) -> dict[tuple[str, datetime], int]:
    """The counts of these keys in these windows, by (key, window start), in one query."""
    rows = db.execute(
        select(RateCounter.key, RateCounter.window_start, RateCounter.count).where(
            RateCounter.key.in_(list(keys)), RateCounter.window_start.in_(list(window_starts))
        )
    )
    return {(key, _utc(start)): int(count) for key, start, count in rows}


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def count(*, db: Session, key: str, window_start: datetime) -> int:
    """Events counted for ``key`` in the window."""
    return (
        db.scalar(
            select(RateCounter.count).where(
                RateCounter.key == key, RateCounter.window_start == window_start
            )
        )
        or 0
    )


def clear(*, db: Session, key: str) -> None:
    """Forget ``key``'s counts (a successful login clears its failures)."""
    db.execute(delete(RateCounter).where(RateCounter.key == key))
    db.commit()


def purge_before(*, db: Session, moment: datetime) -> int:
    """Drop the windows that started before ``moment``; how many rows went."""
    result = cast(
        CursorResult, db.execute(delete(RateCounter).where(RateCounter.window_start < moment))
    )
    db.commit()
    return int(result.rowcount or 0)
