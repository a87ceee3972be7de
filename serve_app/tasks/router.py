"""The task API: submit images, list tasks, read status, input, result and its picture,
cancel, delete, and read a task's webhook deliveries."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from config.settings import Settings
from observability import tracing
from serve_app.auth.dependencies import CurrentUser
from serve_app.dependencies import (
    AsyncDb,
    Database,
    DbSession,
    Drawing,
    Pictures,
    Queue,
    QueuedCount,
    ReadDbSession,
    ReadSessionFactory,
    RecentCount,
    SettingsDep,
    Waits,
)
from serve_app.tasks.dependencies import (
    ClassificationModelId,
    DetectionModelId,
    IdempotencyKeyHeader,
    PreferWait,
    UploadedImages,
    WebhookUrl,
)
from serve_app.tasks.schemas import (
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
from serve_app.tasks.visualize import Busy, draw_result
from storage import tasks, webhooks
from storage.models import (
    DEFAULT_PRIORITY,
    PRIORITIES,
    UNSETTLED_STATUSES,
    Task,
    TaskResult,
    TaskStatus,
    input_path,
)
from storage.results import result_body, result_payload

router = APIRouter(tags=["tasks"])
# Under Serve's logger: its JSON lines and log files, with this module named.
log = logging.getLogger(f"ray.serve.{__name__}")

NOT_FOUND = {"model": Message, "description": "No such task among the caller's tasks"}
UNAUTHORIZED = {"model": Message, "description": "Not authenticated"}


async def task_id_of(task_id: Annotated[int, Path(description="The task's id")]) -> int:
    """The path's task id; 404 for one no task can have (the one place the range is
    checked: the storage functions take it as given)."""
    if not 0 < task_id <= tasks.MAX_TASK_ID:
        raise not_found(task_id)
    return task_id


TaskId = Annotated[int, Depends(task_id_of)]
WaitSeconds = Annotated[
    float,
    Query(
        ge=0,
        le=30,
        description="Long poll: hold the answer up to this many seconds until the "
        "task is done, failed or canceled (0 answers at once)",
    ),
]
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
_IMAGE_BODY = {
    "required": True,
    "content": {
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["image_url"],
                "additionalProperties": False,
                "properties": {
                    "image_url": {
                        "type": "string",
                        "maxLength": 2048,
                        "description": "An http(s) URL of a JPEG or PNG the platform fetches "
                        "(public addresses only; redirects checked; size and time limits)",
                    }
                },
            }
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": 'one image (answered {"id"}), or several (one task '
                        'each, answered {"ids"}, all or none)',
                    }
                },
            }
        },
    },
}


def not_found(task_id: int) -> HTTPException:
    return HTTPException(
        status.HTTP_404_NOT_FOUND, detail=f"Task with id {task_id} does not exist."
    )


async def _settled_task(
    db: AsyncDb, queue: Queue, waits: Waits, user_id: int, task_id: int, wait: float
) -> tuple[Task, TaskResult | None] | dict[str, Any]:
    """The caller's task and its result, in one query; with ``wait``, once the task settles
    or the wait runs out (``_waited_task``)."""
    found = await _read_task(db, user_id, task_id)
    if found is None:
        raise not_found(task_id)
    if wait > 0 and found[0].status in UNSETTLED_STATUSES:
        # The queue registers the wait before it looks at the task itself, so a finish
        # between this read and the wait is still seen.
        return await _waited_task(db, queue, waits, user_id, task_id, wait)
    return found


async def _waited_task(
    db: AsyncDb,
    queue: Queue,
    waits: Waits,
    user_id: int,
    task_id: int,
    wait: float,
    *,
    notify: bool = False,
) -> tuple[Task, TaskResult | None] | dict[str, Any]:
    """Wait for the caller's task (known to be theirs) to settle, up to ``wait`` seconds: the
    result route's body when the queue that ended it sends it, else the task read again.
    A user already waiting on as many requests as allowed is answered at once instead."""
    with waits.slot(user_id) as granted:
        if granted:
            body = await queue.wait_finished(task_id, wait, notify=notify)
            if body is not None and body.get("id") == task_id:
                return body
        elif notify:
            queue.notify()
    found = await _read_task(db, user_id, task_id)
    if found is None:  # deleted while it was waited for
        raise not_found(task_id)
    return found


def _read_task(
    db: AsyncDb, user_id: int, task_id: int
) -> Awaitable[tuple[Task, TaskResult | None] | None]:
    return db.read(lambda s: tasks.get_task_and_result(db=s, user_id=user_id, task_id=task_id))


# How storing tasks (``_store``) may be refused, on every route that stores some.
STORE_REFUSALS: dict[int | str, dict[str, Any]] = {
    429: {"model": Message, "description": "Too many tasks waiting, or too many requests"},
    503: {
        "model": Message,
        "description": "The platform's queue is full, or nearly full and you hold your share "
        "of it (Retry-After)",
    },
}


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
    openapi_extra={"requestBody": _IMAGE_BODY},
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
        found = await _waited_task(
            db, queue, waits, user.id, created.ids[0], prefer, notify=not created.replayed
        )
        return JSONResponse(_result_body(found), headers={"Preference-Applied": f"wait={prefer}"})
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


LIST_PAGE = 1000


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
    found = await _settled_task(db, queue, waits, user.id, task_id, wait)
    if isinstance(found, dict):
        return TaskStatusOut(id=task_id, status=TaskStatus(found["status"]))
    return TaskStatusOut(id=found[0].id, status=TaskStatus(found[0].status))


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
    task_id: int, user_id: int, db: AsyncDb, queue: Queue, waits: Waits, wait: float
) -> TaskResultOut | Response:
    found = await _settled_task(db, queue, waits, user_id, task_id, wait)
    if isinstance(found, dict):  # the body as the queue stored it
        return JSONResponse(found)
    return _result_out(*found)


def _result_body(found: tuple[Task, TaskResult | None] | dict[str, Any]) -> dict[str, Any]:
    """The result route's body, as JSON values, from the queue's body or the task read."""
    if isinstance(found, dict):
        return found
    return _result_out(*found).model_dump(mode="json", exclude_unset=True)


def _result_out(task: Task, stored: TaskResult | None) -> TaskResultOut:
    """The result route's body for a task and its stored result (None until done), built by
    storage.results as the queue and the webhooks build it."""
    status_ = TaskStatus(task.status)
    result = (
        result_payload(stored.image_class, stored.primitives, stored.details)
        if status_ is TaskStatus.done and stored is not None
        else None
    )
    return TaskResultOut.model_validate(
        result_body(
            task_id=task.id,
            status=status_,
            result=result,
            error=task.error,
            priority=task.priority,
            deadline_s=task.deadline_s,
        )
    )


def _result_route(path: str):
    # exclude_unset: `error` appears only for a failed task, `result` always (null until done).
    return router.get(
        path,
        response_model=TaskResultOut,
        response_model_exclude_unset=True,
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
) -> TaskResultOut | Response:
    return await _result(task_id, user.id, db, queue, waits, wait)


@_result_route("/api/tasks/{task_id}/result")
async def get_result_api(
    task_id: TaskId,
    user: CurrentUser,
    db: AsyncDb,
    queue: Queue,
    waits: Waits,
    wait: WaitSeconds = 0,
) -> TaskResultOut | Response:
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


_PICTURE_TYPES = ("image/png", "image/jpeg")


def _picture_type(accept: str | None) -> str:
    """PNG unless the Accept header prefers JPEG."""
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in _PICTURE_TYPES:
            return media
    return "image/png"


@router.get(
    "/api/tasks/{task_id}/visualization",
    summary="The input with the detected primitives and scene class drawn on it",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}}},
        401: UNAUTHORIZED,
        404: NOT_FOUND,
        409: {"model": Message, "description": "The task is not done"},
        429: {"model": Message, "description": "Too many of your pictures are being drawn at once"},
    },
)
async def get_visualization(
    task_id: TaskId,
    user: CurrentUser,
    db: AsyncDb,
    pictures: Pictures,
    drawing: Drawing,
    min_probability: Annotated[float, Query(ge=0, le=1, description="hide weaker boxes")] = 0,
    accept: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    found = await db.read(
        lambda s: tasks.get_task_and_result(db=s, user_id=user.id, task_id=task_id)
    )
    if found is None:
        raise not_found(task_id)
    task, stored = found
    if task.status != TaskStatus.done.value or stored is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"Task {task_id} is not done.")
    media_type = _picture_type(accept)
    # A result never changes, so its picture is named by the task, the options and the
    # result's time: clients and proxies may keep it (privately) and revalidate for free.
    etag = (
        '"'
        + hashlib.sha256(
            f"{task.id}:{stored.created_at.isoformat()}:{min_probability}:{media_type}".encode()
        ).hexdigest()[:32]
        + '"'
    )
    headers = {"ETag": etag, "Cache-Control": "private, max-age=86400", "Vary": "Accept"}
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    picture = pictures.get(etag)
    if picture is None:
        try:
            async with drawing.slot(user.id):
                picture = await _draw(db, user.id, task_id, stored, min_probability, media_type)
        except Busy:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail="Too many of your pictures are being drawn at once; try again in a moment.",
                headers={"Retry-After": "1"},
            ) from None
        pictures.put(etag, picture)
    return Response(content=picture, media_type=media_type, headers=headers)


async def _draw(
    db: AsyncDb,
    user_id: int,
    task_id: int,
    stored: TaskResult,
    min_probability: float,
    media_type: str,
) -> bytes:
    found_input = await db.read(lambda s: tasks.get_input(db=s, user_id=user_id, task_id=task_id))
    if found_input is None:  # deleted in between
        raise not_found(task_id)
    return await run_in_threadpool(
        draw_result,
        found_input[1],
        image_class=stored.image_class,
        primitives=stored.primitives,
        min_probability=min_probability,
        media_type=media_type,
    )


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
