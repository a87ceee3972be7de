"""The API's side of the task table: create (idempotently and within the user's quotas),
list, read, cancel, retry and delete. The queue's side (claims, leases, completions and
failures under the claim) is storage/claims.py; both end a task through
storage/results.py's ``settle``, so an end queues its webhook delivery and stores its event in
the same transaction.

The queue's order (docs/api.md §E10) is kept in the database, so every queue replica and a
restarted one see the same: highest ``priority`` first, then lowest ``turn``, then oldest. A
task's turn is fixed when it is stored: the user's next turn at that priority, but never
before the queue's clock (``queue_turn``: the turn of the latest task started there). A user
who submits 500 tasks at once takes 500 consecutive turns from the clock; a user who submits
one afterwards takes the clock's turn, so only tasks with a turn at or below it (at most one
per other user, plus any given back after a failure) start before theirs. A user whose tasks
were just started is at or above the clock already, so one who has had none goes first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from storage import events
from storage.database import upsert_insert, utcnow
from storage.models import (
    DEFAULT_PRIORITY,
    INPUTS,
    TASK,
    TASKS,
    TURNS,
    UNSETTLED_STATUSES,
    IdempotencyKey,
    Task,
    TaskInput,
    TaskResult,
    TaskStatus,
)
from storage.results import ResultBody, Settled, settle

# The largest id a task can have (a 64-bit column): the API answers 404 above it before any
# of these functions is called (serve_app/tasks/router.py's TaskId).
MAX_TASK_ID = 2**63 - 1


# A submission counts the platform's queued tasks only when its estimate of them is unknown
# or within this share of the limit (docs/api.md §E10: the cap may be passed by what other
# replicas accepted since their count, at most the estimate's age of submissions). The same
# line starts the queue's reserve: past it, a user already holding ``queue_share`` of the cap
# adds nothing, so a few accounts cannot fill the queue for everyone.
COUNT_QUEUE_ABOVE = 0.9
RETRYABLE = (TaskStatus.failed.value, TaskStatus.canceled.value)


@dataclass(frozen=True)
class NewTasks:
    """What a submission asks for: the images (bytes, media type) and how to run them."""

    detection_model_id: int
    classification_model_id: int
    images: list[tuple[bytes, str]]
    webhook_url: str | None = None
    priority: int = DEFAULT_PRIORITY
    deadline_s: int | None = None
    # The trace the tasks continue (docs/api.md §E15); not part of the request's identity.
    traceparent: str | None = None

    def digest(self) -> str:
        """What makes two submissions the same request (for idempotency keys)."""
        h = hashlib.sha256()
        h.update(
            f"{self.detection_model_id}:{self.classification_model_id}:"
            f"{self.webhook_url or ''}:{len(self.images)}".encode()
        )
        if self.priority != DEFAULT_PRIORITY or self.deadline_s is not None:
            # Only then: keys taken before the queue policy existed still match.
            h.update(f"|policy:{self.priority}:{self.deadline_s}".encode())
        for data, media_type in self.images:
            h.update(f"|{media_type}:{len(data)}:".encode())
            h.update(data)
        return h.hexdigest()


def _first_turn(*, db: Session, user_id: int, priority: int) -> int:
    """The turn the user's next task at ``priority`` takes: after the user's latest, never
    before the queue's clock."""
    clock, last = db.execute(
        select(
            select(TURNS.c.turn).where(TURNS.c.priority == priority).scalar_subquery(),
            select(func.max(TASK.turn))
            .where(TASK.user_id == user_id, TASK.priority == priority)
            .scalar_subquery(),
        )
    ).one()
    return max(clock or 0, last + 1 if last is not None else 0)


