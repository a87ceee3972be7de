"""Retention: settled tasks older than the configured age go, with their inputs and results;
expired idempotency keys and finished webhook deliveries (with their attempt logs) go too."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from storage import events
from storage.models import SETTLED_STATUSES, IdempotencyKey, Task, WebhookDelivery
from storage.webhooks import DELIVERED, GAVE_UP


def _delete_in_batches(db: Session, model: Any, *conditions: Any, batch: int) -> int:
    """Delete the rows of ``model`` (by its ``id``) that meet ``conditions``, ``batch`` at a
    time so that no transaction grows large; how many went."""
    purged = 0
    while True:
        ids = select(model.id).where(*conditions).limit(batch)
        result = cast(
            CursorResult,
            db.execute(
                delete(model)
                .where(model.id.in_(ids.scalar_subquery()))
                .execution_options(synchronize_session=False)
            ),
        )
        db.commit()
        purged += int(result.rowcount or 0)
        if (result.rowcount or 0) < batch:
            return purged


def purge_settled_before(*, db: Session, moment: datetime, batch: int = 500) -> int:
    """Delete settled tasks that finished before ``moment`` (inputs and results go with
    them), ``batch`` at a time, each batch's bytes taken off their owners' counters in its
    transaction; how many went."""
    purged = 0
    while True:
        ids = (
            select(Task.id)
            .where(Task.status.in_(SETTLED_STATUSES), Task.finished_at < moment)
            .limit(batch)
        )
        rows = db.execute(
            delete(Task)
            .where(Task.id.in_(ids.scalar_subquery()))
            .returning(Task.user_id, Task.input_bytes)
            .execution_options(synchronize_session=False)
        ).all()
        freed: dict[int, tuple[int, int]] = {}
        for user_id, size in rows:
            freed[user_id] = (0, freed.get(user_id, (0, 0))[1] - (size or 0))
        events.add_usage(db=db, usage=freed)
        db.commit()
        purged += len(rows)
        if len(rows) < batch:
            return purged


def purge_expired_keys(*, db: Session, moment: datetime) -> int:
    """Delete idempotency keys taken before ``moment`` (no retry is answered from them any
    more); how many went."""
    result = cast(
        CursorResult, db.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < moment))
    )
    db.commit()
    return int(result.rowcount or 0)


def purge_finished_deliveries(*, db: Session, moment: datetime, batch: int = 500) -> int:
    """Delete webhook deliveries delivered or given up and made before ``moment``, with their
    attempt logs; how many went. Pending ones stay, whatever their age."""
    return _delete_in_batches(
        db,
        WebhookDelivery,
        WebhookDelivery.state.in_((DELIVERED, GAVE_UP)),
        WebhookDelivery.created_at < moment,
        batch=batch,
    )
