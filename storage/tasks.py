"""Every change of a task's state, in one place: the API's side (create, idempotently and
within the user's quotas; list, read, cancel, delete) and the queue's side (atomic claims,
leases, completions and failures under the claim). A task that ends queues its webhook
delivery in the same transaction.

A claim moves a task to ``in progress`` with a fresh token and a lease. Every later write
names the token, so a dispatcher that lost its claim (lease expired, task deleted or canceled,
task claimed again) can change nothing. PostgreSQL claims with ``FOR UPDATE SKIP LOCKED``;
SQLite serialises writers, which gives the same guarantee.

Every status change stores its event (storage/events.py) in the same transaction.

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
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from storage import events, webhooks
from storage.database import upsert_insert, utcnow
from storage.models import (
    DEFAULT_PRIORITY,
    SETTLED_STATUSES,
    UNSETTLED_STATUSES,
    IdempotencyKey,
    QueueTurn,
    Task,
    TaskInput,
    TaskResult,
    TaskStatus,
)
from storage.results import result_body, result_payload

# -- the API's side ------------------------------------------------------------------------

# The largest id a task can have (a 64-bit column): the API answers 404 above it before any
# of these functions is called (serve_app/tasks/router.py's TaskId).
MAX_TASK_ID = 2**63 - 1


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


# The hot statements (every submit, claim and result) are written against the tables (Core):
# SQLAlchemy's ORM bulk and unit-of-work paths cost more CPU than the statements themselves.
TASKS, INPUTS = cast(Table, Task.__table__), cast(Table, TaskInput.__table__)
TURNS = cast(Table, QueueTurn.__table__)
RESULTS = cast(Table, TaskResult.__table__)
TASK = TASKS.c


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


# A submission counts the platform's queued tasks only when its estimate of them is unknown
# or within this share of the limit (docs/api.md §E10: the cap may be passed by what other
# replicas accepted since their count, at most the estimate's age of submissions). The same
# line starts the queue's reserve: past it, a user already holding ``queue_share`` of the cap
# adds nothing, so a few accounts cannot fill the queue for everyone.
COUNT_QUEUE_ABOVE = 0.9


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


RETRYABLE = (TaskStatus.failed.value, TaskStatus.canceled.value)


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


@dataclass(frozen=True)
class Settled:
    """A task that has just ended (its status row updated in this transaction): what every
    path that ends one (cancel, deadline, completion, failure) records about it."""

    task_id: int
    user_id: int
    webhook_url: str | None
    status: TaskStatus
    body: dict[str, Any]  # the result route's body, as its webhook carries it


def _settle(*, db: Session, settled: list[Settled]) -> None:
    """The one way a task's end is recorded, in the transaction that ended it: its event
    (which also frees its place in the user's counters) and, when it has a webhook URL, the
    webhook delivery with the result route's body."""
    if not settled:
        return
    events.record(
        db=db,
        changes=[(s.user_id, s.task_id, s.status.value) for s in settled],
        settles=True,
    )
    for s in settled:
        if s.webhook_url:
            webhooks.enqueue(
                db=db, task_id=s.task_id, user_id=s.user_id, url=s.webhook_url, body=s.body
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
    body = result_body(
        task_id=task_id,
        status=TaskStatus.canceled,
        priority=row.priority,
        deadline_s=row.deadline_s,
    )
    _settle(db=db, settled=[Settled(task_id, user_id, row.webhook_url, TaskStatus.canceled, body)])
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


# -- the queue's side ----------------------------------------------------------------------

MAX_ERROR = 4000  # characters of a failure's message kept


@dataclass(frozen=True)
class Claim:
    task_id: int
    token: str
    attempts: int
    detection_model_id: int
    classification_model_id: int
    created_at: datetime | None = None  # when the task was accepted
    user_id: int | None = None
    priority: int = DEFAULT_PRIORITY
    deadline_s: int | None = None
    traceparent: str | None = None  # the trace its spans continue (docs/api.md §E15)

    def body(self, status: TaskStatus, **fields: Any) -> dict[str, Any]:
        """The result route's body of this task in ``status``."""
        return result_body(
            task_id=self.task_id,
            status=status,
            priority=self.priority,
            deadline_s=self.deadline_s,
            **fields,
        )

    def log_extra(self) -> dict[str, int | None]:
        """What every log line about this task carries (not ``task_id``: Ray's JSON log
        lines use that key for the Ray task)."""
        return {"task": self.task_id, "user": self.user_id}


@dataclass(frozen=True)
class ClaimedTask:
    """A claim with the task's image (None when the task was deleted meanwhile)."""

    claim: Claim
    image: bytes | None


def claim_tasks_with_inputs(
    *, db: Session, limit: int, lease_seconds: float, running: Collection[int] = ()
) -> list[ClaimedTask]:
    """Claim up to ``limit`` runnable tasks (queued, or in progress with a lapsed lease and
    not among ``running``, the claimer's own runs), their images read in the same
    transaction (one query for the whole batch, not one per task; None for a task deleted
    meanwhile)."""
    claims, started = _claim(db=db, limit=limit, lease_seconds=lease_seconds, running=running)
    images: dict[int, bytes] = {}
    if claims:
        rows = db.execute(
            select(INPUTS.c.task_id, INPUTS.c.data).where(
                INPUTS.c.task_id.in_([c.task_id for c in claims])
            )
        )
        images = {task_id: data for task_id, data in rows}
    # Last before the commit: the owners' rows stay locked for as short a time as can be.
    events.record(db=db, changes=started)
    db.commit()
    return [ClaimedTask(c, images.get(c.task_id)) for c in claims]


def _held(claim: Claim) -> tuple[Any, ...]:
    """The conditions under which a claim still holds its task: every write of the queue's
    names them, so a dispatcher that lost its claim changes nothing."""
    return (
        TASK.id == claim.task_id,
        TASK.claim_token == claim.token,
        TASK.status == TaskStatus.in_progress.value,
    )


def _end(*, db: Session, claim: Claim, status: TaskStatus, error: str | None) -> Any:
    """Set the claimed task's end status; its (user_id, webhook_url), or None when the claim
    was lost (nothing changed)."""
    return db.execute(
        update(TASKS)
        .where(*_held(claim))
        .values(status=status.value, finished_at=utcnow(), lease_expires_at=None, error=error)
        .returning(TASK.user_id, TASK.webhook_url)
    ).first()


_CLAIMED = (
    TASK.id,
    TASK.attempts,
    TASK.detection_model_id,
    TASK.classification_model_id,
    TASK.created_at,
    TASK.user_id,
    TASK.priority,
    TASK.deadline_s,
    TASK.turn,
    TASK.traceparent,
)


def _claim(
    *, db: Session, limit: int, lease_seconds: float, running: Collection[int] = ()
) -> tuple[list[Claim], list[events.Change]]:
    """Claim tasks whose lease lapsed (their run died), then queued ones in the queue's
    order, never one past its deadline; the clock moves to the turns started. A lapsed task
    among ``running`` is the claimer's own run, alive but late to renew (a busy process):
    claiming it again would run it twice and count an attempt that never crashed. The claims,
    and the events of the tasks started (for the caller to record)."""
    now = utcnow()
    token = str(uuid.uuid4())
    claim_values = {
        "status": TaskStatus.in_progress.value,
        "claim_token": token,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "attempts": TASK.attempts + 1,
        "started_at": now,
    }

    def take(ids: Any) -> list[Any]:
        """Claim the tasks ``ids`` (a locking select) selects; their claimed columns."""
        return list(
            db.execute(
                update(TASKS)
                .where(TASK.id.in_(ids.scalar_subquery()))
                .values(**claim_values)
                .returning(*_CLAIMED)
            ).all()
        )

    rows = take(
        select(TASK.id)
        .where(
            TASK.status == TaskStatus.in_progress.value,
            TASK.lease_expires_at < now,
            TASK.id.notin_(list(running)),
        )
        .order_by(TASK.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    changes: list[events.Change] = []
    if len(rows) < limit:
        started = take(
            select(TASK.id)
            .where(
                TASK.status == TaskStatus.queued.value,
                or_(TASK.deadline_at.is_(None), TASK.deadline_at > now),
            )
            .order_by(TASK.priority.desc(), TASK.turn, TASK.id)
            .limit(limit - len(rows))
            .with_for_update(skip_locked=True)
        )
        clock: dict[int, int] = {}
        for r in started:
            clock[r.priority] = max(clock.get(r.priority, 0), r.turn)
        for priority, turn in sorted(clock.items()):
            db.execute(
                update(TURNS)
                .where(TURNS.c.priority == priority, TURNS.c.turn < turn)
                .values(turn=turn)
            )
        changes = [(r.user_id, r.id, TaskStatus.in_progress.value) for r in started]
        rows += started
    claims = sorted(
        (
            Claim(
                task_id=r.id,
                token=token,
                attempts=r.attempts,
                detection_model_id=r.detection_model_id,
                classification_model_id=r.classification_model_id,
                created_at=r.created_at,
                user_id=r.user_id,
                priority=r.priority,
                deadline_s=r.deadline_s,
                traceparent=r.traceparent,
            )
            for r in rows
        ),
        key=lambda c: c.task_id,
    )
    return claims, changes


@dataclass(frozen=True)
class Expired:
    """A queued task ended failed at its deadline, with its result route's body."""

    task_id: int
    user_id: int
    deadline_s: int | None
    body: dict[str, Any]


def expire_overdue(*, db: Session, limit: int = 500) -> list[Expired]:
    """End as failed the queued tasks whose deadline passed (docs/api.md §E10), with their
    webhooks and events; the tasks ended."""
    now = utcnow()
    overdue = db.execute(
        select(TASK.id, TASK.user_id, TASK.webhook_url, TASK.priority, TASK.deadline_s)
        .where(TASK.status == TaskStatus.queued.value, TASK.deadline_at <= now)
        .order_by(TASK.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    ended: list[Expired] = []
    settled: list[Settled] = []
    for row in overdue:
        error = f"Not started within its deadline of {row.deadline_s} s."
        db.execute(
            update(TASKS)
            .where(TASK.id == row.id)
            .values(status=TaskStatus.failed.value, finished_at=now, error=error)
        )
        body = result_body(
            task_id=row.id,
            status=TaskStatus.failed,
            error=error,
            priority=row.priority,
            deadline_s=row.deadline_s,
        )
        settled.append(Settled(row.id, row.user_id, row.webhook_url, TaskStatus.failed, body))
        ended.append(Expired(row.id, row.user_id, row.deadline_s, body))
    _settle(db=db, settled=settled)
    db.commit()
    return ended


def renew_leases(*, db: Session, claims: list[Claim], lease_seconds: float) -> set[int]:
    """Extend the leases still held; returns the ids whose claim is still ours."""
    if not claims:
        return set()
    expires = utcnow() + timedelta(seconds=lease_seconds)
    held: set[int] = set()
    for token in {c.token for c in claims}:
        ids = [c.task_id for c in claims if c.token == token]
        rows = db.execute(
            update(TASKS)
            .where(
                TASK.id.in_(ids),
                TASK.claim_token == token,
                TASK.status == TaskStatus.in_progress.value,
            )
            .values(lease_expires_at=expires)
            .returning(TASK.id)
            .execution_options(synchronize_session=False)
        ).all()
        held.update(r[0] for r in rows)
    db.commit()
    return held


def is_settled(*, db: Session, task_id: int) -> bool:
    """True when the task is done, failed, canceled or no longer exists."""
    status = db.scalar(select(TASK.status).where(TASK.id == task_id))
    return status is None or status in SETTLED_STATUSES


def waiting_by_model(*, db: Session) -> dict[int, int]:
    """How many queued tasks wait for each model (detection and classification), by id."""
    waiting: dict[int, int] = {}
    for column in (Task.detection_model_id, Task.classification_model_id):
        for model_id, count in db.execute(
            select(column, func.count())
            .where(Task.status == TaskStatus.queued.value)
            .group_by(column)
        ):
            waiting[model_id] = waiting.get(model_id, 0) + count
    return waiting


@dataclass(frozen=True)
class Completion:
    """A run's result, to be stored under its claim."""

    claim: Claim
    image_class: str
    primitives: list[dict[str, Any]]
    details: dict[str, Any]


def complete(
    *,
    db: Session,
    claim: Claim,
    image_class: str,
    primitives: list[dict[str, Any]],
    details: dict[str, Any],
) -> bool:
    """Store the result and mark the task done (queueing its webhook), in one transaction,
    if the claim still holds."""
    return complete_many(db=db, items=[Completion(claim, image_class, primitives, details)])[0]


def complete_many(*, db: Session, items: list[Completion]) -> list[bool]:
    """``complete`` for several runs in one transaction, in a fixed number of statements
    whatever their count (one update, one insert of results, the events, the webhooks):
    whether each was stored (its claim still held)."""
    if not items:
        return []
    ended = {
        row.id: row
        for row in db.execute(
            update(TASKS)
            .where(
                tuple_(TASK.id, TASK.claim_token).in_(
                    [(item.claim.task_id, item.claim.token) for item in items]
                ),
                TASK.status == TaskStatus.in_progress.value,
            )
            .values(
                status=TaskStatus.done.value,
                finished_at=utcnow(),
                lease_expires_at=None,
                error=None,
            )
            .returning(TASK.id, TASK.user_id, TASK.webhook_url)
        )
    }
    stored = [item for item in items if item.claim.task_id in ended]
    if stored:
        db.execute(
            insert(RESULTS),
            [
                {
                    "task_id": item.claim.task_id,
                    "image_class": item.image_class,
                    "primitives": item.primitives,
                    "details": item.details,
                }
                for item in stored
            ],
        )
    _settle(
        db=db,
        settled=[
            Settled(
                item.claim.task_id,
                ended[item.claim.task_id].user_id,
                ended[item.claim.task_id].webhook_url,
                TaskStatus.done,
                item.claim.body(
                    TaskStatus.done,
                    result=result_payload(item.image_class, item.primitives, item.details),
                ),
            )
            for item in stored
        ],
    )
    db.commit()
    return [item.claim.task_id in ended for item in items]


def fail(*, db: Session, claim: Claim, error: str) -> bool:
    """Mark the task failed with ``error`` (queueing its webhook) if the claim still holds."""
    error = error[:MAX_ERROR]
    row = _end(db=db, claim=claim, status=TaskStatus.failed, error=error)
    if row is not None:
        body = claim.body(TaskStatus.failed, error=error)
        _settle(
            db=db,
            settled=[Settled(claim.task_id, row.user_id, row.webhook_url, TaskStatus.failed, body)],
        )
    db.commit()
    return row is not None


def release(*, db: Session, claim: Claim) -> bool:
    """Give the task back to the queue (a transient failure) if the claim still holds."""
    row = db.execute(
        update(TASKS)
        .where(*_held(claim))
        .values(status=TaskStatus.queued.value, claim_token=None, lease_expires_at=None)
        .returning(TASK.user_id)
    ).first()
    if row is not None:
        events.record(db=db, changes=[(row.user_id, claim.task_id, TaskStatus.queued.value)])
    db.commit()
    return row is not None


class ClaimStore:
    """The claim functions over a session factory: one short session per call (what the task
    queue's dispatcher holds; a fake with the same methods stands in for it in unit tests)."""

    def __init__(
        self, sessions: sessionmaker[Session], read_sessions: sessionmaker[Session] | None = None
    ):
        self.sessions = sessions
        self.read_sessions = read_sessions or sessions

    def claim_tasks(
        self, *, limit: int, lease_seconds: float, running: Collection[int] = ()
    ) -> list[ClaimedTask]:
        with self.sessions() as db:
            return claim_tasks_with_inputs(
                db=db, limit=limit, lease_seconds=lease_seconds, running=running
            )

    def renew_leases(self, *, claims: list[Claim], lease_seconds: float) -> set[int]:
        with self.sessions() as db:
            return renew_leases(db=db, claims=claims, lease_seconds=lease_seconds)

    def is_settled(self, *, task_id: int) -> bool:
        with self.read_sessions() as db:
            return is_settled(db=db, task_id=task_id)

    def waiting_by_model(self) -> dict[int, int]:
        with self.read_sessions() as db:
            return waiting_by_model(db=db)

    def complete_many(self, *, items: list[Completion]) -> list[bool]:
        with self.sessions() as db:
            return complete_many(db=db, items=items)

    def fail(self, *, claim: Claim, error: str) -> bool:
        with self.sessions() as db:
            return fail(db=db, claim=claim, error=error)

    def release(self, *, claim: Claim) -> bool:
        with self.sessions() as db:
            return release(db=db, claim=claim)

    def expire_overdue(self) -> list[Expired]:
        with self.sessions() as db:
            return expire_overdue(db=db)

    def purge_events(self, *, moment: datetime) -> int:
        with self.sessions() as db:
            return events.purge_before(db=db, moment=moment)

    def fold_usage(self) -> None:
        with self.sessions() as db:
            events.fold(db=db)
