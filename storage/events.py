"""Task events (docs/api.md §E11): every status change of a task is stored, in the same
transaction as the change, as the next event of its owner. The statement that numbers them
also keeps the owner's counters of waiting tasks and stored bytes (the quotas).

Each user's events are numbered 1, 2, 3 ... by ``user_account.event_seq``, raised under the
user row's lock by the transaction that stores them: a later number never commits before an
earlier one, so a reader that has seen event N and asks for what follows misses nothing and
sees nothing twice, whichever ingress replica it asks. Transactions that change several
users' tasks take those locks in ascending user id, after their task rows, so they never wait
on each other in a circle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Table, delete, insert, select, update
from sqlalchemy.orm import Session

from storage.database import utcnow
from storage.models import TaskEvent, User

# The statements every status change runs are written against the tables (Core): the ORM's
# bulk paths cost more CPU than the statements themselves (the queue's profile).
USERS, EVENTS = cast(Table, User.__table__), cast(Table, TaskEvent.__table__)
USER = USERS.c

# (user id, task id, status) of one change.
Change = tuple[int, int, str]


def record(
    *,
    db: Session,
    changes: Iterable[Change],
    settles: bool = False,
    adds: Mapping[int, tuple[int, int]] | None = None,
) -> dict[int, tuple[int, int]]:
    """Store the changes as their owners' next events (in the caller's transaction). The same
    statement that numbers a user's events keeps the user's counters: ``settles``, each
    change ends a waiting task (one fewer waiting); ``adds``, by user, (waiting tasks, stored
    bytes) added. Each user's (waiting tasks, stored bytes) after the change."""
    by_user: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for user_id, task_id, status in changes:
        by_user[user_id].append((task_id, status))
    counts: dict[int, tuple[int, int]] = {}
    if not by_user:
        return counts
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for user_id in sorted(by_user):
        events = by_user[user_id]
        waiting, stored = (adds or {}).get(user_id, (0, 0))
        if settles:
            waiting -= len(events)
        row = db.execute(
            update(USERS)
            .where(USER.id == user_id)
            .values(
                event_seq=USER.event_seq + len(events),
                active_tasks=USER.active_tasks + waiting,
                stored_bytes=USER.stored_bytes + stored,
            )
            .returning(USER.event_seq, USER.active_tasks, USER.stored_bytes)
        ).first()
        if row is None:  # the user is gone: so are their tasks
            continue
        last = row[0]
        counts[user_id] = (int(row[1]), int(row[2]))
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
        db.execute(insert(EVENTS), rows)
    return counts


def add_usage(*, db: Session, usage: Mapping[int, tuple[int, int]]) -> None:
    """Add (waiting tasks, stored bytes) to each user's counters, users in ascending id (as
    ``record`` takes their rows), for a change that stores no event (a task deleted)."""
    for user_id in sorted(usage):
        waiting, stored = usage[user_id]
        db.execute(
            update(USERS)
            .where(USER.id == user_id)
            .values(
                active_tasks=USER.active_tasks + waiting,
                stored_bytes=USER.stored_bytes + stored,
            )
        )


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