def _insert_tasks(*, db: Session, user_id: int, new: NewTasks, turn: int) -> list[int]:
    """Insert the tasks, at turns from ``turn`` on, and their inputs (no event, no counter)."""
    now = utcnow()
    deadline_at = now + timedelta(seconds=new.deadline_s) if new.deadline_s else None
    ids = list(
        db.scalars(
            insert(TASKS).returning(TASKS.c.id, sort_by_parameter_order=True),
            [
                {
                    "user_id": user_id,
                    "detection_model_id": new.detection_model_id,
                    "classification_model_id": new.classification_model_id,
                    "status": TaskStatus.queued.value,
                    "input_media_type": media_type,
                    "input_bytes": len(data),
                    "webhook_url": new.webhook_url,
                    "created_at": now,
                    "attempts": 0,
                    "priority": new.priority,
                    "turn": turn + i,
                    "deadline_s": new.deadline_s,
                    "deadline_at": deadline_at,
                    "traceparent": new.traceparent,
                }
                for i, (data, media_type) in enumerate(new.images)
            ],
        )
    )
    db.execute(
        insert(INPUTS),
        [
            {"task_id": task_id, "data": data}
            for task_id, (data, _) in zip(ids, new.images, strict=True)
        ],
    )
    return ids


def _store_tasks(*, db: Session, user_id: int, new: NewTasks) -> tuple[list[int], tuple[int, int]]:
    """Insert the tasks at the user's next turns, then record their events and add them to
    the user's counters (the statement that takes the user's row lock, as late as it can
    be: every change of the user's tasks waits for it) and keep the user's turns distinct;
    (ids, the user's waiting tasks and stored bytes with these)."""
    first = _first_turn(db=db, user_id=user_id, priority=new.priority)
    ids = _insert_tasks(db=db, user_id=user_id, new=new, turn=first)
    adding = sum(len(data) for data, _ in new.images)
    counts = events.record(
        db=db,
        changes=[(user_id, i, TaskStatus.queued.value) for i in ids],
        adds={user_id: (len(ids), adding)},
    )
    _keep_turns(db=db, user_id=user_id, priority=new.priority, ids=ids, first=first)
    return ids, counts.get(user_id, (0, 0))


def _keep_turns(*, db: Session, user_id: int, priority: int, ids: list[int], first: int) -> None:
    """With the user's row locked: when another submission of the user took turns from
    ``first`` on since they were read (it committed before this one took the lock), move
    these tasks after it, so that a user's turns never repeat (docs/api.md §E10)."""
    last = db.scalar(
        select(func.max(TASK.turn)).where(
            TASK.user_id == user_id, TASK.priority == priority, TASK.id.notin_(ids)
        )
    )
    if last is not None and last >= first:
        db.execute(
            update(TASKS).where(TASK.id.in_(ids)).values(turn=TASK.turn + (last + 1 - first))
        )


def create_tasks(*, db: Session, user_id: int, new: NewTasks) -> list[int]:
    """Store one queued task per image, all in one transaction; their ids in order,
    committed when this returns."""
    ids, _ = _store_tasks(db=db, user_id=user_id, new=new)
    db.commit()
    return ids


class OverQuota(Exception):
    """The user would have more tasks waiting than allowed."""


@dataclass  # not frozen: raising sets an exception's __traceback__
class QueueFull(Exception):
    """The platform holds as many queued tasks as configured (docs/api.md §E10)."""

    limit: int
    queued: int = 0
    # Refused for holding a share of a nearly full queue (the user's tasks waiting or
    # running, and what one user may hold there), not for the queue being full.
    holding: int | None = None
    share: int | None = None


@dataclass  # not frozen: raising sets an exception's __traceback__
class OverStorage(Exception):
    """The user's stored images would pass their storage quota."""

    stored: int
    adding: int
    limit: int


class KeyReused(Exception):
    """The idempotency key was first used with a different request."""


@dataclass(frozen=True)
class Created:
    """The ids of the tasks a submission made (``replayed``: made by an earlier request with
    the same idempotency key)."""

    ids: list[int]
    replayed: bool = False
    # The platform's queued tasks as counted for this submission (None: not counted).
    queued: int | None = None


