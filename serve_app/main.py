"""The FastAPI application factory. Nothing here runs at import time."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from config.registry import Registry
from config.settings import Environment, Settings
from observability import tracing
from serve_app.account.router import router as account_router
from serve_app.auth.router import router as auth_router
from serve_app.catalog.router import router as catalog_router
from serve_app.health.router import router as health_router
from serve_app.keys.router import router as keys_router
from serve_app.services import AppServices, QueueLink
from serve_app.tasks.errors import register as register_task_errors
from serve_app.tasks.events import router as events_router
from serve_app.tasks.pictures import router as pictures_router
from serve_app.tasks.router import router as tasks_router
from serve_app.web import router as web

# Under Serve's logger (the ingress replica runs this): its JSON lines and log files.
log = logging.getLogger(f"ray.serve.{__name__}")


def create_app(
    *,
    settings: Settings,
    registry: Registry,
    session_factory: sessionmaker[Session],
    read_session_factory: sessionmaker[Session] | None = None,
    queue: QueueLink,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Build the API over a database (``read_session_factory``: autocommit sessions for
    reads, the main factory when not given) and the task queue (``queue``: wakes it after a
    task is stored, waits for tasks to settle, describes the models; the Ray actors in
    production, harness.NoQueue where nothing runs the tasks)."""
    app = FastAPI(
        title="Primitives",
        version="0.1.0",
        description="Finds geometric primitives (sphere, cube, cylinder, cone, pyramid) and "
        "the scene class in images, asynchronously. Log in at /oauth/login, "
        "submit at POST /api/tasks, poll the status (or pass a webhook), read "
        "the result or its picture. The web page is at /.",
        # The interactive docs load their scripts from a CDN onto this origin: development
        # only. Production serves the schema alone (/openapi.json).
        docs_url=None if settings.environment is Environment.production else "/docs",
        redoc_url=None if settings.environment is Environment.production else "/redoc",
        lifespan=_lifespan,
    )
    app.state.services = AppServices.create(
        settings=settings,
        registry=registry,
        sessions=session_factory,
        read_sessions=read_session_factory or session_factory,
        queue=queue,
        clock=clock,
    )
    if tracing.configure("primitives-api"):  # OTEL_* set: a span per request (§E15)
        app.add_middleware(tracing.TraceMiddleware)
    register_task_errors(app)
    app.add_exception_handler(SQLAlchemyTimeoutError, _database_unavailable)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.include_router(auth_router)
    app.include_router(events_router)  # before /api/tasks/{task_id}: "events" is no id
    app.include_router(tasks_router)
    app.include_router(pictures_router)
    app.include_router(catalog_router)
    app.include_router(account_router)
    app.include_router(keys_router)
    app.include_router(health_router)
    web.mount(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """What the app holds open beyond a request is closed when the app stops (the image
    fetcher's connections)."""
    yield
    services: AppServices = app.state.services
    await services.fetcher.close()


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """Out of database connections, or the database is restarting: a retryable 503."""
    log.warning("database unavailable: %s", exc)
    return JSONResponse(
        {"detail": "The database is busy or unavailable; retry shortly."},
        status_code=503,
        headers={"Retry-After": "2"},
    )
