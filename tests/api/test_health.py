"""Health (docs/api.md §E5): liveness needs nothing; readiness names what is not ready."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from harness.no_queue import NoQueue
from serve_app.main import create_app
from storage.database import make_engine, make_session_factory
from tests.api.conftest import Running


def _client(settings, registry, sessions, read_sessions, queue) -> TestClient:
    return TestClient(
        create_app(
            settings=settings,
            registry=registry,
            session_factory=sessions,
            read_session_factory=read_sessions,
            queue=queue,
        )
    )


def test_liveness_needs_no_token_and_no_database(settings, registry):
    nowhere = make_session_factory(make_engine("postgresql+psycopg2://x@127.0.0.1:1/none"))
    with _client(settings, registry, nowhere, nowhere, NoQueue()) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_the_database_the_queue_and_every_model_answer(
    settings, registry, sessions, read_sessions
):
    with _client(settings, registry, sessions, read_sessions, Running(registry)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_a_model_without_a_ready_replica_is_named(settings, registry, sessions, read_sessions):
    with _client(
        settings, registry, sessions, read_sessions, Running(registry, down=("SSD",))
    ) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "failing": ["SSD"]}


def test_no_queue_and_no_database_are_named(settings, registry):
    engine = make_engine("postgresql+psycopg2://x@127.0.0.1:1/none")
    nowhere = make_session_factory(engine)
    with _client(settings, registry, nowhere, nowhere, NoQueue()) as client:
        response = client.get("/readyz")
    engine.dispose()
    assert response.status_code == 503
    assert response.json() == {
        "status": "not ready",
        "failing": ["database", "queue", "YOLO", "SSD", "model_v1"],
    }


class Counting(Running):
    def __init__(self, registry):
        super().__init__(registry)
        self.asked = 0

    async def describe_models(self) -> dict[int, dict[str, Any]]:
        self.asked += 1
        return await super().describe_models()


def test_readiness_is_checked_at_most_every_two_seconds(
    settings, registry, sessions, read_sessions, monkeypatch
):
    """Found by the outside review: every unauthenticated call asked every model."""
    from serve_app.health import router as health

    queue = Counting(registry)
    now = [1000.0]
    monkeypatch.setattr(health, "clock", lambda: now[0])
    with _client(settings, registry, sessions, read_sessions, queue) as client:
        assert all(client.get("/readyz").status_code == 200 for _ in range(20))
        assert queue.asked == 1
        now[0] += health.READY_CACHE_S
        assert client.get("/readyz").status_code == 200 and queue.asked == 2
