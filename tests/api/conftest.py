"""The API over a real PostgreSQL, without Ray: the app factory with no queue behind it."""

from __future__ import annotations

import asyncio
import io
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from config.settings import Settings
from harness.no_queue import NoQueue
from serve_app.cli import main
from serve_app.main import create_app
from storage.catalog import sync_models
from storage.database import make_engine, make_session_factory
from storage.users import create_user, set_max_priority

JWT_SECRET = secrets.token_urlsafe(48)  # random: the production checks judge it


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        jwt_secret=JWT_SECRET,
        environment="development",
        max_upload_bytes=2 * 1024 * 1024,
        max_image_pixels=4_000_000,
    )


@pytest.fixture(scope="session")
def sessions(settings: Settings, registry):
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    with factory() as db:
        sync_models(db=db, registry=registry)
    yield factory
    engine.dispose()


@pytest.fixture(scope="session")
def read_sessions(settings: Settings):
    """Autocommit sessions, as the ingress reads through."""
    engine = make_engine(settings.database_url, autocommit=True)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(autouse=True)
def _clean_tables(sessions) -> Iterator[None]:
    """Each test starts, and leaves, with no users or tasks."""
    yield
    with sessions() as db:
        db.execute(
            text("TRUNCATE task_result, task_input, task, user_account, rate_counter CASCADE")
        )
        db.commit()


class Notifications(NoQueue):
    """A queue link that counts the wake-ups and cancellations the API sends (no queue runs
    in these tests)."""

    def __init__(self) -> None:
        self.count = 0
        self.canceled: list[int] = []

    def notify(self) -> None:
        self.count += 1

    def cancel(self, task_id: int, *, deleted: bool = False) -> None:
        if not deleted:
            self.canceled.append(task_id)


@pytest.fixture
def notifications() -> Notifications:
    return Notifications()


@contextmanager
def serving(settings, registry, sessions, read_sessions, queue) -> Iterator[TestClient]:
    """The API over the test database, with these settings and this queue link."""
    app = create_app(
        settings=settings,
        registry=registry,
        session_factory=sessions,
        read_session_factory=read_sessions,
        queue=queue,
    )
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def client(settings, registry, sessions, read_sessions, notifications) -> Iterator[TestClient]:
    with serving(settings, registry, sessions, read_sessions, notifications) as test_client:
        yield test_client


@pytest.fixture
def make_user(sessions):
    """Create a user (random name unless given); returns (username, password)."""

    def make(
        username: str | None = None, password: str = "pw-123456", max_priority: int = 5
    ) -> tuple[str, str]:
        username = username or f"user_{uuid.uuid4().hex[:8]}"
        with sessions() as db:
            create_user(db=db, username=username, password=password)
            if max_priority != 5:
                set_max_priority(db=db, username=username, priority=max_priority)
        return username, password

    return make


@pytest.fixture
def login(client):
    """Log in through the real endpoint; returns the Authorization header."""

    def do(username: str, password: str) -> dict[str, str]:
        response = client.post("/oauth/login", data={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    return do


@pytest.fixture
def alice(make_user, login) -> dict[str, str]:
    return login(*make_user("alice"))


@pytest.fixture
def bob(make_user, login) -> dict[str, str]:
    return login(*make_user("bob"))


def submit(client, headers, image: bytes, **params) -> int:
    """POST one image; its task id (the answer must be 200)."""
    response = client.post(
        "/api/tasks",
        params=params,
        content=image,
        headers={**headers, "Content-Type": "image/jpeg"},
    )
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


def claim_batch(*, db, limit: int, lease_seconds: float, running=()) -> list:
    """Claim as the queue does (storage.claims.claim_tasks_with_inputs), without the images."""
    from storage import claims

    return [
        c.claim
        for c in claims.claim_tasks_with_inputs(
            db=db, limit=limit, lease_seconds=lease_seconds, running=running
        )
    ]


@pytest.fixture
def finish(sessions):
    """Run the queue's side by hand: claim the queued tasks and store ``primitives`` and the
    scene class for them, as the queue would after running the models."""
    from storage import claims

    def do(primitives: list[dict], image_class: str = "office") -> list[int]:
        with sessions() as db:
            claimed = claim_batch(db=db, limit=100, lease_seconds=60)
            for claim in claimed:
                assert claims.complete(
                    db=db,
                    claim=claim,
                    image_class=image_class,
                    primitives=primitives,
                    details={"detection_model": "t"},
                )
        return [c.task_id for c in claimed]

    return do


@pytest.fixture
def cli(monkeypatch, settings):
    monkeypatch.setenv("PRIMITIVES_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PRIMITIVES_ENVIRONMENT", "development")
    monkeypatch.setenv("PRIMITIVES_JWT_SECRET", settings.jwt_secret.get_secret_value())
    from config.settings import get_settings

    get_settings.cache_clear()

    def run(*args: str, stdin: str = "") -> int:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        return main(list(args))

    yield run
    get_settings.cache_clear()


class Running(NoQueue):
    """A queue link whose queue answers and whose models are ready, but for ``down``."""

    def __init__(self, registry, down: tuple[str, ...] = ()):
        self.registry, self.down = registry, down

    async def ready(self) -> bool:
        return True

    async def describe_models(self) -> dict[int, dict[str, Any]]:
        return {m.id: {"ready": m.name not in self.down} for m in self.registry.models}


def run_queue_until_done(sessions, run_models, count: int) -> Any:
    """The real dispatcher over the test database and ``run_models``, in this thread, until
    ``count`` tasks ended done or failed."""
    from storage.claims import ClaimStore
    from taskqueue import Dispatcher

    dispatcher = Dispatcher(
        store=ClaimStore(sessions),
        run_models=run_models,
        concurrency=16,
        lease_seconds=30,
        poll_seconds=0.02,
        max_attempts=3,
    )

    async def go() -> None:
        loop = asyncio.create_task(dispatcher.dispatch_loop())
        deadline = time.monotonic() + 120
        while dispatcher.stats.done + dispatcher.stats.failed < count:
            assert time.monotonic() < deadline, dispatcher.stats
            await asyncio.sleep(0.05)
        loop.cancel()
        await asyncio.sleep(0.1)

    asyncio.run(go())
    return dispatcher
