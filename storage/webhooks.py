"""Webhook deliveries in the database: queued in the same transaction that settles a task,
taken by senders with a lock that lapses (a crashed sender's deliveries are taken again),
and logged attempt by attempt."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, case, func, literal, or_, select, update
from sqlalchemy.orm import Session

from storage.database import utcnow
from storage.models import Task, User, WebhookAttempt, WebhookDelivery

PENDING, DELIVERED, GAVE_UP = "pending", "delivered", "gave_up"


def new_secret() -> str:
    """A webhook signing secret: ``whsec_`` and the base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def ensure_secret(*, db: Session, user_id: int) -> str:
    """The user's webhook secret, made (and committed) on first use."""
    user = db.get(User, user_id)
    if user is None:
        raise LookupError(f"no user {user_id}")
    if user.webhook_secret is None:
        db.execute(
            update(User)
            .where(User.id == user_id, User.webhook_secret.is_(None))
            .values(webhook_secret=new_secret())
        )
        db.commit()
        db.refresh(user)
    assert user.webhook_secret is not None
    return user.webhook_secret


def rotate_secret(*, db: Session, user_id: int) -> str:
    """Replace the user's webhook secret; the new one signs every later attempt."""
    secret = new_secret()
    db.execute(update(User).where(User.id == user_id).values(webhook_secret=secret))
    db.commit()
    return secret


def enqueue(*, db: Session, task_id: int, user_id: int, url: str, body: dict[str, Any]) -> None:
    """Add a delivery of ``body`` to ``url`` (the caller commits, with the task's change)."""
    db.add(
        WebhookDelivery(
            event_id=f"msg_{uuid.uuid4().hex}",
            task_id=task_id,
            user_id=user_id,
            url=url,
            body=json.dumps(body, separators=(",", ":")),
            state=PENDING,
            attempts=0,
            next_attempt_at=utcnow(),
        )
    )


@dataclass(frozen=True)
class DueDelivery:
    id: int
    event_id: str
    url: str
    body: str
    attempt: int  # this attempt's number, from 1
    user_id: int
    task_id: int
    traceparent: str | None = None  # its task's trace, while the task exists (§E15)

    def log_extra(self) -> dict[str, int | str]:
        return {"task": self.task_id, "user": self.user_id, "webhook_id": self.event_id}


def take_due(
    *,
    db: Session,
    limit: int,
    lock_seconds: float,
    per_user: int | None = None,
    running: Mapping[int, int] | None = None,
) -> list[DueDelivery]:
    """Lock up to ``limit`` deliveries that are due, for ``lock_seconds``, oldest due first;
    with ``per_user``, at most that many of one user's in flight, counting ``running`` (the
    user's deliveries already being sent), so that one user's slow receivers never take
    every slot."""
    now = utcnow()
    conditions = (
        WebhookDelivery.state == PENDING,
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
    )
    if per_user is None:
        candidates = select(WebhookDelivery.id).where(*conditions)
    else:
        running = running or {}
        full = [user for user, count in running.items() if count >= per_user]
        ranked = (
            select(
                WebhookDelivery.id,
                WebhookDelivery.user_id,
                func.row_number()
                .over(
                    partition_by=WebhookDelivery.user_id,
                    order_by=(WebhookDelivery.next_attempt_at, WebhookDelivery.id),
                )
                .label("place"),
            )
            .where(*conditions, WebhookDelivery.user_id.notin_(full))
            .subquery()
        )
        room = [(ranked.c.user_id == u, per_user - n) for u, n in running.items() if n > 0]
        share = case(*room, else_=per_user) if room else literal(per_user)
        candidates = select(WebhookDelivery.id).where(
            WebhookDelivery.id.in_(select(ranked.c.id).where(ranked.c.place <= share))
        )
    due = (
        candidates.order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = db.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(due.scalar_subquery()))
        .values(
            locked_until=now + timedelta(seconds=lock_seconds),
            attempts=WebhookDelivery.attempts + 1,
        )
        .returning(
            WebhookDelivery.id,
            WebhookDelivery.event_id,
            WebhookDelivery.url,
            WebhookDelivery.body,
            WebhookDelivery.attempts,
            WebhookDelivery.user_id,
            WebhookDelivery.task_id,
        )
        .execution_options(synchronize_session=False)
    ).all()
    traces: dict[int, str | None] = {}
    if rows:
        task_ids = {row.task_id for row in rows}
        traces = {
            row.id: row.traceparent
            for row in db.execute(
                select(Task.id, Task.traceparent).where(
                    Task.id.in_(task_ids), Task.traceparent.is_not(None)
                )
            )
        }
    db.commit()
    return [DueDelivery(*row, traceparent=traces.get(row.task_id)) for row in rows]


def record_attempt(
    *,
    db: Session,
    delivery: DueDelivery,
    started_at: datetime,
    duration_ms: float,
    status_code: int | None,
    error: str | None,
    next_attempt_at: datetime | None,
) -> None:
    """Log the attempt; the delivery is delivered on a 2xx, else due again at
    ``next_attempt_at`` (None: no attempts left)."""
    delivered = status_code is not None and 200 <= status_code < 300
    state = DELIVERED if delivered else (PENDING if next_attempt_at is not None else GAVE_UP)
    db.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            attempt=delivery.attempt,
            started_at=started_at,
            duration_ms=round(duration_ms, 1),
            status_code=status_code,
            error=error and error[:1000],
        )
    )
    values: dict[str, Any] = {"state": state, "locked_until": None}
    if state == PENDING:
        values["next_attempt_at"] = next_attempt_at
    db.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(**values))
    db.commit()


def deliveries_for_task(
    *, db: Session, user_id: int, task_id: int
) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    """The user's task's deliveries with their attempt logs, oldest first. A delivery outlives
    its task: the owner is part of the query, so a task id never shows another's rows."""
    deliveries = list(
        db.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.task_id == task_id, WebhookDelivery.user_id == user_id)
            .order_by(WebhookDelivery.id)
        )
    )
    if not deliveries:
        return []
    attempts = list(
        db.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([d.id for d in deliveries]))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt)
        )
    )
    return [(d, [a for a in attempts if a.delivery_id == d.id]) for d in deliveries]


def postpone_url(*, db: Session, url: str, until: datetime) -> int:
    """Move every pending delivery to ``url`` due before ``until`` to ``until`` (a paused
    endpoint: no attempt is spent); how many moved."""
    result = cast(
        CursorResult,
        db.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.state == PENDING,
                WebhookDelivery.url == url,
                WebhookDelivery.next_attempt_at < until,
            )
            .values(next_attempt_at=until)
        ),
    )
    db.commit()
    return int(result.rowcount or 0)
