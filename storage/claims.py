"""The queue's side of the task table: atomic claims, leases, completions and failures under
the claim, deadlines (the API's side is storage/tasks.py). A task that ends queues its
webhook delivery and stores its event in the same transaction (storage/results.py's
``settle``).

A claim moves a task to ``in progress`` with a fresh token and a lease. Every later write
names the token, so a dispatcher that lost its claim (lease expired, task deleted or canceled,
task claimed again) can change nothing. PostgreSQL claims with ``FOR UPDATE SKIP LOCKED``;
SQLite serialises writers, which gives the same guarantee. Claims follow the queue's order
(storage/tasks.py's docstring) and move its clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session

from storage import events
from storage.database import Sessions, utcnow
from storage.models import (
    DEFAULT_PRIORITY,
    INPUTS,
    RESULTS,
    SETTLED_STATUSES,
    TASK,
    TASKS,
    TURNS,
    Task,
    TaskStatus,
)
from storage.results import ResultBody, Settled, result_payload, settle

MAX_ERROR = 4000  # characters of a failure's message kept


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

    def body(
        self, status: TaskStatus, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> ResultBody:
        """The result route's body of this task in ``status``."""
        return ResultBody(
            self.task_id,
            status,
            result=result,
            error=error,
            priority=self.priority,
            deadline_s=self.deadline_s,
        )

    def failed(self, error: str) -> ResultBody:
        """The result route's body of this task failed with ``error`` (cut to what is
        stored)."""
        return self.body(TaskStatus.failed, error=error[:MAX_ERROR])

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
    body: ResultBody


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
        body = ResultBody(
            row.id,
            TaskStatus.failed,
            error=error,
            priority=row.priority,
            deadline_s=row.deadline_s,
        )
        settled.append(Settled(row.user_id, row.webhook_url, body))
        ended.append(Expired(row.id, row.user_id, row.deadline_s, body))
    settle(db=db, settled=settled)
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

    def body(self) -> ResultBody:
        """The result route's body of the task done with this result."""
        return self.claim.body(
            TaskStatus.done,
            result=result_payload(self.image_class, self.primitives, self.details),
        )


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
    settle(
        db=db,
        settled=[
            Settled(
                ended[item.claim.task_id].user_id,
                ended[item.claim.task_id].webhook_url,
                item.body(),
            )
            for item in stored
        ],
    )
    db.commit()
    return [item.claim.task_id in ended for item in items]


def fail(*, db: Session, claim: Claim, error: str) -> bool:
    """Mark the task failed with ``error`` (queueing its webhook) if the claim still holds."""
    body = claim.failed(error)
    row = _end(db=db, claim=claim, status=TaskStatus.failed, error=body.error)
    if row is not None:
        settle(db=db, settled=[Settled(row.user_id, row.webhook_url, body)])
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


class ClaimStore(Sessions):
    """The claim functions, one short session per call (what the task queue's dispatcher
    holds as its ``Store``; a memory store with the same methods stands in for it in unit
    tests)."""

    def claim_tasks(
        self, *, limit: int, lease_seconds: float, running: Collection[int] = ()
    ) -> list[ClaimedTask]:
        return self.run(
            lambda db: claim_tasks_with_inputs(
                db=db, limit=limit, lease_seconds=lease_seconds, running=running
            )
        )

    def renew_leases(self, *, claims: list[Claim], lease_seconds: float) -> set[int]:
        return self.run(lambda db: renew_leases(db=db, claims=claims, lease_seconds=lease_seconds))

    def is_settled(self, *, task_id: int) -> bool:
        return self.read(lambda db: is_settled(db=db, task_id=task_id))

    def waiting_by_model(self) -> dict[int, int]:
        return self.read(lambda db: waiting_by_model(db=db))

    def complete_many(self, *, items: list[Completion]) -> list[bool]:
        return self.run(lambda db: complete_many(db=db, items=items))

    def fail(self, *, claim: Claim, error: str) -> bool:
        return self.run(lambda db: fail(db=db, claim=claim, error=error))

    def release(self, *, claim: Claim) -> bool:
        return self.run(lambda db: release(db=db, claim=claim))

    def expire_overdue(self) -> list[Expired]:
        return self.run(lambda db: expire_overdue(db=db))

    def purge_events(self, *, moment: datetime) -> int:
        return self.run(lambda db: events.purge_before(db=db, moment=moment))

    def fold_usage(self) -> None:
        self.run(lambda db: events.fold(db=db))