def create_tasks_within_quota(
    *,
    db: Session,
    user_id: int,
    new: NewTasks,
    max_active: int,
    idempotency_key: str | None = None,
    key_hours: float = 24.0,
    max_stored_bytes: int = 0,
    max_queued: int = 0,
    queued_estimate: int | None = None,
    queue_share: float = 1.0,
) -> Created:
    """Store the tasks unless the user would then have more than ``max_active`` waiting
    (OverQuota), their stored images more than ``max_stored_bytes`` (OverStorage; 0: no
    limit) or the platform more than ``max_queued`` queued tasks (QueueFull; 0: no limit).
    With an idempotency key, a request seen before within ``key_hours`` gets the
    first one's ids and stores nothing (KeyReused when its body or parameters differ); the
    key's row is taken first in the same transaction, so racing retries wait for the first
    and then find its answer. ``queued_estimate``: a recent count of the platform's queued
    tasks; they are counted again only when it is unknown or near the limit. Past
    ``COUNT_QUEUE_ABOVE`` of ``max_queued``, a user who would then hold more than
    ``queue_share`` of it (tasks waiting or running) is refused too (QueueFull with
    ``share``)."""
    if idempotency_key is not None:
        replay = _take_key(
            db=db, user_id=user_id, key=idempotency_key, digest=new.digest(), key_hours=key_hours
        )
        if replay is not None:
            db.rollback()
            return Created(ids=replay, replayed=True)
    counted: int | None = None
    if max_queued and (
        queued_estimate is None
        or queued_estimate + len(new.images) > COUNT_QUEUE_ABOVE * max_queued
    ):
        counted = queued_count(db=db)
        if counted + len(new.images) > max_queued:
            db.rollback()
            raise QueueFull(limit=max_queued, queued=counted)
    # The quotas are checked on the user's counters as this submission's own statement
    # raises them, under the row's lock: parallel submissions of one user are counted one
    # after another, and no statement counts the user's tasks.
    ids, (active, stored) = _store_tasks(db=db, user_id=user_id, new=new)
    if active > max_active:
        db.rollback()  # the key too: a retry after the quota frees may succeed
        raise OverQuota
    share = max(1, int(queue_share * max_queued))
    if (
        queue_share < 1
        and counted is not None
        and counted + len(new.images) > COUNT_QUEUE_ABOVE * max_queued
        and active > share
    ):
        db.rollback()
        raise QueueFull(limit=max_queued, queued=counted, holding=active, share=share)
    adding = sum(len(data) for data, _ in new.images)
    if max_stored_bytes and stored > max_stored_bytes:
        db.rollback()
        raise OverStorage(stored=stored - adding, adding=adding, limit=max_stored_bytes)
    if idempotency_key is not None:
        db.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == idempotency_key)
            .values(response={"ids": ids})
        )
    db.commit()
    return Created(ids=ids, queued=counted)


def _take_key(
    *, db: Session, user_id: int, key: str, digest: str, key_hours: float
) -> list[int] | None:
    """Claim the key for this request (None), or the ids an earlier request got with it."""
    now = utcnow()
    db.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id,
            IdempotencyKey.key == key,
            IdempotencyKey.created_at < now - timedelta(hours=key_hours),
        )
    )
    values: dict[str, Any] = {
        "user_id": user_id,
        "key": key,
        "request_digest": digest,
        "response": {},
        "created_at": now,
    }
    # On PostgreSQL this waits for a concurrent transaction holding the same key to end.
    taken = db.execute(
        upsert_insert(db, IdempotencyKey)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(IdempotencyKey.key)
    ).first()
    if taken is not None:
        return None
    first = db.execute(
        select(IdempotencyKey.request_digest, IdempotencyKey.response).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.key == key
        )
    ).one()
    if first.request_digest != digest:
        raise KeyReused
    return list(first.response["ids"])


def queued_count(*, db: Session) -> int:
    """How many tasks wait to be started, all users together."""
    return int(db.scalar(select(func.count()).where(TASK.status == TaskStatus.queued.value)) or 0)


def task_summaries(
    *, db: Session, user_id: int, status: TaskStatus | None, after_id: int, limit: int
) -> list[tuple[int, str, Any, str]]:
    """(id, status, created_at, input media type) of up to ``limit`` of the user's tasks
    after ``after_id``, by id: the columns a listing shows, no objects."""
    query = (
        select(Task.id, Task.status, Task.created_at, Task.input_media_type)
        .where(Task.user_id == user_id, Task.id > after_id)
        .order_by(Task.id)
        .limit(limit)
    )
    if status is not None:
        query = query.where(Task.status == status.value)
    return [tuple(row) for row in db.execute(query)]  # type: ignore[misc]


