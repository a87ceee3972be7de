"""How a task ends, written once: the result route's body (``ResultBody``, built where the
task ends or is read and carried as it is to the route, the waiting request and the webhook)
and what every path that ends a task records with it (``settle``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from storage import events, webhooks
from storage.models import DEFAULT_PRIORITY, Task, TaskResult, TaskStatus


def result_payload(
    image_class: str, primitives: list[dict[str, Any]], details: dict[str, Any]
) -> dict[str, Any]:
    """The ``result`` object: the contract's keys, then our extra ones."""
    return {"image_class": image_class, "primitives": primitives, **details}


@dataclass(frozen=True)
class ResultBody:
    """``GET /tasks/{id}/result``'s body for a task in ``status`` (``error`` only when
    failed). A task submitted with a queue policy (docs/api.md §E10) carries it as extra
    keys; one submitted without has the seed's body exactly."""

    task_id: int
    status: TaskStatus
    result: dict[str, Any] | None = None  # the ``result`` object, once done
    error: str | None = None
    priority: int = DEFAULT_PRIORITY
    deadline_s: int | None = None

    @classmethod
    def of(cls, task: Task, stored: TaskResult | None) -> ResultBody:
        """The body of a task read with its stored result (None until done)."""
        status = TaskStatus(task.status)
        result = (
            result_payload(stored.image_class, stored.primitives, stored.details)
            if status is TaskStatus.done and stored is not None
            else None
        )
        return cls(
            task_id=task.id,
            status=status,
            result=result,
            error=task.error,
            priority=task.priority,
            deadline_s=task.deadline_s,
        )

    def as_json(self) -> dict[str, Any]:
        """The body as JSON values, in the contract's key order."""
        body: dict[str, Any] = {"id": self.task_id, "status": self.status.value}
        body["result"] = self.result
        if self.status is TaskStatus.failed:
            body["error"] = self.error or "the task failed"
        if self.priority != DEFAULT_PRIORITY or self.deadline_s is not None:
            body["priority"] = self.priority
            body["deadline_s"] = self.deadline_s
        return body


@dataclass(frozen=True)
class Settled:
    """A task that has just ended (its status row updated in this transaction): what every
    path that ends one (cancel, deadline, completion, failure) records about it."""

    user_id: int
    webhook_url: str | None
    body: ResultBody  # the result route's body, as its webhook carries it


def settle(*, db: Session, settled: list[Settled]) -> None:
    """The one way a task's end is recorded, in the transaction that ended it: its event
    (which also frees its place in the user's counters) and, when it has a webhook URL, the
    webhook delivery with the result route's body."""
    if not settled:
        return
    events.record(
        db=db,
        changes=[(s.user_id, s.body.task_id, s.body.status.value) for s in settled],
        settles=True,
    )
    for s in settled:
        if s.webhook_url:
            webhooks.enqueue(
                db=db,
                task_id=s.body.task_id,
                user_id=s.user_id,
                url=s.webhook_url,
                body=s.body.as_json(),
            )
