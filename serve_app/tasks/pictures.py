"""A done task's picture (docs/api.md §E1): its input with the primitives and the scene class
drawn on it, as PNG or JPEG by the Accept header, named by an ETag (a result never changes, so
clients revalidate for free) and kept in the replica's ``PictureCache``. Drawing decodes the
whole input, so a user draws at most a few at once (``DrawingSlots``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response, status
from starlette.concurrency import run_in_threadpool

from serve_app.auth.dependencies import CurrentUser
from serve_app.dependencies import AsyncDb, Drawing, Pictures
from serve_app.services import Database
from serve_app.slots import Busy
from serve_app.tasks.dependencies import TaskId, not_found
from serve_app.tasks.schemas import NOT_FOUND, UNAUTHORIZED, Message
from serve_app.tasks.visualize import draw_result, picture_etag, picture_type
from storage import tasks
from storage.models import TaskResult, TaskStatus

router = APIRouter(tags=["tasks"])


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
    media_type = picture_type(accept)
    etag = picture_etag(task.id, stored.created_at, min_probability, media_type)
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
    db: Database,
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
