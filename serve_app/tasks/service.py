"""Task storage for the API: create, list, read and delete a user's tasks."""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from storage.database import utcnow
from storage.models import Task, TaskInput, TaskResult, TaskStatus

# Ids a database column can hold; anything else cannot name a task.
MAX_TASK_ID = 2**63 - 1


def create_tasks(*, db: Session, user_id: int, detection_model_id: int,
                 classification_model_id: int, images: list[tuple[bytes, str]]) -> list[int]:
    """Store one queued task per (image, media type), all in one transaction; their ids in
    order, committed when this returns."""
    now = utcnow()
    ids = list(db.scalars(
        insert(Task).returning(Task.id, sort_by_parameter_order=True),
        [{"user_id": user_id, "detection_model_id": detection_model_id,
          "classification_model_id": classification_model_id,
          "status": TaskStatus.queued.value, "input_media_type": media_type,
          "created_at": now, "attempts": 0} for _, media_type in images]))
    db.execute(insert(TaskInput), [{"task_id": task_id, "data": data}
                                   for task_id, (data, _) in zip(ids, images, strict=True)])
    db.commit()
    return ids


def create_tasks_within_quota(*, db: Session, user_id: int, detection_model_id: int,
                              classification_model_id: int, images: list[tuple[bytes, str]],
                              max_active: int) -> list[int] | None:
    """``create_tasks``, unless the user would then have more than ``max_active`` waiting
    (None then)."""
    if count_active(db=db, user_id=user_id) + len(images) > max_active:
        return None
    return create_tasks(db=db, user_id=user_id, detection_model_id=detection_model_id,
                        classification_model_id=classification_model_id, images=images)


def count_active(*, db: Session, user_id: int) -> int:
    """How many of the user's tasks are queued or in progress."""
    return db.scalar(select(func.count()).select_from(Task).where(
        Task.user_id == user_id,
        Task.status.in_([TaskStatus.queued.value, TaskStatus.in_progress.value]))) or 0


def list_tasks(*, db: Session, user_id: int, status: TaskStatus | None = None,
               after_id: int = 0, limit: int | None = None) -> list[Task]:
    """The user's tasks by id ascending, optionally filtered and paged."""
    query = select(Task).where(Task.user_id == user_id, Task.id > after_id).order_by(Task.id)
    if status is not None:
        query = query.where(Task.status == status.value)
    if limit is not None:
        query = query.limit(limit)
    return list(db.scalars(query))


def get_task(*, db: Session, user_id: int, task_id: int) -> Task | None:
    """The user's task with this id; None when missing or someone else's."""
    if not 0 < task_id <= MAX_TASK_ID:
        return None
    return db.scalar(select(Task).where(Task.id == task_id, Task.user_id == user_id))


def get_task_and_result(*, db: Session, user_id: int,
                        task_id: int) -> tuple[Task, TaskResult | None] | None:
    """The user's task and its result (None until done), in one query."""
    if not 0 < task_id <= MAX_TASK_ID:
        return None
    row = db.execute(select(Task, TaskResult)
                     .outerjoin(TaskResult, TaskResult.task_id == Task.id)
                     .where(Task.id == task_id, Task.user_id == user_id)).first()
    return (row[0], row[1]) if row is not None else None


def get_input(*, db: Session, user_id: int, task_id: int) -> tuple[str, bytes] | None:
    """The media type and bytes of the user's task input."""
    if not 0 < task_id <= MAX_TASK_ID:
        return None
    row = db.execute(
        select(Task.input_media_type, TaskInput.data)
        .join(TaskInput, TaskInput.task_id == Task.id)
        .where(Task.id == task_id, Task.user_id == user_id)
    ).first()
    return (row[0], row[1]) if row else None



def delete_task(*, db: Session, user_id: int, task_id: int) -> bool:
    """Delete the user's task with its input and result; False when there is none."""
    if not 0 < task_id <= MAX_TASK_ID:
        return False
    deleted = db.execute(
        delete(Task).where(Task.id == task_id, Task.user_id == user_id).returning(Task.id)
    ).first()
    db.commit()
    return deleted is not None
