"""The task API: submit an image, list tasks, read status, input and result, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from config.registry import ModelType
from serve_app.auth.dependencies import CurrentUser
from serve_app.database import DbSession
from serve_app.tasks import service
from serve_app.tasks.images import ImageRejected, validate_image
from serve_app.tasks.models import TaskStatus
from serve_app.tasks.schemas import (
    Message,
    TaskCreated,
    TaskList,
    TaskResultOut,
    TaskStatusOut,
    TaskSummary,
    result_payload,
)

router = APIRouter(tags=["tasks"])

NOT_FOUND = {"model": Message, "description": "No such task among the caller's tasks"}
UNAUTHORIZED = {"model": Message, "description": "Not authenticated"}
TaskId = Annotated[int, Path(description="The task's id")]
WaitSeconds = Annotated[float, Query(
    ge=0, le=30, description="Long poll: hold the answer up to this many seconds until the "
                             "task is done or failed (0 answers at once)")]
MULTIPART_OVERHEAD = 64 * 1024
UNSETTLED = (TaskStatus.queued.value, TaskStatus.in_progress.value)


def not_found(task_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND,
                         detail=f"Task with id {task_id} does not exist.")


async def _settled_task(request: Request, user: CurrentUser, task_id: int, wait: float):
    """The caller's task; with ``wait``, re-read once it settles or the wait runs out."""
    run_db = request.app.state.run_db

    def read():
        return run_db(lambda db: service.get_task(db=db, user_id=user.id, task_id=task_id))

    task = await read()
    if task is not None and wait > 0 and task.status in UNSETTLED:
        await request.app.state.wait_finished(task.id, wait)
        task = await read()
    if task is None:
        raise not_found(task_id)
    return task