def get_task(*, db: Session, user_id: int, task_id: int) -> Task | None:
    """The user's task with this id; None when missing or someone else's."""
    return db.scalar(select(Task).where(Task.id == task_id, Task.user_id == user_id))


def get_task_and_result(
    *, db: Session, user_id: int, task_id: int
) -> tuple[Task, TaskResult | None] | None:
    """The user's task and its result (None until done), in one query."""
    row = db.execute(
        select(Task, TaskResult)
        .outerjoin(TaskResult, TaskResult.task_id == Task.id)
        .where(Task.id == task_id, Task.user_id == user_id)
    ).first()
    return (row[0], row[1]) if row is not None else None


def get_input(*, db: Session, user_id: int, task_id: int) -> tuple[str, bytes] | None:
    """The media type and bytes of the user's task input."""
    row = db.execute(
        select(Task.input_media_type, TaskInput.data)
        .join(TaskInput, TaskInput.task_id == Task.id)
        .where(Task.id == task_id, Task.user_id == user_id)
    ).first()
    return (row[0], row[1]) if row else None


class TaskEnded(Exception):
    """The task is already done, failed or canceled."""

    def __init__(self, status: TaskStatus):
        super().__init__(status.value)
        self.status = status


class NotRetryable(Exception):
    """The task is queued, in progress or done: only a failed or canceled one is retried."""

    def __init__(self, status: TaskStatus):
        super().__init__(status.value)
        self.status = status


def retry_of(*, db: Session, user_id: int, task_id: int) -> NewTasks | None:
    """What a retry of the user's task submits again (docs/api.md §E14): its input, models
    and options; None when the user has no such task, NotRetryable unless it failed or was
    canceled."""
    row = db.execute(
        select(
            TASK.status,
            TASK.detection_model_id,
            TASK.classification_model_id,
            TASK.webhook_url,
            TASK.priority,
            TASK.deadline_s,
            TASK.input_media_type,
            INPUTS.c.data,
        )
        .join(INPUTS, INPUTS.c.task_id == TASK.id)
        .where(TASK.id == task_id, TASK.user_id == user_id)
    ).first()
    if row is None:
        return None
    if row.status not in RETRYABLE:
        raise NotRetryable(TaskStatus(row.status))
    return NewTasks(
        detection_model_id=row.detection_model_id,
        classification_model_id=row.classification_model_id,
        images=[(bytes(row.data), row.input_media_type)],
        webhook_url=row.webhook_url,
        priority=row.priority,
        deadline_s=row.deadline_s,
    )


def cancel_task(*, db: Session, user_id: int, task_id: int) -> bool:
    """Cancel the user's task if it is queued or in progress (its webhook, if any, is queued
    in the same transaction); False when there is no such task, TaskEnded when it already
    ended. A run under way loses its claim, so it can store nothing."""
    row = db.execute(
        update(Task)
        .where(Task.id == task_id, Task.user_id == user_id, Task.status.in_(UNSETTLED_STATUSES))
        .values(
            status=TaskStatus.canceled.value,
            claim_token=None,
            lease_expires_at=None,
            finished_at=utcnow(),
        )
        .returning(Task.webhook_url, Task.priority, Task.deadline_s)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        db.rollback()
        current = db.scalar(select(Task.status).where(Task.id == task_id, Task.user_id == user_id))
        if current is None:
            return False
        raise TaskEnded(TaskStatus(current))
    body = ResultBody(
        task_id, TaskStatus.canceled, priority=row.priority, deadline_s=row.deadline_s
    )
    settle(db=db, settled=[Settled(user_id, row.webhook_url, body)])
    db.commit()
    return True


def delete_task(*, db: Session, user_id: int, task_id: int) -> bool:
    """Delete the user's task with its input and result; False when there is none."""
    deleted = db.execute(
        delete(Task)
        .where(Task.id == task_id, Task.user_id == user_id)
        .returning(Task.status, Task.input_bytes)
    ).first()
    if deleted is not None:
        waiting = -1 if deleted.status in UNSETTLED_STATUSES else 0
        events.add_usage(db=db, usage={user_id: (waiting, -(deleted.input_bytes or 0))})
    db.commit()
    return deleted is not None
