"""How the task storage's refusals answer over HTTP (docs/api.md §E10), registered with the app
(``register``): the routes that store tasks let them rise, and each becomes the status, the
``detail`` and the headers the contract gives it."""

from __future__ import annotations

from typing import Any, cast

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from serve_app.services import AppServices
from storage import tasks


def _services(request: Request) -> AppServices:
    return cast(AppServices, request.app.state.services)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


async def over_quota(request: Request, _exc: Exception) -> JSONResponse:
    limit = _services(request).settings.max_active_tasks_per_user
    return JSONResponse(
        {
            "detail": f"You may have {limit} tasks waiting; this request would pass that. "
            "Submit more when some have finished."
        },
        status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        headers={"Retry-After": "5"},
    )


async def queue_full(request: Request, exc: Exception) -> JSONResponse:
    full = cast(tasks.QueueFull, exc)
    services = _services(request)
    services.queued.read(full.queued)  # a fresh count: the next submissions judge by it
    if full.share is not None:
        detail = (
            f"The platform's queue is nearly full ({full.queued} of {full.limit} tasks "
            f"waiting); past {tasks.COUNT_QUEUE_ABOVE:.0%} of it each user may have "
            f"{full.share} tasks waiting or running, and this request would give you "
            f"{full.holding}. Nothing was stored. Try again after the Retry-After seconds."
        )
    else:
        detail = (
            f"The platform's queue is full ({full.limit} tasks waiting); nothing was "
            "stored. Try again after the Retry-After seconds."
        )
    return JSONResponse(
        {"detail": detail},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(services.settings.queue_full_retry_after_seconds)},
    )


async def over_storage(_request: Request, exc: Exception) -> JSONResponse:
    over = cast(tasks.OverStorage, exc)
    return JSONResponse(
        {
            "detail": f"Your stored images take {_mb(over.stored)} of your "
            f"{_mb(over.limit)}; these {_mb(over.adding)} would pass that. Delete tasks you "
            "no longer need to make room."
        },
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
    )


async def key_reused(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse(
        {
            "detail": "This Idempotency-Key was already used with a different image, model "
            "ids or webhook; use a new key for a new request."
        },
        status_code=status.HTTP_409_CONFLICT,
    )


HANDLERS: dict[type[Exception], Any] = {
    tasks.OverQuota: over_quota,
    tasks.QueueFull: queue_full,
    tasks.OverStorage: over_storage,
    tasks.KeyReused: key_reused,
}


def register(app: FastAPI) -> None:
    """Answer the storage's refusals on every route of ``app``."""
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
