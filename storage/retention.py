"""Retention: settled tasks older than the configured age go, with their inputs and results."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from storage.models import SETTLED_STATUSES, Task


def purge_settled_before(*, db: Session, moment: datetime, batch: int = 500) -> int:
    """Delete settled tasks that finished before ``moment`` (inputs and results go with
    them), ``batch`` at a time so no transaction grows large; how many went."""
    purged = 0
    while True:
        ids = select(Task.id).where(Task.status.in_(SETTLED_STATUSES),
                                    Task.finished_at < moment).limit(batch)
        result = cast(CursorResult, db.execute(
            delete(Task).where(Task.id.in_(ids.scalar_subquery()))
            .execution_options(synchronize_session=False)))
        db.commit()
        purged += int(result.rowcount or 0)
        if (result.rowcount or 0) < batch:
            return purged
