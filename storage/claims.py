"""The queue's side of task storage: atomic claims, leases, results.

A claim moves a task to ``in progress`` with a fresh token and a lease. Every later write
names the token, so a dispatcher that lost its claim (lease expired, task deleted, task
claimed again) can change nothing. PostgreSQL claims with ``FOR UPDATE SKIP LOCKED``;
SQLite serialises writers, which gives the same guarantee.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage import webhooks
from storage.database import utcnow
from storage.models import SETTLED_STATUSES, Task, TaskInput, TaskResult, TaskStatus
from storage.results import result_body, result_payload

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

    def log_extra(self) -> dict[str, int | None]:
        """What every log line about this task carries (not ``task_id``: Ray's JSON log
        lines use that key for the Ray task)."""
        return {"task": self.task_id, "user": self.user_id}


@dataclass(frozen=True)
class ClaimedTask:
    """A claim with the task's image (None when the task was deleted meanwhile)."""

    claim: Claim
    image: bytes | None


def claim_tasks_with_inputs(*, db: Session, limit: int,
                            lease_seconds: float) -> list[ClaimedTask]:
    """Claim up to ``limit`` runnable tasks (queued, or in progress with a lapsed lease),
    their images read in the same transaction (one query for the whole batch, not one per
    task; None for a task deleted meanwhile)."""
    claims = _claim(db=db, limit=limit, lease_seconds=lease_seconds)
    images: dict[int, bytes] = {}
    if claims:
        rows = db.execute(select(TaskInput.task_id, TaskInput.data)
                          .where(TaskInput.task_id.in_([c.task_id for c in claims])))
        images = {task_id: data for task_id, data in rows}
    db.commit()
    return [ClaimedTask(c, images.get(c.task_id)) for c in claims]


# The queue's hot statements are written against the tables (Core), not the mapped classes:
# SQLAlchemy's ORM bulk-update and unit-of-work paths cost more CPU than the statements.
TASKS, RESULTS = cast(Table, Task.__table__), cast(Table, TaskResult.__table__)
TASK = TASKS.c


