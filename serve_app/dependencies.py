"""What routes depend on, as FastAPI dependencies: settings, registry, database, queue link and
limiters. ``create_app`` puts one typed ``AppServices`` on the app; only this module reads it,
so route code declares what it needs (``settings: SettingsDep``) and tests can swap any part."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from config.registry import Registry
from config.settings import Settings
from serve_app.auth.guard import LoginGuard, parse_networks
from serve_app.ratelimit import BatchedWindow, Limiter, SharedWindow, SlidingWindow, UserSlots
from serve_app.tasks.fetch import ImageFetcher
from serve_app.tasks.visualize import DrawingSlots, PictureCache
from webhooks.urls import Resolver

T = TypeVar("T")


class QueueLink(Protocol):
    """What the API asks of the task queue (the Ray actor in production)."""

    def notify(self) -> None:
        """A task was stored: look for work now (fire and forget; the queue also polls)."""

    def cancel(self, task_id: int, *, deleted: bool = False) -> None:
        """The task was canceled (or ``deleted``): stop its run now and wake its waiters
        (fire and forget); a cancel is counted as the task's outcome, a deletion is not."""

    async def ready(self) -> bool:
        """Whether the queue answers."""

    async def wait_finished(
        self, task_id: int, timeout: float, *, notify: bool = False
    ) -> dict[str, Any] | None:
        """Return once the task is done, failed, canceled or gone, or after ``timeout``
        seconds: the task's result route body when the queue ended it itself (the caller
        answers it without reading the task again), else None. ``notify``: the task was
        just stored, so look for work first (one call where ``notify()`` and this would be
        two). Called only for a task the caller has just stored or read unsettled."""

    async def describe_models(self) -> dict[int, dict[str, Any]]:
        """What each model deployment reports about itself, by model id."""


class NoQueue:
    """No queue behind the API (the API tests): stored tasks stay queued."""

    def notify(self) -> None:
        return None

    def cancel(self, task_id: int, *, deleted: bool = False) -> None:
        return None

    async def ready(self) -> bool:
        return False  # nothing runs the stored tasks

    async def wait_finished(
        self, task_id: int, timeout: float, *, notify: bool = False
    ) -> dict[str, Any] | None:
        return None

    async def describe_models(self) -> dict[int, dict[str, Any]]:
        return {}


class Database:
    """Runs a function with its own short session in the thread pool (async routes): ``run``
    in a transaction, ``read`` on an autocommit connection (no BEGIN/ROLLBACK round trips)."""

    def __init__(self, sessions: sessionmaker[Session], read_sessions: sessionmaker[Session]):
        self.sessions, self.read_sessions = sessions, read_sessions

    async def run(self, fn: Callable[[Session], T]) -> T:
        return await run_in_threadpool(self._call, self.sessions, fn)

    async def read(self, fn: Callable[[Session], T]) -> T:
        return await run_in_threadpool(self._call, self.read_sessions, fn)

    @staticmethod
    def _call(sessions: sessionmaker[Session], fn: Callable[[Session], T]) -> T:
        with sessions() as db:
            return fn(db)


@dataclass(frozen=True)
class Caller:
    """The authenticated user, as routes see it."""

    id: int
    username: str
    max_priority: int = 5  # the highest priority the user may ask for (docs/api.md §E10)
    # The API key the request came with (docs/api.md §E12); None for a password login's token.
    key_id: int | None = None


def load_caller(
    sessions: sessionmaker[Session], user_id: int, issued_at: float | None = None
) -> Caller | None:
    """The user with this id, read in a session of its own (blocking); None when there is
    none, or when a token issued at ``issued_at`` predates the user's last password change
    or logout."""
    from storage.users import get_caller

    with sessions() as db:
        user = get_caller(db=db, user_id=user_id)
        if user is None:
            return None
        revoked = user.tokens_valid_after
        if revoked is not None and issued_at is not None:
            if revoked.tzinfo is None:  # SQLite hands back naive UTC
                revoked = revoked.replace(tzinfo=UTC)
            if issued_at < revoked.timestamp():
                return None
        return Caller(id=user.id, username=user.username, max_priority=user.max_priority)


def load_key_caller(sessions: sessionmaker[Session], key: str) -> Caller | None:
    """The owner of a live API key, read (and the key marked used) in a session of its own
    (blocking); None for a malformed, unknown or revoked key."""
    from storage.keys import caller_for_key

    with sessions() as db:
        row = caller_for_key(db=db, key=key)
        if row is None:
            return None
        return Caller(id=row[0], username=row[1], max_priority=row[2], key_id=row[3])


