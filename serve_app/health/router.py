"""Liveness and readiness (docs/api.md §E5), for load balancers and orchestrators: no token,
nothing about versions, paths or secrets."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from serve_app.dependencies import Queue, ReadSessionFactory, ReadyCacheDep, RegistryDep
from serve_app.services import ReadyCache

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 3.0
# /readyz answers from the last check this young: anyone may call it, and each check asks the
# database, the queue and every model deployment.
READY_CACHE_S = 2.0
clock = time.monotonic


class Alive(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"


class NotReady(BaseModel):
    status: Literal["not ready"] = "not ready"
    failing: list[str]


@router.get("/healthz", response_model=Alive, summary="The ingress process serves")
def healthz() -> Alive:
    return Alive()


@router.get(
    "/readyz",
    response_model=Ready,
    summary="The database, the task queue and every model's replicas answer",
    responses={503: {"model": NotReady, "description": "What is not ready"}},
)
async def readyz(
    sessions: ReadSessionFactory, queue: Queue, registry: RegistryDep, cache: ReadyCacheDep
) -> Ready | JSONResponse:
    if not _fresh(cache):
        async with cache.lock:  # callers that arrive meanwhile take this check's answer
            if not _fresh(cache):
                cache.failing = await _failing(sessions, queue, registry)
                cache.taken_at = clock()
    if cache.failing:
        return JSONResponse(NotReady(failing=cache.failing).model_dump(), status_code=503)
    return Ready()


def _fresh(cache: ReadyCache) -> bool:
    return clock() - cache.taken_at < READY_CACHE_S


async def _failing(sessions, queue, registry) -> list[str]:
    def database_answers() -> bool:
        with sessions() as db:
            return db.execute(text("SELECT 1")).scalar() == 1

    async def within(check, default):
        try:
            return await asyncio.wait_for(check, CHECK_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - whatever went wrong, the part is not ready
            return default

    database, queue_ready, models = await asyncio.gather(
        within(run_in_threadpool(database_answers), False),
        within(queue.ready(), False),
        within(queue.describe_models(), {}),
    )
    failing = [] if database else ["database"]
    if not queue_ready:
        failing.append("queue")
    failing += [m.name for m in registry.models if not models.get(m.id, {}).get("ready")]
    return failing
