"""What routes depend on, as FastAPI dependencies: each hands out one part of the app's
``AppServices`` (serve_app/services.py), which ``create_app`` puts on the app. Routes read it
only through here, declaring what they need (``settings: SettingsDep``), so tests can swap any
part; the app's error handlers and lifespan read it directly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from config.registry import Registry
from config.settings import Settings
from serve_app.auth.guard import LoginGuard
from serve_app.ratelimit import Limiter
from serve_app.services import AppServices, Database, QueueLink, ReadyCache, RecentCount
from serve_app.slots import DrawingSlots, UserSlots
from serve_app.tasks.visualize import PictureCache


# The dependencies that only hand out a part are ``async``: FastAPI runs a plain ``def``
# dependency in its thread pool, a hand-off per dependency per request.
async def get_services(request: Request) -> AppServices:
    services: AppServices = request.app.state.services
    return services


Services = Annotated[AppServices, Depends(get_services)]


async def get_settings(services: Services) -> Settings:
    return services.settings


async def get_registry(services: Services) -> Registry:
    return services.registry


async def get_read_session_factory(services: Services) -> sessionmaker[Session]:
    return services.read_sessions


async def get_session_factory(services: Services) -> sessionmaker[Session]:
    return services.sessions


def get_db(services: Services) -> Iterator[Session]:
    """One session for the request (sync routes that write)."""
    with services.sessions() as session:
        yield session


def get_read_db(services: Services) -> Iterator[Session]:
    """One autocommit session for the request (sync routes that only read)."""
    with services.read_sessions() as session:
        yield session


async def get_database(services: Services) -> Database:
    return services.database


async def get_ready_cache(services: Services) -> ReadyCache:
    return services.ready


async def get_queued(services: Services) -> RecentCount:
    return services.queued


async def get_queue(services: Services) -> QueueLink:
    return services.queue


async def get_waits(services: Services) -> UserSlots:
    return services.waits


async def get_streams(services: Services) -> UserSlots:
    return services.streams


async def get_pictures(services: Services) -> PictureCache:
    return services.pictures


async def get_drawing(services: Services) -> DrawingSlots:
    return services.drawing


async def get_login_guard(services: Services) -> LoginGuard:
    return services.login_guard


async def get_request_rate(services: Services) -> Limiter:
    return services.request_rate


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
ReadSessionFactory = Annotated[sessionmaker[Session], Depends(get_read_session_factory)]
SessionFactory = Annotated[sessionmaker[Session], Depends(get_session_factory)]
DbSession = Annotated[Session, Depends(get_db)]
ReadDbSession = Annotated[Session, Depends(get_read_db)]
AsyncDb = Annotated[Database, Depends(get_database)]
Queue = Annotated[QueueLink, Depends(get_queue)]
QueuedCount = Annotated[RecentCount, Depends(get_queued)]
LoginGuardDep = Annotated[LoginGuard, Depends(get_login_guard)]
Pictures = Annotated[PictureCache, Depends(get_pictures)]
# Requests of one user held open waiting for a task (long polls, Prefer: wait) in this
# replica, each holding a connection and a waiter in the queue; beyond the cap a request is
# answered at once with the task as it is.
Waits = Annotated[UserSlots, Depends(get_waits)]
Drawing = Annotated[DrawingSlots, Depends(get_drawing)]
Streams = Annotated[UserSlots, Depends(get_streams)]
RequestRate = Annotated[Limiter, Depends(get_request_rate)]
ReadyCacheDep = Annotated[ReadyCache, Depends(get_ready_cache)]