class RecentCount:
    """A count read from the database, trusted for ``max_age`` seconds and kept up with what
    this process added since (the platform's queued tasks: a submission far under the cap
    need not count them)."""

    def __init__(self, max_age: float = 0.5, clock: Callable[[], float] = time.monotonic):
        self.max_age, self.clock = max_age, clock
        self._value: int | None = None
        self._read_at = 0.0

    def get(self) -> int | None:
        """The count, or None when never read or too old."""
        if self._value is None or self.clock() - self._read_at > self.max_age:
            return None
        return self._value

    def read(self, value: int) -> None:
        """A fresh count."""
        self._value, self._read_at = value, self.clock()

    def add(self, count: int) -> None:
        """This process added ``count``."""
        if self._value is not None:
            self._value += count


@dataclass(frozen=True)
class AppServices:
    settings: Settings
    registry: Registry
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]  # autocommit: reads only
    queue: QueueLink
    login_guard: LoginGuard
    request_rate: Limiter
    pictures: PictureCache
    drawing: DrawingSlots
    waits: UserSlots
    streams: UserSlots  # open event streams (docs/api.md §E11), per user in this replica
    queued: RecentCount  # the platform's queued tasks, as last counted here
    resolver: Resolver  # webhook and image hosts' DNS lookups, on threads of their own
    fetcher: ImageFetcher  # images by URL (docs/api.md §E13)
    fetches: UserSlots  # image fetches under way, per user in this replica

    @classmethod
    def create(
        cls,
        *,
        settings: Settings,
        registry: Registry,
        sessions: sessionmaker[Session],
        read_sessions: sessionmaker[Session],
        queue: QueueLink,
        clock: Callable[[], float] = time.time,
    ) -> AppServices:
        """``clock``: the wall clock the shared rate windows count minutes by."""
        login_failures: Limiter
        account_failures: Limiter
        address_failures: Limiter
        request_rate: Limiter
        if settings.limits_storage == "database":
            login_failures = SharedWindow(
                sessions, settings.login_failures_per_minute, "login", clock=clock
            )
            account_failures = SharedWindow(
                sessions,
                settings.login_failures_per_account_per_minute,
                "login-account",
                clock=clock,
            )
            address_failures = SharedWindow(
                sessions,
                settings.login_failures_per_address_per_minute,
                "login-address",
                clock=clock,
            )
            request_rate = (
                BatchedWindow(
                    sessions,
                    settings.requests_per_minute,
                    "requests",
                    flush_seconds=settings.limits_flush_seconds,
                    clock=clock,
                )
                if settings.limits_flush_seconds > 0
                else SharedWindow(sessions, settings.requests_per_minute, "requests", clock=clock)
            )
        else:
            login_failures = SlidingWindow(settings.login_failures_per_minute)
            account_failures = SlidingWindow(settings.login_failures_per_account_per_minute)
            address_failures = SlidingWindow(settings.login_failures_per_address_per_minute)
            request_rate = SlidingWindow(settings.requests_per_minute)
        resolver = Resolver(
            threads=settings.webhook_dns_threads, timeout_s=settings.webhook_dns_timeout_seconds
        )
        guard = LoginGuard(
            failures=login_failures,
            account_failures=account_failures,
            address_failures=address_failures,
            concurrency=settings.login_concurrency,
            queue=settings.login_queue,
            trusted_proxies=parse_networks(settings.trusted_proxies),
            local_proxy=settings.behind_local_haproxy,
        )
        return cls(
            settings=settings,
            registry=registry,
            sessions=sessions,
            read_sessions=read_sessions,
            queue=queue,
            login_guard=guard,
            request_rate=request_rate,
            pictures=PictureCache(),
            drawing=DrawingSlots(
                per_user=settings.drawings_per_user, total=settings.drawings_per_replica
            ),
            waits=UserSlots(per_user=settings.waits_per_user),
            streams=UserSlots(per_user=settings.event_streams_per_user),
            queued=RecentCount(),
            resolver=resolver,
            fetcher=ImageFetcher(
                resolver,
                max_bytes=settings.max_upload_bytes,
                timeout_s=settings.image_fetch_timeout_seconds,
                max_redirects=settings.image_fetch_max_redirects,
            ),
            fetches=UserSlots(per_user=settings.image_fetches_per_user),
        )


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
    return Database(services.sessions, services.read_sessions)


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
