"""Helpers the integration tests share: submit over HTTP, reach the queue's dispatchers,
pause them, count result rows."""

from __future__ import annotations

import contextlib

import ray
from sqlalchemy import func, select

from storage.database import make_engine, make_session_factory
from storage.models import TaskResult


def submit(http, headers, image: bytes, detection: int = 1, classification: int = 3) -> int:
    response = http.post(
        f"/api/tasks?detection_model_id={detection}&classification_model_id={classification}",
        content=image,
        headers={**headers, "Content-Type": "image/jpeg"},
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def queue_actors() -> list:
    """Every dispatcher of the queue (serve_config.yaml runs more than one), the first first."""
    from config.serve_config import load_app_config
    from deployments.dispatchers import Dispatchers

    dispatchers = Dispatchers(load_app_config().args.queue.dispatchers)
    return [dispatchers.get(i) for i in range(dispatchers.count)]


def queue_actor():
    """The queue's first dispatcher (it also keeps the books)."""
    return queue_actors()[0]


@contextlib.contextmanager
def paused_queue():
    """No dispatcher claims anything in the block (running tasks finish)."""
    ray.get([d.pause.remote() for d in queue_actors()])
    try:
        yield
    finally:
        ray.get([d.resume.remote() for d in queue_actors()])


def result_rows(database_url: str, task_ids: list[int]) -> dict[int, int]:
    engine = make_engine(database_url)
    with make_session_factory(engine)() as db:
        rows = db.execute(
            select(TaskResult.task_id, func.count())
            .where(TaskResult.task_id.in_(task_ids))
            .group_by(TaskResult.task_id)
        ).all()
    engine.dispose()
    return dict(rows)