async def read_upload(request: Request, limit: int) -> bytes:
    """The image bytes of a raw or multipart body, refusing bodies over ``limit`` early."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = content_type == "multipart/form-data"
    cap = limit + (MULTIPART_OVERHEAD if multipart else 0)
    too_large = HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                              detail=f"The image is larger than the limit of {limit} bytes.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > cap:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    if not multipart:
        return body
    request._body = body  # starlette parses the form from the cached body
    try:
        form = await request.form(max_files=1, max_fields=8)
    except (MultiPartException, StarletteHTTPException) as exc:
        reason = exc.message if isinstance(exc, MultiPartException) else exc.detail
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            detail=f"Malformed multipart body: {reason}") from exc
    try:
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        if not files:
            raise HTTPException(status.HTTP_400_BAD_REQUEST,
                                detail="The multipart body has no file: send the image in a "
                                       "field named 'file'.")
        data = await files[0].read()
    finally:
        await form.close()
    if len(data) > limit:
        raise too_large
    return data


def parse_model_id(raw: str | None, default: int, model_type: ModelType, request: Request) -> int:
    registry = request.app.state.registry
    value = default if raw is None else raw.strip()
    try:
        model_id = int(value)
    except ValueError:
        model_id = -1
    if registry.get(model_id, model_type) is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=registry.wrong_id_message())
    return model_id


_MODEL_ID_PARAMS = [
    {"name": "detection_model_id", "in": "query", "required": False,
     "description": "Detection model id (see GET /api/models); default 1",
     "schema": {"type": "integer", "default": 1}},
    {"name": "classification_model_id", "in": "query", "required": False,
     "description": "Classification model id (see GET /api/models); default 3",
     "schema": {"type": "integer", "default": 3}},
]
_IMAGE_BODY = {"required": True, "content": {
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}}}},
}}


@router.post(
    "/api/tasks",
    response_model=TaskCreated,
    summary="Submit an image; the task is stored as queued before the id is returned",
    openapi_extra={"parameters": _MODEL_ID_PARAMS, "requestBody": _IMAGE_BODY},
    responses={
        400: {"model": Message, "description": "Unknown model id, or an undecodable image"},
        401: UNAUTHORIZED,
        413: {"model": Message, "description": "Body or pixel count over the limit"},
        415: {"model": Message, "description": "Not a JPEG or PNG"},
        429: {"model": Message, "description": "Too many tasks waiting, or too many requests"},
    },
)
async def create_task(request: Request, user: CurrentUser) -> TaskCreated:
    settings = request.app.state.settings
    params = request.query_params
    detection_id = parse_model_id(params.get("detection_model_id"),
                                  settings.default_detection_model_id, ModelType.detection,
                                  request)
    classification_id = parse_model_id(params.get("classification_model_id"),
                                       settings.default_classification_model_id,
                                       ModelType.classification, request)
    body = await read_upload(request, settings.max_upload_bytes)
    try:
        # Decoding can take a while for a large PNG: off the event loop.
        info = await run_in_threadpool(validate_image, body,
                                       max_pixels=settings.max_image_pixels)
    except ImageRejected as exc:
        raise HTTPException(exc.status_code, detail=exc.detail) from exc
    limit = settings.max_active_tasks_per_user

    def store(db) -> int | None:
        if service.count_active(db=db, user_id=user.id) >= limit:
            return None
        return service.create_task(db=db, user_id=user.id, detection_model_id=detection_id,
                                   classification_model_id=classification_id, image=body,
                                   media_type=info.media_type).id

    task_id = await request.app.state.run_db(store)
    if task_id is None:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            detail=f"You have {limit} tasks waiting, the most allowed; submit "
                                   "more when some have finished.",
                            headers={"Retry-After": "5"})
    request.app.state.notify_queue()
    return TaskCreated(id=task_id)


@router.get("/api/tasks", response_model=TaskList, summary="The caller's tasks, by id",
            responses={401: UNAUTHORIZED})
def list_tasks(
    db: DbSession,
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
async def get_status(request: Request, task_id: TaskId, user: CurrentUser,
                     wait: WaitSeconds = 0) -> TaskStatusOut:
    task = await _settled_task(request, user, task_id, wait)
    return TaskStatusOut(id=task.id, status=TaskStatus(task.status))


@router.get(
    "/api/tasks/{task_id}/input",
    summary="The submitted image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}, 401: UNAUTHORIZED,
               404: NOT_FOUND},
)
def get_input(task_id: TaskId, db: DbSession, user: CurrentUser) -> Response:
    found = service.get_input(db=db, user_id=user.id, task_id=task_id)
    if found is None:
        raise not_found(task_id)
    media_type, data = found
    return Response(content=data, media_type=media_type)


async def _result_body(request: Request, task_id: int, user: CurrentUser,
                       wait: float) -> JSONResponse:
    task = await _settled_task(request, user, task_id, wait)
    body: dict[str, Any] = {"id": task.id, "status": task.status, "result": None}
    if task.status == TaskStatus.done:
        stored = await request.app.state.run_db(
            lambda db: service.get_result(db=db, task_id=task.id))
        if stored is not None:
            body["result"] = result_payload(stored.image_class, stored.primitives, stored.details)
    elif task.status == TaskStatus.failed:
        body["error"] = task.error or "the task failed"
    return JSONResponse(body)


_RESULT_DOC = {"response_model": TaskResultOut,
               "summary": "A task's result (null until done; optionally held until it finishes)",
               "responses": {401: UNAUTHORIZED, 404: NOT_FOUND}}


@router.get("/tasks/{task_id}/result", **_RESULT_DOC)
async def get_result(request: Request, task_id: TaskId, user: CurrentUser,
                     wait: WaitSeconds = 0) -> JSONResponse:
    return await _result_body(request, task_id, user, wait)


@router.get("/api/tasks/{task_id}/result", **_RESULT_DOC)
async def get_result_api(request: Request, task_id: TaskId, user: CurrentUser,
                         wait: WaitSeconds = 0) -> JSONResponse:
    return await _result_body(request, task_id, user, wait)


@router.delete("/api/tasks/{task_id}", response_model=TaskCreated,
               summary="Delete a task, its input and its result; a queued one never runs",
               responses={401: UNAUTHORIZED, 404: NOT_FOUND})
def delete_task(task_id: TaskId, db: DbSession, user: CurrentUser) -> TaskCreated:
    if not service.delete_task(db=db, user_id=user.id, task_id=task_id):
        raise not_found(task_id)
    return TaskCreated(id=task_id)
