"""Task events (docs/api.md §E11): every status change of a task is stored, in the same
transaction as the change, as an event of its owner; and the owner's counters of waiting tasks
and stored bytes (the quotas) are kept with it.

Event ids increase in the order a reader may see them, and a reader that has seen id N and
asks for what follows misses nothing and sees nothing twice, whichever ingress replica it asks:

- On PostgreSQL an event's id is its transaction's id times ``SLOTS`` plus its place in the
  transaction, and a reader sees only events below the horizon: the oldest transaction still
  running (``pg_snapshot_xmin``). Every transaction below it has ended, and every one that ends
  later is above it, so an event that commits late can never land behind one already read.
  Nothing locks the owner's row for it: the queue's claims and results, which change many
  users' tasks, do not wait on each other or on submissions. A long write transaction delays
  what readers see (never loses it).
- Counters on PostgreSQL: what a claim, a result, a cancel or a purge takes off a user's counters
  is written as a row of ``usage_delta`` (an insert, no lock); a submission folds the user's
  rows into the counters in the same statement that adds its own tasks under the user's row
  lock, and checks its quotas on the sum. A delta committed after that statement's snapshot is
  folded by the next one: the counters may be briefly high, never low. The dispatcher that
  keeps the books folds every user's rows every minute (``fold``).
- SQLite (the embedded default) has one writer at a time: events are numbered per user by
  ``user_account.event_seq`` under the row's lock, and counters are changed in place.

Transactions that lock several users' rows take them in ascending user id, after their task
rows, so they never wait on each other in a circle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Table, delete, insert, literal_column, select, text, update
from sqlalchemy.orm import Session

from storage.database import utcnow
from storage.models import TaskEvent, UsageDelta, User

# The statements every status change runs are written against the tables (Core): the ORM's
# bulk paths cost more CPU than the statements themselves (the queue's profile).
USERS, EVENTS = cast(Table, User.__table__), cast(Table, TaskEvent.__table__)
DELTAS = cast(Table, UsageDelta.__table__)
USER = USERS.c

# (user id, task id, status) of one change.
Change = tuple[int, int, str]
# Event ids a transaction may store on PostgreSQL: id = transaction id * SLOTS + place.
SLOTS = 1 << 16
_XID = "pg_current_xact_id()::text::bigint"
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"

_INSERT_EVENTS = text(
    f"""INSERT INTO task_event (user_id, seq, task_id, status, created_at)
    SELECT e.user_id, {_XID} * :slots + :first + e.n - 1, e.task_id, e.status, :now
    FROM unnest(CAST(:users AS integer[]), CAST(:tasks AS bigint[]),
                CAST(:statuses AS varchar[])) WITH ORDINALITY AS e(user_id, task_id, status, n)"""
)
_FOLD_ONE = text(
    """WITH gone AS (DELETE FROM usage_delta WHERE user_id = :user RETURNING tasks, bytes)
    UPDATE user_account
    SET active_tasks = active_tasks + :tasks + coalesce((SELECT sum(tasks) FROM gone), 0),
        stored_bytes = stored_bytes + :bytes + coalesce((SELECT sum(bytes) FROM gone), 0)
    WHERE id = :user
    RETURNING active_tasks, stored_bytes"""
)
_FOLD_ALL = text(
    """WITH gone AS (DELETE FROM usage_delta RETURNING user_id, tasks, bytes),
    sums AS (SELECT user_id, sum(tasks) AS tasks, sum(bytes) AS bytes FROM gone GROUP BY user_id)
    UPDATE user_account SET active_tasks = active_tasks + sums.tasks,
                            stored_bytes = stored_bytes + sums.bytes
    FROM sums WHERE user_account.id = sums.user_id"""
)


def _on_postgres(db: Session) -> bool:
    return db.get_bind().dialect.name == "postgresql"


def record(
    *,
    db: Session,
    changes: Iterable[Change],
    settles: bool = False,
    adds: Mapping[int, tuple[int, int]] | None = None,
) -> dict[int, tuple[int, int]]:
    """Store the changes as their owners' events (in the caller's transaction) and keep their
    counters: ``settles``, each change ends a waiting task (one fewer waiting); ``adds``, by
    user, (waiting tasks, stored bytes) added: a submission's, whose quotas are checked on what
    this returns. Each user of ``adds`` has their (waiting tasks, stored bytes) after the
    change in the answer."""
    by_user: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for user_id, task_id, status in changes:
        by_user[user_id].append((task_id, status))
    if not _on_postgres(db):
        return _record_in_place(db=db, by_user=by_user, settles=settles, adds=adds or {})
    counts: dict[int, tuple[int, int]] = {}
    for user_id in sorted(adds or {}):  # the submission's own user: the only row it locks
        waiting, stored = (adds or {})[user_id]
        row = db.execute(_FOLD_ONE, {"user": user_id, "tasks": waiting, "bytes": stored}).first()
        if row is not None:
            counts[user_id] = (int(row[0]), int(row[1]))
    if settles:
        add_usage(db=db, usage={u: (-len(e), 0) for u, e in by_user.items()})
    flat = [(u, t, s) for u, events in by_user.items() for t, s in events]
    if flat:
        first = _take_slots(db, len(flat))
        db.execute(
            _INSERT_EVENTS,
            {
                "slots": SLOTS,
                "first": first,
                "now": utcnow(),
                "users": [u for u, _, _ in flat],
                "tasks": [t for _, t, _ in flat],
                "statuses": [s for _, _, s in flat],
            },
        )
    return counts


def _take_slots(db: Session, count: int) -> int:
    """The first of ``count`` places in this transaction's event ids (a transaction may store
    events more than once)."""
    transaction = db.get_transaction()
    taken = db.info.get("event_slots")
    used = taken[1] if taken is not None and taken[0] is transaction else 0
    if used + count > SLOTS:
        raise ValueError(f"a transaction stores at most {SLOTS} events")
    db.info["event_slots"] = (transaction, used + count)
    return used


def _record_in_place(
    *,
    db: Session,
    by_user: Mapping[int, list[tuple[int, str]]],
    settles: bool,
    adds: Mapping[int, tuple[int, int]],
) -> dict[int, tuple[int, int]]:
    """SQLite: events numbered per user on the user's row, counters changed in place."""
    counts: dict[int, tuple[int, int]] = {}
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for user_id in sorted(set(by_user) | set(adds)):
        events = by_user.get(user_id, [])
        waiting, stored = adds.get(user_id, (0, 0))
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
        if user_id in adds:
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
    """Add (waiting tasks, stored bytes) to each user's counters, for a change that takes
    from them (a task settled, deleted or purged): on PostgreSQL as rows of ``usage_delta``
    (no lock; folded later), on SQLite in place, users in ascending id."""
    usage = {u: v for u, v in usage.items() if v != (0, 0)}
    if not usage:
        return
    if _on_postgres(db):
        db.execute(
            insert(DELTAS),
            [{"user_id": u, "tasks": t, "bytes": b} for u, (t, b) in sorted(usage.items())],
        )
        return
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


