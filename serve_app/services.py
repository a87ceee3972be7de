"""What the app's routes stand on, made once per app by ``create_app``: settings, registry,
database, the link to the task queue, limiters, slots, caches. ``AppServices`` holds them
all; serve_app/dependencies.py hands each part to the routes that declare it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from config.registry import Registry
from config.settings import Settings
from serve_app.auth.guard import LoginGuard, parse_networks
from serve_app.ratelimit import Limiter, make_limiter
from serve_app.slots import DrawingSlots, UserSlots
from serve_app.tasks.fetch import ImageFetcher
from serve_app.tasks.visualize import PictureCache
from storage.database import Sessions
from storage.results import ResultBody
from webhooks.urls import Resolver

T = TypeVar("T")


class QueueLink(Protocol):
    """What the API asks of the task queue (the Ray actors in production,
    deployments/ingress.py; harness.NoQueue in the API tests)."""

    def notify(self) -> None:
        """A task was stored: look for work now (fire and forget; the queue also polls)."""

    def cancel(self, task_id: int, *, deleted: bool = False) -> None:
        """The task was canceled (or ``deleted``): stop its run now and wake its waiters
        (fire and forget); a cancel is counted as the task's outcome, a deletion is not."""

    async def ready(self) -> bool:
        """Whether the queue answers."""

    async def wait_finished(
        self, task_id: int, timeout: float, *, notify: bool = False
    ) -> ResultBody | None:
        """Return once the task is done, failed, canceled or gone, or after ``timeout``
        seconds: the task's result body when the queue ended it itself (the caller answers
        it without reading the task again), else None. ``notify``: the task was just stored,
        so look for work first (one call where ``notify()`` and this would be two). Called
        only for a task the caller has just stored or read unsettled."""

    async def describe_models(self) -> dict[int, dict[str, Any]]:
        """What each model deployment reports about itself, by model id."""


class Database:
    """``Sessions`` for async routes: each call runs in the thread pool, in a short session
    of its own (``run`` in a transaction, ``read`` on an autocommit connection)."""

    def __init__(self, sessions: Sessions):
        self.sessions = sessions

    async def run(self, fn: Callable[[Session], T]) -> T:
        return await run_in_threadpool(self.sessions.run, fn)

    async def read(self, fn: Callable[[Session], T]) -> T:
        return await run_in_threadpool(self.sessions.read, fn)


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


@dataclass
class ReadyCache:
    """The last readiness answer (serve_app/health/router.py) and when it was taken; one
    check at a time per replica."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    taken_at: float = -1e9
    failing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AppServices:
    settings: Settings
    registry: Registry
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]  # autocommit: reads only
    database: Database  # both, one short session per call, for async routes
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
    ready: ReadyCache

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

        def limiter(per_minute: int, name: str, *, batched: bool = False) -> Limiter:
            return make_limiter(settings, sessions, per_minute, name, batched=batched, clock=clock)

        resolver = Resolver(
            threads=settings.webhook_dns_threads, timeout_s=settings.webhook_dns_timeout_seconds
        )
        guard = LoginGuard(
            failures=limiter(settings.login_failures_per_minute, "login"),
            account_failures=limiter(
                settings.login_failures_per_account_per_minute, "login-account"
            ),
            address_failures=limiter(
                settings.login_failures_per_address_per_minute, "login-address"
            ),
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
            database=Database(Sessions(sessions, read_sessions)),
            queue=queue,
            login_guard=guard,
            request_rate=limiter(settings.requests_per_minute, "requests", batched=True),
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
            ready=ReadyCache(),
        )
