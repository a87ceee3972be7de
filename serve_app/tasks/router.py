"""The task API: submit an image, list tasks, read status, input and result, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from serve_app.auth.dependencies import CurrentUser
from serve_app.dependencies import AsyncDb, DbSession, Queue, ReadDbSession, SettingsDep
from serve_app.tasks import service
from serve_app.tasks.dependencies import ClassificationModelId, DetectionModelId, UploadedImages
from serve_app.tasks.schemas import (
    Message,
    Prediction,
    TaskCreated,
    TaskList,
    TaskResultOut,
    TasksCreated,
    TaskStatusOut,
    TaskSummary,
    result_payload,
)
from storage.models import Task, TaskResult, TaskStatus

router = APIRouter(tags=["tasks"])

NOT_FOUND = {"model": Message, "description": "No such task among the caller's tasks"}
UNAUTHORIZED = {"model": Message, "description": "Not authenticated"}
TaskId = Annotated[int, Path(description="The task's id")]
WaitSeconds = Annotated[float, Query(
    ge=0, le=30, description="Long poll: hold the answer up to this many seconds until the "
                             "task is done or failed (0 answers at once)")]
UNSETTLED = (TaskStatus.queued.value, TaskStatus.in_progress.value)
_IMAGE_BODY = {"required": True, "content": {
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "one image (answered {\"id\"}), or several (one task "
                                "each, answered {\"ids\"}, all or none)"}}}},
}}


def not_found(task_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND,
                         detail=f"Task with id {task_id} does not exist.")


async def _settled_task(db: AsyncDb, queue: Queue, user_id: int, task_id: int,
                        wait: float) -> tuple[Task, TaskResult | None]:
    """The caller's task and its result, in one query; with ``wait``, read again once the
    task settles or the wait runs out."""

    def read():
        return db.read(lambda s: service.get_task_and_result(db=s, user_id=user_id,
                                                             task_id=task_id))

    found = await read()
    if found is not None and wait > 0 and found[0].status in UNSETTLED:
        # The queue registers the wait before it looks at the task itself, so a finish
        # between this read and the wait is still seen.
        await queue.wait_finished(task_id, wait)
        found = await read()
    if found is None:
        raise not_found(task_id)
    return found


@router.post(
    "/api/tasks",
    response_model=TaskCreated | TasksCreated,
    summary="Submit an image (or several, multipart); stored as queued before the answer",
    # The body is read by the UploadedImage dependency (raw or multipart): described here.
    openapi_extra={"requestBody": _IMAGE_BODY},
    responses={
        400: {"model": Message, "description": "Unknown model id, or an undecodable image"},
        401: UNAUTHORIZED,
        413: {"model": Message, "description": "Body or pixel count over the limit"},
        415: {"model": Message, "description": "Not a JPEG or PNG"},
        429: {"model": Message, "description": "Too many tasks waiting, or too many requests"},
    },
)
async def create_task(user: CurrentUser, detection_id: DetectionModelId,
                      classification_id: ClassificationModelId, uploads: UploadedImages,
                      settings: SettingsDep, db: AsyncDb,
                      queue: Queue) -> TaskCreated | TasksCreated:
    limit = settings.max_active_tasks_per_user
    ids = await db.run(lambda s: service.create_tasks_within_quota(
        db=s, user_id=user.id, detection_model_id=detection_id,
        classification_model_id=classification_id,
        images=[(u.data, u.media_type) for u in uploads.images], max_active=limit))
    if ids is None:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            detail=f"You may have {limit} tasks waiting; this request would "
                                   "pass that. Submit more when some have finished.",
                            headers={"Retry-After": "5"})
    queue.notify()
    return TasksCreated(ids=ids) if uploads.batch else TaskCreated(id=ids[0])


@router.get("/api/tasks", response_model=TaskList, summary="The caller's tasks, by id",
            responses={401: UNAUTHORIZED})
def list_tasks(
    db: ReadDbSession,
    user: CurrentUser,
    status_filter: Annotated[TaskStatus | None, Query(alias="status")] = None,
    after_id: Annotated[int, Query(ge=0, le=service.MAX_TASK_ID,
                                   description="only tasks with a larger id")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> TaskList:
    tasks = service.list_tasks(db=db, user_id=user.id, status=status_filter, after_id=after_id,
                               limit=limit)
    return TaskList(tasks=[TaskSummary.model_validate(t) for t in tasks])


@router.get("/api/tasks/{task_id}/status", response_model=TaskStatusOut,
            summary="A task's status (optionally held until it finishes)",
            responses={401: UNAUTHORIZED, 404: NOT_FOUND})
async def get_status(task_id: TaskId, user: CurrentUser, db: AsyncDb, queue: Queue,
                     wait: WaitSeconds = 0) -> TaskStatusOut:
    task, _ = await _settled_task(db, queue, user.id, task_id, wait)
    return TaskStatusOut(id=task.id, status=TaskStatus(task.status))


@router.get(
    "/api/tasks/{task_id}/input",
    summary="The submitted image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}, 401: UNAUTHORIZED,
               404: NOT_FOUND},
)
def get_input(task_id: TaskId, db: ReadDbSession, user: CurrentUser) -> Response:
    found = service.get_input(db=db, user_id=user.id, task_id=task_id)
    if found is None:
        raise not_found(task_id)
    media_type, data = found
    return Response(content=data, media_type=media_type)


async def _result(task_id: int, user_id: int, db: AsyncDb, queue: Queue,
                  wait: float) -> TaskResultOut:
    task, stored = await _settled_task(db, queue, user_id, task_id, wait)
    status_ = TaskStatus(task.status)
    if status_ is TaskStatus.failed:
        return TaskResultOut(id=task.id, status=status_, result=None,
                             error=task.error or "the task failed")
    prediction = None
    if status_ is TaskStatus.done and stored is not None:
        prediction = Prediction.model_validate(
            result_payload(stored.image_class, stored.primitives, stored.details))
    return TaskResultOut(id=task.id, status=status_, result=prediction)


def _result_route(path: str):
    # exclude_unset: `error` appears only for a failed task, `result` always (null until done).
    return router.get(path, response_model=TaskResultOut, response_model_exclude_unset=True,
                      summary="A task's result (null until done; optionally held until it "
                              "finishes)",
                      responses={401: UNAUTHORIZED, 404: NOT_FOUND})


@_result_route("/tasks/{task_id}/result")
async def get_result(task_id: TaskId, user: CurrentUser, db: AsyncDb, queue: Queue,
                     wait: WaitSeconds = 0) -> TaskResultOut:
    return await _result(task_id, user.id, db, queue, wait)


@_result_route("/api/tasks/{task_id}/result")
async def get_result_api(task_id: TaskId, user: CurrentUser, db: AsyncDb, queue: Queue,
                         wait: WaitSeconds = 0) -> TaskResultOut:
    return await _result(task_id, user.id, db, queue, wait)


@router.delete("/api/tasks/{task_id}", response_model=TaskCreated,
               summary="Delete a task, its input and its result; a queued one never runs",
               responses={401: UNAUTHORIZED, 404: NOT_FOUND})
def delete_task(task_id: TaskId, db: DbSession, user: CurrentUser) -> TaskCreated:
    if not service.delete_task(db=db, user_id=user.id, task_id=task_id):
        raise not_found(task_id)
    return TaskCreated(id=task_id)