def fold(*, db: Session) -> None:
    """Fold every user's ``usage_delta`` rows into their counters (PostgreSQL; committed)."""
    if _on_postgres(db):
        db.execute(_FOLD_ALL)
        db.commit()


def usage(*, db: Session, user_id: int) -> tuple[int, int]:
    """The user's (waiting tasks, stored bytes): their counters with what is not folded."""
    row = db.execute(select(USER.active_tasks, USER.stored_bytes).where(USER.id == user_id)).one()
    tasks, size = int(row[0]), int(row[1])
    if _on_postgres(db):
        more = db.execute(
            text(
                "SELECT coalesce(sum(tasks), 0), coalesce(sum(bytes), 0) FROM usage_delta "
                "WHERE user_id = :user"
            ),
            {"user": user_id},
        ).one()
        tasks, size = tasks + int(more[0]), size + int(more[1])
    return tasks, size


def latest(*, db: Session, user_id: int) -> int:
    """An id every event stored so far is at or below (on PostgreSQL: below the horizon; a
    new stream starts after it)."""
    if _on_postgres(db):
        return int(db.scalar(text(f"SELECT {_HORIZON} * :slots - 1"), {"slots": SLOTS}))
    return int(db.scalar(select(User.event_seq).where(User.id == user_id)) or 0)


def after(*, db: Session, user_id: int, seq: int, limit: int = 500) -> list[tuple[int, int, str]]:
    """(event id, task id, status) of the user's events after ``seq``, oldest first (on
    PostgreSQL, those below the horizon: none that commits later can come before them)."""
    query = select(TaskEvent.seq, TaskEvent.task_id, TaskEvent.status).where(
        TaskEvent.user_id == user_id, TaskEvent.seq > seq
    )
    if _on_postgres(db):
        query = query.where(TaskEvent.seq < literal_column(f"{_HORIZON} * {SLOTS}"))
    rows = db.execute(query.order_by(TaskEvent.seq).limit(limit))
    return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]


def purge_before(*, db: Session, moment: datetime) -> int:
    """Delete the events stored before ``moment``; how many went."""
    result = cast(CursorResult, db.execute(delete(TaskEvent).where(TaskEvent.created_at < moment)))
    db.commit()
    return int(result.rowcount or 0)
