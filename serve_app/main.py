"""The FastAPI application factory. Nothing here runs at import time."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from config.registry import ModelType, Registry
from config.settings import Settings
from serve_app.auth.router import router as auth_router
from serve_app.catalog.router import router as catalog_router
from serve_app.ratelimit import SlidingWindow
from serve_app.tasks.router import router as tasks_router

T = TypeVar("T")
log = logging.getLogger(__name__)


async def _no_descriptions() -> dict[int, dict[str, Any]]:
    return {}


async def _no_waiting(_task_id: int, _timeout: float) -> None:
    return None


def create_app(
    *,
    settings: Settings,
    registry: Registry,
    session_factory: sessionmaker[Session],
    notify_queue: Callable[[], None] = lambda: None,
    describe_models: Callable[[], Awaitable[dict[int, dict[str, Any]]]] = _no_descriptions,
    wait_finished: Callable[[int, float], Awaitable[None]] = _no_waiting,
) -> FastAPI:
    """Build the API. ``notify_queue`` wakes the task queue after a task is stored;
    ``describe_models`` reports what each model deployment says about itself;
    ``wait_finished(task_id, seconds)`` returns when a task settles (long polling)."""
    app = FastAPI(
        title="Primitives",
        version="0.1.0",
        description="Finds geometric primitives (sphere, cube, cylinder, cone, pyramid) and "
                    "the scene class in images, asynchronously. Log in at /oauth/login, "
                    "submit at POST /api/tasks, poll the status, read the result.",
    )

    async def run_db(fn: Callable[[Session], T]) -> T:
        def call() -> T:
            with session_factory() as db:
                return fn(db)

        return await run_in_threadpool(call)

    app.state.settings = settings
    app.state.registry = registry
    app.state.session_factory = session_factory
    app.state.run_db = run_db
    app.state.notify_queue = notify_queue
    app.state.describe_models = describe_models
    app.state.wait_finished = wait_finished
    app.state.login_failures = SlidingWindow(settings.login_failures_per_minute)
    app.state.request_rate = SlidingWindow(settings.requests_per_minute)
    app.add_exception_handler(SQLAlchemyTimeoutError, _database_unavailable)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.include_router(auth_router)
    app.include_router(tasks_router)
    app.include_router(catalog_router)
    _document_model_ids(app, registry)
    return app


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """Out of database connections, or the database is restarting: a retryable 503."""
    log.warning("database unavailable: %s", exc)
    return JSONResponse({"detail": "The database is busy or unavailable; retry shortly."},
                        status_code=503, headers={"Retry-After": "2"})


def _document_model_ids(app: FastAPI, registry: Registry) -> None:
    """Name the valid model ids in the schema: they come from the registry, not the code."""
    from fastapi.openapi.utils import get_openapi

    ids = {"detection_model_id": registry.of_type(ModelType.detection),
           "classification_model_id": registry.of_type(ModelType.classification)}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            for param in schema["paths"]["/api/tasks"]["post"].get("parameters", []):
                if param["name"] in ids:
                    param["schema"]["enum"] = [m.id for m in ids[param["name"]]]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
