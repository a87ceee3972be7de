"""Reading a task, held until it settles when the caller asks to wait (``?wait=``, ``Prefer:
wait``): the long poll's one path, whatever route answers it. The answer is always the task's
``ResultBody``: the one the queue that ended the task hands over, or the task read again."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from serve_app.services import Database, QueueLink
from serve_app.slots import UserSlots
from serve_app.tasks.dependencies import not_found
from storage import tasks
from storage.models import UNSETTLED_STATUSES
from storage.results import ResultBody

WaitSeconds = Annotated[
    float,
    Query(
        ge=0,
        le=30,
        description="Long poll: hold the answer up to this many seconds until the "
        "task is done, failed or canceled (0 answers at once)",
    ),
]


async def read_result(db: Database, user_id: int, task_id: int) -> ResultBody:
    """The caller's task as its result body, in one query; 404 when it is not theirs."""
    found = await db.read(
        lambda s: tasks.get_task_and_result(db=s, user_id=user_id, task_id=task_id)
    )
    if found is None:
        raise not_found(task_id)
    return ResultBody.of(*found)


async def settled_result(
    db: Database, queue: QueueLink, waits: UserSlots, user_id: int, task_id: int, wait: float
) -> ResultBody:
    """The caller's task; with ``wait``, once it settles or the wait runs out."""
    body = await read_result(db, user_id, task_id)
    if wait > 0 and body.status.value in UNSETTLED_STATUSES:
        # The queue registers the wait before it looks at the task itself, so a finish
        # between this read and the wait is still seen.
        return await waited_result(db, queue, waits, user_id, task_id, wait)
    return body


async def waited_result(
    db: Database,
    queue: QueueLink,
    waits: UserSlots,
    user_id: int,
    task_id: int,
    wait: float,
    *,
    notify: bool = False,
) -> ResultBody:
    """Wait for the caller's task (known to be theirs) to settle, up to ``wait`` seconds: the
    body the queue that ended it sends, else the task read again (404 when it was deleted
    meanwhile). A user already waiting on as many requests as allowed is answered at once
    instead. ``notify``: the task was just stored; wake the queue too."""
    with waits.slot(user_id) as granted:
        if granted:
            body = await queue.wait_finished(task_id, wait, notify=notify)
            if body is not None and body.task_id == task_id:
                return body
        elif notify:
            queue.notify()
    return await read_result(db, user_id, task_id)
