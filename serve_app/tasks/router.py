"""The task API: submit images, list tasks, read status, input and result, cancel, retry,
delete, and read a task's webhook deliveries. Waiting for a task is serve_app/tasks/waiting.py,
its picture serve_app/tasks/pictures.py, how storage refusals answer serve_app/tasks/errors.py."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from observability import tracing
from serve_app.auth.dependencies import CurrentUser
from serve_app.dependencies import (
    AsyncDb,
    DbSession,
    Queue,
    QueuedCount,
    ReadDbSession,
    ReadSessionFactory,
    SettingsDep,
    Waits,
)
from serve_app.services import Database, QueueLink, RecentCount
from serve_app.slots import UserSlots
from serve_app.tasks.dependencies import (
    ClassificationModelId,
    DetectionModelId,
    IdempotencyKeyHeader,
    PreferWait,
    TaskId,
    UploadedImages,
    WebhookUrl,
    not_found,
)
from serve_app.tasks.schemas import (
    IMAGE_BODY,
    NOT_FOUND,
    STORE_REFUSALS,
    UNAUTHORIZED,
    Message,
    TaskCanceled,
    TaskCreated,
    TaskDeleted,
    TaskList,
    TaskResultOut,
    TasksCreated,
    TaskStatusOut,
    TaskSummary,
    WebhookAttemptOut,
    WebhookDeliveryOut,
    WebhookLog,
)
from serve_app.tasks.waiting import WaitSeconds, settled_result, waited_result
from storage import tasks, webhooks
from storage.models import DEFAULT_PRIORITY, PRIORITIES, TaskStatus, input_path

router = APIRouter(tags=["tasks"])
# Under Serve's logger: its JSON lines and log files, with this module named.
log = logging.getLogger(f"ray.serve.{__name__}")

LIST_PAGE = 1000  # tasks read per query while the whole list streams

Priority = Annotated[
    int,
    Query(
        ge=min(PRIORITIES),
        le=max(PRIORITIES),
        description="0 to 9: waiting tasks start highest priority first; within one priority "
        "users take turns. At most the caller's maximum (5 unless an operator set another)",
    ),
]


def allowed_priority(user: CurrentUser, priority: Priority = DEFAULT_PRIORITY) -> int:
    """The priority asked for, refused (403) above the caller's maximum before the body is
    read (docs/api.md §E10)."""
    if priority > user.max_priority:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"Your tasks may have priority at most {user.max_priority}; an operator "
            "can raise that (primitives-admin users set-max-priority). Nothing was stored.",
        )
    return priority


AllowedPriority = Annotated[int, Depends(allowed_priority)]
DeadlineSeconds = Annotated[
    int | None,
    Query(
        ge=1,
        le=86_400,
        description="Seconds from acceptance within which the task must start; one not "
        "started by then ends failed and never runs",
    ),
]


async def _store(
    db: Database,
    user_id: int,
    new: tasks.NewTasks,
    settings: Settings,
    queued: RecentCount,
    key: str | None = None,
) -> tasks.Created:
    """Store the tasks within the user's and the platform's limits (docs/api.md §E10), each
    refusal the HTTP error that says why; the stored tasks, logged."""
    with tracing.span("store tasks", attributes={"task.count": len(new.images)}) as stored:
        if stored is not None:  # the queue and the sender continue this span's trace
            new = dataclasses.replace(new, traceparent=tracing.current_traceparent())
        created = await _store_within_limits(db, user_id, new, settings, queued, key)
        if stored is not None:
            stored.set_attribute("task.ids", created.ids)
    return created


async def _store_within_limits(
    db: Database,
    user_id: int,
    new: tasks.NewTasks,
    settings: Settings,
    queued: RecentCount,
    key: str | None,
) -> tasks.Created:
    # The storage's refusals (over quota, queue full, storage full, key reused) rise to the
    # app's handlers (serve_app/tasks/errors.py), which answer them as the contract says.
    created = await db.run(
        lambda s: tasks.create_tasks_within_quota(
            db=s,
            user_id=user_id,
            new=new,
            max_active=settings.max_active_tasks_per_user,
            idempotency_key=key,
            key_hours=settings.idempotency_hours,
            max_stored_bytes=settings.max_stored_bytes_per_user,
            max_queued=settings.max_queued_tasks,
            queued_estimate=queued.get(),
            queue_share=settings.queue_share_per_user,
        )
    )
    if created.queued is not None:
        queued.read(created.queued)
    if not created.replayed:
        queued.add(len(created.ids))
    for task_id in created.ids:
        log.info(
            "task %d accepted%s",
            task_id,
            " (a replay)" if created.replayed else "",
            extra={"task": task_id, "user": user_id},
        )
    return created


@router.post(
    "/api/tasks",
    response_model=TaskCreated | TasksCreated | TaskResultOut,
    summary="Submit an image (or several, multipart); stored as queued before the answer",
    description="With `Prefer: wait=N` (one image) the answer comes when the task settles "
    "or after N seconds, with the result route's body and `Preference-Applied`.",
    # The body is read by the UploadedImage dependency (raw or multipart): described here.
    openapi_extra={"requestBody": IMAGE_BODY},
    responses={
        400: {
            "model": Message,
            "description": "Unknown model id, an undecodable image, a "
            "refused webhook URL, an image URL that was refused or could not be fetched, or a "
            "bad Idempotency-Key",
        },
        401: UNAUTHORIZED,
        403: {"model": Message, "description": "A priority above the caller's maximum"},
        409: {"model": Message, "description": "Idempotency-Key reused for another request"},
        413: {
            "model": Message,
            "description": "Body or pixel count over the limit, or the user's storage quota full",
        },
        415: {"model": Message, "description": "Not a JPEG or PNG"},
        **STORE_REFUSALS,
    },
)
async def create_task(
    user: CurrentUser,
    detection_id: DetectionModelId,
    classification_id: ClassificationModelId,
    webhook: WebhookUrl,
    key: IdempotencyKeyHeader,
    priority: AllowedPriority,
    uploads: UploadedImages,
    prefer: PreferWait,
    settings: SettingsDep,
    db: AsyncDb,
    queue: Queue,
    waits: Waits,
    queued: QueuedCount,
    deadline_s: DeadlineSeconds = None,
) -> TaskCreated | TasksCreated | Response:
    new = tasks.NewTasks(
        detection_model_id=detection_id,
        classification_model_id=classification_id,
        images=[(u.data, u.media_type) for u in uploads.images],
        webhook_url=webhook,
        priority=priority,
        deadline_s=deadline_s,
    )
    created = await _store(db, user.id, new, settings, queued, key)
    if prefer is not None and not uploads.batch:
        # Stored and committed above: a client that goes away now loses nothing. One call
        # to the queue both wakes it and waits for the task.
        body = await waited_result(
            db, queue, waits, user.id, created.ids[0], prefer, notify=not created.replayed
        )
        return JSONResponse(body.as_json(), headers={"Preference-Applied": f"wait={prefer}"})
    if not created.replayed:
        queue.notify()
    return TasksCreated(ids=created.ids) if uploads.batch else TaskCreated(id=created.ids[0])


@router.get(
    "/api/tasks",
    response_model=TaskList,
    summary="The caller's tasks, by id",
    responses={401: UNAUTHORIZED},
)
def list_tasks(
    sessions: ReadSessionFactory,
    user: CurrentUser,
    status_filter: Annotated[TaskStatus | None, Query(alias="status")] = None,
    after_id: Annotated[
        int, Query(ge=0, le=tasks.MAX_TASK_ID, description="only tasks with a larger id")
    ] = 0,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> TaskList | StreamingResponse:
    if limit is not None:
        with sessions() as db:
            rows = tasks.task_summaries(
                db=db, user_id=user.id, status=status_filter, after_id=after_id, limit=limit
            )
        return TaskList(tasks=[_summary(row) for row in rows])
    # The whole list (what a seed client asks for) is streamed a page at a time, each page
    # read in a session of its own: however many tasks a user has, the replica holds one page.
    return StreamingResponse(
        _stream_tasks(sessions, user.id, status_filter, after_id), media_type="application/json"
    )


def _summary(row: tuple[int, str, Any, str]) -> TaskSummary:
    task_id, status_, created_at, media_type = row
    return TaskSummary(
        id=task_id,
        status=TaskStatus(status_),
        created_at=created_at,
        input_path=input_path(task_id, media_type),
    )


def _stream_tasks(
    sessions: sessionmaker[Session], user_id: int, status_filter: TaskStatus | None, after_id: int
) -> Iterator[bytes]:
    """``{"tasks":[...]}`` as FastAPI would write it, byte for byte, a page at a time."""
    yield b'{"tasks":['
    first = True
    while True:
        with sessions() as db:
            rows = tasks.task_summaries(
                db=db, user_id=user_id, status=status_filter, after_id=after_id, limit=LIST_PAGE
            )
        for row in rows:
            yield (b"" if first else b",") + _summary(row).model_dump_json().encode()
            first = False
        if len(rows) < LIST_PAGE:
            break
        after_id = rows[-1][0]
    yield b"]}"


@router.get(
    "/api/tasks/{task_id}/status",
    response_model=TaskStatusOut,
    summary="A task's status (optionally held until it finishes)",
    responses={401: UNAUTHORIZED, 404: NOT_FOUND},
)
async def get_status(
    task_id: TaskId,
    user: CurrentUser,
    db: AsyncDb,
    queue: Queue,
    waits: Waits,
    wait: WaitSeconds = 0,
) -> TaskStatusOut:
    body = await settled_result(db, queue, waits, user.id, task_id, wait)
    return TaskStatusOut(id=body.task_id, status=body.status)


@router.get(
    "/api/tasks/{task_id}/input",
    summary="The submitted image",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}, "image/png": {}}},
        401: UNAUTHORIZED,
        404: NOT_FOUND,
    },
)
def get_input(task_id: TaskId, db: ReadDbSession, user: CurrentUser) -> Response:
    found = tasks.get_input(db=db, user_id=user.id, task_id=task_id)
    if found is None:
        raise not_found(task_id)
    media_type, data = found
    return Response(content=data, media_type=media_type)


async def _result(
    task_id: int, user_id: int, db: Database, queue: QueueLink, waits: UserSlots, wait: float
) -> JSONResponse:
    body = await settled_result(db, queue, waits, user_id, task_id, wait)
    return JSONResponse(body.as_json())


def _result_route(path: str):
    # The body is ResultBody's JSON: `error` only for a failed task, `result` always (null
    # until done), the queue policy only when the task has one.
    return router.get(
        path,
        response_model=TaskResultOut,
        summary="A task's result (null until done; optionally held until it finishes)",
        responses={401: UNAUTHORIZED, 404: NOT_FOUND},
    )


@_result_route("/tasks/{task_id}/result")
async def get_result(
    task_id: TaskId,
    user: CurrentUser,
    db: AsyncDb,
    queue: Queue,
    waits: Waits,
    wait: WaitSeconds = 0,
) -> Response:
    return await _result(task_id, user.id, db, queue, waits, wait)


@_result_route("/api/tasks/{task_id}/result")
async def get_result_api(
    task_id: TaskId,
    user: CurrentUser,
    db: AsyncDb,
    queue: Queue,
    waits: Waits,
    wait: WaitSeconds = 0,
) -> Response:
    return await _result(task_id, user.id, db, queue, waits, wait)


@router.delete(
    "/api/tasks/{task_id}",
    response_model=TaskDeleted,
    summary="Delete a task, its input and its result; a queued one never runs",
    responses={401: UNAUTHORIZED, 404: NOT_FOUND},
)
def delete_task(task_id: TaskId, db: DbSession, user: CurrentUser, queue: Queue) -> TaskDeleted:
    if not tasks.delete_task(db=db, user_id=user.id, task_id=task_id):
        raise not_found(task_id)
    queue.cancel(task_id, deleted=True)
    log.info("task %d deleted", task_id, extra={"task": task_id, "user": user.id})
    return TaskDeleted(id=task_id)


@router.post(
    "/api/tasks/{task_id}/cancel",
    response_model=TaskCanceled,
    summary="Cancel a queued or running task: it never produces a result",
    responses={
        401: UNAUTHORIZED,
        404: NOT_FOUND,
        409: {"model": Message, "description": "The task already ended"},
    },
)
def cancel_task(task_id: TaskId, db: DbSession, user: CurrentUser, queue: Queue) -> TaskCanceled:
    try:
        if not tasks.cancel_task(db=db, user_id=user.id, task_id=task_id):
            raise not_found(task_id)
    except tasks.TaskEnded as ended:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"Task {task_id} is already {ended.status.value}."
        ) from None
    queue.cancel(task_id)
    log.info("task %d canceled", task_id, extra={"task": task_id, "user": user.id})
    return TaskCanceled(id=task_id, status=TaskStatus.canceled)


@router.post(
    "/api/tasks/{task_id}/retry",
    response_model=TaskCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Run a failed or canceled task again, as a new task with the same input and options",
    responses={
        400: {"model": Message, "description": "A bad Idempotency-Key"},
        401: UNAUTHORIZED,
        403: {"model": Message, "description": "Its priority is above the caller's maximum now"},
        404: NOT_FOUND,
        409: {"model": Message, "description": "The task is queued, in progress or done"},
        413: {"model": Message, "description": "The user's storage quota is full"},
        **STORE_REFUSALS,
    },
)
async def retry_task(
    task_id: TaskId,
    user: CurrentUser,
    key: IdempotencyKeyHeader,
    settings: SettingsDep,
    db: AsyncDb,
    queue: Queue,
    queued: QueuedCount,
) -> TaskCreated:
    """docs/api.md §E14: the old task is kept; the new one is queued at the user's next turn.
    With an ``Idempotency-Key``, a repeated request answers the first one's task."""
    try:
        new = await db.read(lambda s: tasks.retry_of(db=s, user_id=user.id, task_id=task_id))
    except tasks.NotRetryable as kept:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"Task {task_id} is {kept.status.value}; only a failed or canceled task "
            "can be retried.",
        ) from None
    if new is None:
        raise not_found(task_id)
    allowed_priority(user, new.priority)
    created = await _store(db, user.id, new, settings, queued, key)
    queue.notify()
    log.info(
        "task %d retried as %d", task_id, created.ids[0], extra={"task": task_id, "user": user.id}
    )
    return TaskCreated(id=created.ids[0])


@router.get(
    "/api/tasks/{task_id}/webhooks",
    response_model=WebhookLog,
    summary="The task's webhook deliveries and every attempt made",
    responses={401: UNAUTHORIZED, 404: NOT_FOUND},
)
def get_webhook_log(task_id: TaskId, db: ReadDbSession, user: CurrentUser) -> WebhookLog:
    if tasks.get_task(db=db, user_id=user.id, task_id=task_id) is None:
        raise not_found(task_id)
    return WebhookLog(
        deliveries=[
            WebhookDeliveryOut(
                webhook_id=d.event_id,
                url=d.url,
                state=d.state,
                next_attempt_at=d.next_attempt_at if d.state == webhooks.PENDING else None,
                attempts=[WebhookAttemptOut.model_validate(a) for a in attempts],
            )
            for d, attempts in webhooks.deliveries_for_task(db=db, user_id=user.id, task_id=task_id)
        ]
    )
