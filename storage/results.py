"""The result route's body, built in one place: the API answers it and webhooks send it."""

from __future__ import annotations

from typing import Any

from storage.models import DEFAULT_PRIORITY, TaskStatus


def result_payload(
    image_class: str, primitives: list[dict[str, Any]], details: dict[str, Any]
) -> dict[str, Any]:
    """The ``result`` object: the contract's keys, then our extra ones."""
    return {"image_class": image_class, "primitives": primitives, **details}


def result_body(
    *,
    task_id: int,
    status: TaskStatus,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    priority: int = DEFAULT_PRIORITY,
    deadline_s: int | None = None,
) -> dict[str, Any]:
    """``GET /tasks/{id}/result``'s body for a task in ``status`` (``error`` only when
    failed). A task submitted with a queue policy (docs/api.md §E10) carries it as extra
    keys; one submitted without has the seed's body exactly."""
    body: dict[str, Any] = {"id": task_id, "status": status.value, "result": result}
    if status is TaskStatus.failed:
        body["error"] = error or "the task failed"
    if priority != DEFAULT_PRIORITY or deadline_s is not None:
        body["priority"] = priority
        body["deadline_s"] = deadline_s
    return body