def _claim(*, db: Session, limit: int, lease_seconds: float) -> list[Claim]:
    now = utcnow()
    runnable = (
        select(TASK.id)
        .where(or_(TASK.status == TaskStatus.queued.value,
                   and_(TASK.status == TaskStatus.in_progress.value,
                        TASK.lease_expires_at < now)))
        .order_by(TASK.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    token = str(uuid.uuid4())
    rows = db.execute(
        update(TASKS)
        .where(TASK.id.in_(runnable.scalar_subquery()))
        .values(status=TaskStatus.in_progress.value, claim_token=token,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=TASK.attempts + 1, started_at=now)
        .returning(TASK.id, TASK.attempts, TASK.detection_model_id, TASK.classification_model_id,
                   TASK.created_at, TASK.user_id)
    ).all()
    return sorted((Claim(r[0], token, r[1], r[2], r[3], r[4], r[5]) for r in rows),
                  key=lambda c: c.task_id)


def renew_leases(*, db: Session, claims: list[Claim], lease_seconds: float) -> set[int]:
    """Extend the leases still held; returns the ids whose claim is still ours."""
    if not claims:
        return set()
    expires = utcnow() + timedelta(seconds=lease_seconds)
    held: set[int] = set()
    for token in {c.token for c in claims}:
        ids = [c.task_id for c in claims if c.token == token]
        rows = db.execute(
            update(Task)
            .where(Task.id.in_(ids), Task.claim_token == token,
                   Task.status == TaskStatus.in_progress.value)
            .values(lease_expires_at=expires)
            .returning(Task.id)
            .execution_options(synchronize_session=False)
        ).all()
        held.update(r[0] for r in rows)
    db.commit()
    return held


def is_settled(*, db: Session, task_id: int) -> bool:
    """True when the task is done, failed, canceled or no longer exists."""
    status = db.scalar(select(Task.status).where(Task.id == task_id))
    return status is None or status in SETTLED_STATUSES


def waiting_by_model(*, db: Session) -> dict[int, int]:
    """How many queued tasks wait for each model (detection and classification), by id."""
    waiting: dict[int, int] = {}
    for column in (Task.detection_model_id, Task.classification_model_id):
        for model_id, count in db.execute(
                select(column, func.count()).where(Task.status == TaskStatus.queued.value)
                .group_by(column)):
            waiting[model_id] = waiting.get(model_id, 0) + count
    return waiting


@dataclass(frozen=True)
class Completion:
    """A run's result, to be stored under its claim."""

    claim: Claim
    image_class: str
    primitives: list[dict[str, Any]]
    details: dict[str, Any]


def complete(*, db: Session, claim: Claim, image_class: str, primitives: list[dict[str, Any]],
             details: dict[str, Any]) -> bool:
    """Store the result and mark the task done (queueing its webhook), in one transaction,
    if the claim still holds."""
    stored = _complete(db=db, item=Completion(claim, image_class, primitives, details))
    db.commit()
    return stored


def complete_many(*, db: Session, items: list[Completion]) -> list[bool]:
    """``complete`` for several runs in one transaction (one commit for all): whether each
    was stored (its claim still held)."""
    stored = [_complete(db=db, item=item) for item in items]
    db.commit()
    return stored


def _complete(*, db: Session, item: Completion) -> bool:
    claim, image_class, primitives, details = (item.claim, item.image_class, item.primitives,
                                               item.details)
    done = db.execute(
        update(TASKS)
        .where(TASK.id == claim.task_id, TASK.claim_token == claim.token,
               TASK.status == TaskStatus.in_progress.value)
        .values(status=TaskStatus.done.value, finished_at=utcnow(), lease_expires_at=None,
                error=None)
        .returning(TASK.user_id, TASK.webhook_url)
    ).first()
    if done is None:  # the claim was lost: nothing was changed
        return False
    db.execute(insert(RESULTS).values(task_id=claim.task_id, image_class=image_class,
                                     primitives=primitives, details=details))
    if done.webhook_url:
        webhooks.enqueue(db=db, task_id=claim.task_id, user_id=done.user_id,
                         url=done.webhook_url, body=result_body(
                             task_id=claim.task_id, status=TaskStatus.done,
                             result=result_payload(image_class, primitives, details)))
    return True


def fail(*, db: Session, claim: Claim, error: str) -> bool:
    """Mark the task failed with ``error`` (queueing its webhook) if the claim still holds."""
    error = error[:MAX_ERROR]
    row = db.execute(
        update(Task)
        .where(Task.id == claim.task_id, Task.claim_token == claim.token,
               Task.status == TaskStatus.in_progress.value)
        .values(status=TaskStatus.failed.value, finished_at=utcnow(), lease_expires_at=None,
                error=error)
        .returning(Task.user_id, Task.webhook_url)
        .execution_options(synchronize_session=False)
    ).first()
    if row is not None and row.webhook_url:
        webhooks.enqueue(db=db, task_id=claim.task_id, user_id=row.user_id, url=row.webhook_url,
                         body=result_body(task_id=claim.task_id, status=TaskStatus.failed,
                                          error=error))
    db.commit()
    return row is not None


def release(*, db: Session, claim: Claim) -> bool:
    """Give the task back to the queue (a transient failure) if the claim still holds."""
    row = db.execute(
        update(Task)
        .where(Task.id == claim.task_id, Task.claim_token == claim.token,
               Task.status == TaskStatus.in_progress.value)
        .values(status=TaskStatus.queued.value, claim_token=None, lease_expires_at=None)
        .returning(Task.id)
        .execution_options(synchronize_session=False)
    ).first()
    db.commit()
    return row is not None


class ClaimStore:
    """The claim functions over a session factory: one short session per call (what the task
    queue's dispatcher holds; a fake with the same methods stands in for it in unit tests)."""

    def __init__(self, sessions: sessionmaker[Session],
                 read_sessions: sessionmaker[Session] | None = None):
        self.sessions = sessions
        self.read_sessions = read_sessions or sessions

    def claim_tasks(self, *, limit: int, lease_seconds: float) -> list[ClaimedTask]:
        with self.sessions() as db:
            return claim_tasks_with_inputs(db=db, limit=limit, lease_seconds=lease_seconds)

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
