"""Task events (docs/api.md §E11): every status change of a task is stored, in the same
transaction as the change, as the next event of its owner.

Each user's events are numbered 1, 2, 3 ... by ``user_account.event_seq``, raised under the
user row's lock by the transaction that stores them: a later number never commits before an
earlier one, so a reader that has seen event N and asks for what follows misses nothing and
sees nothing twice, whichever ingress replica it asks. Transactions that change several
users' tasks take those locks in ascending user id, after their task rows, so they never wait
on each other in a circle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, insert, select, update
from sqlalchemy.orm import Session

from storage.database import utcnow
from storage.models import TaskEvent, User

# (user id, task id, status) of one change.
Change = tuple[int, int, str]


def record(*, db: Session, changes: Iterable[Change]) -> None:
    """Store the changes as their owners' next events (in the caller's transaction)."""
    by_user: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for user_id, task_id, status in changes:
        by_user[user_id].append((task_id, status))
    if not by_user:
        return
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for user_id in sorted(by_user):
        events = by_user[user_id]
        last = db.scalar(
            update(User)
            .where(User.id == user_id)
            .values(event_seq=User.event_seq + len(events))
            .returning(User.event_seq)
        )
        if last is None:  # the user is gone: so are their tasks
            continue
        first = last - len(events) + 1
        rows.extend(
            {
                "user_id": user_id,
                "seq": first + i,
                "task_id": task_id,
                "status": status,
                "created_at": now,
            }
            for i, (task_id, status) in enumerate(events)
        )
    if rows:
        db.execute(insert(TaskEvent), rows)


def latest(*, db: Session, user_id: int) -> int:
    """The id of the user's latest event (0 before the first)."""
    return int(db.scalar(select(User.event_seq).where(User.id == user_id)) or 0)


def after(*, db: Session, user_id: int, seq: int, limit: int = 500) -> list[tuple[int, int, str]]:
    """(event id, task id, status) of the user's events after ``seq``, oldest first."""
    rows = db.execute(
        select(TaskEvent.seq, TaskEvent.task_id, TaskEvent.status)
        .where(TaskEvent.user_id == user_id, TaskEvent.seq > seq)
        .order_by(TaskEvent.seq)
        .limit(limit)
    )
    return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]


def purge_before(*, db: Session, moment: datetime) -> int:
    """Delete the events stored before ``moment``; how many went."""
    result = cast(CursorResult, db.execute(delete(TaskEvent).where(TaskEvent.created_at < moment)))
    db.commit()
    return int(result.rowcount or 0)
