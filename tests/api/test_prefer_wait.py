"""`Prefer: wait=N` on POST /api/tasks: one request per task, answered with the result route's
body once the task settles (or after N seconds), over a real PostgreSQL. The queue link here
finishes the task while the request waits, as the real queue would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from harness.no_queue import NoQueue
from serve_app.main import create_app
from storage import claims
from storage.models import Task
from tests.api.conftest import claim_batch

CUBE = {
    "primitive_class": "cube",
    "x": 0.5,
    "y": 0.4,
    "width": 0.2,
    "height": 0.1,
    "rotation": 0.25,
    "probability": 0.9,
}


class FinishingQueue(NoQueue):
    """Records each wait; with ``finish`` on, runs the queue's side during the wait."""

    def __init__(self, sessions) -> None:
        self.sessions = sessions
        self.finish = True
        self.waits: list[tuple[int, float, bool]] = []
        self.notified = 0

    def notify(self) -> None:
        self.notified += 1

    async def wait_finished(self, task_id: int, timeout: float, *, notify: bool = False) -> None:
        self.waits.append((task_id, timeout, notify))
        if not self.finish:
            return
        with self.sessions() as db:
            for claim in claim_batch(db=db, limit=100, lease_seconds=60):
                claims.complete(
                    db=db,
                    claim=claim,
                    image_class="office",
                    primitives=[CUBE],
                    details={"detection_model": "YOLO"},
                )


@pytest.fixture
def queue(sessions) -> FinishingQueue:
    return FinishingQueue(sessions)


@pytest.fixture
def client(settings, registry, sessions, read_sessions, queue) -> Iterator[TestClient]:
    app = create_app(
        settings=settings,
        registry=registry,
        session_factory=sessions,
        read_session_factory=read_sessions,
        queue=queue,
    )
    with TestClient(app) as test_client:
        yield test_client


def post(client, headers, image: bytes, prefer: str | None = None, **extra: str):
    more = {"Prefer": prefer} if prefer is not None else {}
    return client.post(
        "/api/tasks",
        content=image,
        headers={**headers, "Content-Type": "image/jpeg", **more, **extra},
    )


def test_prefer_wait_answers_with_the_result_body_in_one_request(client, alice, sample_jpeg, queue):
    response = post(client, alice, sample_jpeg, "wait=20")
    assert response.status_code == 200, response.text
    assert response.headers["Preference-Applied"] == "wait=20"
    body = response.json()
    assert body["status"] == "done"
    assert body["result"]["image_class"] == "office"
    assert body["result"]["primitives"] == [CUBE]
    assert "error" not in body
    # The same body the result route gives; the queue was woken by the wait itself.
    assert client.get(f"/tasks/{body['id']}/result", headers=alice).json() == body
    assert queue.waits == [(body["id"], 20, True)] and queue.notified == 0


def test_not_settled_in_time_answers_the_status_and_keeps_the_task(
    client, alice, sample_jpeg, queue, sessions
):
    queue.finish = False
    response = post(client, alice, sample_jpeg, "wait=1")
    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "wait=1"
    body = response.json()
    assert body == {"id": body["id"], "status": "queued", "result": None}
    with sessions() as db:
        assert db.scalar(select(Task.status).where(Task.id == body["id"])) == "queued"


@pytest.mark.parametrize(
    ("prefer", "applied"),
    [
        ("wait=600", "wait=60"),
        ("respond-async, wait=5", "wait=5"),
        ('WAIT="7"', "wait=7"),
        ("wait=3; foo=bar", "wait=3"),
    ],
)
def test_the_wait_is_read_as_rfc_7240_says_and_capped_at_60(
    client, alice, sample_jpeg, queue, prefer, applied
):
    response = post(client, alice, sample_jpeg, prefer)
    assert response.headers["Preference-Applied"] == applied
    assert queue.waits[0][1] == int(applied.split("=")[1])


@pytest.mark.parametrize(
    "prefer", ["wait=0", "wait=abc", "wait=-3", "wait", "return=minimal", "wait=99999999999"]
)
def test_without_a_usable_wait_the_answer_is_the_seeds(client, alice, sample_jpeg, queue, prefer):
    response = post(client, alice, sample_jpeg, prefer)
    assert response.status_code == 200
    assert set(response.json()) == {"id"}
    assert "Preference-Applied" not in response.headers
    assert queue.waits == [] and queue.notified == 1


def test_a_batch_ignores_the_preference(client, alice, sample_jpeg, queue):
    files = [("file", (f"{i}.jpg", sample_jpeg, "image/jpeg")) for i in range(2)]
    response = client.post("/api/tasks", files=files, headers={**alice, "Prefer": "wait=5"})
    assert response.status_code == 200
    assert set(response.json()) == {"ids"}
    assert "Preference-Applied" not in response.headers
    assert queue.waits == []


def test_a_replay_waits_for_the_same_task_without_a_second(
    client, alice, sample_jpeg, queue, sessions
):
    queue.finish = False
    key = {"Idempotency-Key": "sync-1"}
    first = post(client, alice, sample_jpeg, "wait=2", **key).json()
    queue.finish = True
    again = post(client, alice, sample_jpeg, "wait=2", **key)
    assert again.json()["id"] == first["id"] and again.json()["status"] == "done"
    assert [(w[0], w[2]) for w in queue.waits] == [(first["id"], True), (first["id"], False)]
    with sessions() as db:
        assert len(db.scalars(select(Task.id)).all()) == 1


def test_errors_come_before_any_wait(client, alice, sample_jpeg, queue):
    response = client.post(
        "/api/tasks?detection_model_id=3",
        content=sample_jpeg,
        headers={**alice, "Content-Type": "image/jpeg", "Prefer": "wait=5"},
    )
    assert response.status_code == 400
    assert "Preference-Applied" not in response.headers
    assert queue.waits == []


class HoldingQueue(NoQueue):
    """Holds every wait until ``release`` is set (a task that takes long)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def wait_finished(self, task_id: int, timeout: float, *, notify: bool = False) -> None:
        self.waiting += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), timeout)


def test_one_users_waiting_requests_are_capped_and_the_rest_answered_at_once(
    settings, registry, sessions, read_sessions, alice, sample_jpeg
):
    """Found by the outside review: long polls per user were unbounded (each holds a
    connection and a waiter in the queue)."""
    queue = HoldingQueue()
    capped = settings.model_copy(update={"waits_per_user": 2})
    app = create_app(
        settings=capped,
        registry=registry,
        session_factory=sessions,
        read_session_factory=read_sessions,
        queue=queue,
    )
    with TestClient(app) as client, ThreadPoolExecutor(4) as pool:
        task_id = post(client, alice, sample_jpeg).json()["id"]
        held = [
            pool.submit(client.get, f"/api/tasks/{task_id}/status?wait=30", headers=alice)
            for _ in range(2)
        ]
        deadline = time.monotonic() + 10
        while queue.waiting < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        third = client.get(f"/api/tasks/{task_id}/result?wait=30", headers=alice)
        assert third.status_code == 200 and third.json()["status"] == "queued"
        assert time.monotonic() - started < 5 and queue.waiting == 2
        assert client.portal is not None
        client.portal.call(queue.release.set)
        assert [f.result().json()["status"] for f in held] == ["queued", "queued"]
