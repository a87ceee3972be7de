"""Limits counted in the database: two ingress replicas (two apps over one database) share
one count, and the count does not reset at a window's edge."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from harness.no_queue import NoQueue
from serve_app.main import create_app
from serve_app.ratelimit import BatchedWindow, SharedWindow
from storage.models import RateCounter


class FixedClock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


# Ten seconds into a minute: the per-minute windows are read as a sliding estimate, and a
# test's events must not straddle an edge (the edge has its own test).
EARLY_IN_A_MINUTE = 1_800_000_000.0 + 10


@pytest.fixture
def replicas(settings, registry, sessions, read_sessions):
    # A write per request (no batching): the replicas see each other's counts at once.
    strict = settings.model_copy(
        update={
            "login_failures_per_minute": 3,
            "requests_per_minute": 6,
            "limits_storage": "database",
            "limits_flush_seconds": 0,
        }
    )
    clock = FixedClock(EARLY_IN_A_MINUTE)
    clients = [
        TestClient(
            create_app(
                settings=strict,
                registry=registry,
                session_factory=sessions,
                read_session_factory=read_sessions,
                clock=clock,
                queue=NoQueue(),
            )
        )
        for _ in range(2)
    ]
    for client in clients:
        client.__enter__()
    yield clients
    for client in clients:
        client.__exit__(None, None, None)


def test_two_replicas_share_one_request_count(replicas, make_user):
    name, password = make_user()
    token = replicas[0].post("/oauth/login", data={"username": name, "password": password})
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    turns = itertools.cycle(replicas)
    codes = [next(turns).get("/api/tasks", headers=headers).status_code for _ in range(8)]
    # Six between them, not six each.
    assert codes == [200] * 6 + [429, 429]
    refused = replicas[1].get("/api/tasks", headers=headers)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["detail"].startswith("Too many requests; try again in")


def test_two_replicas_share_one_count_of_failed_logins(replicas, make_user):
    make_user("carol", "right-pw")
    for client in (replicas[0], replicas[0], replicas[1]):
        wrong = client.post("/oauth/login", data={"username": "carol", "password": "wrong"})
        assert wrong.status_code == 422
    blocked = replicas[1].post("/oauth/login", data={"username": "carol", "password": "right-pw"})
    assert blocked.status_code == 429
    assert blocked.json()["detail"].startswith("Too many failed logins")


def test_the_count_does_not_reset_at_a_windows_edge(sessions):
    clock = FixedClock(EARLY_IN_A_MINUTE)
    window = SharedWindow(sessions, limit=5, prefix="edge", window=60.0, clock=clock)
    now = clock()
    previous = datetime.fromtimestamp(now - now % 60 - 60, UTC)
    with sessions() as db:
        db.add(RateCounter(key="edge:k", window_start=previous, count=60))
        db.commit()
    # The previous window weighs by the share of it the last 60 s still cover: 60 events in
    # it keep the estimate over 5 until 55 s into this window (a fixed window would reset).
    assert window.retry_after("k") >= 1
    clock.now += 44  # 54 s in: 60 x 6/60 = 6 events still weigh, over 5
    assert window.retry_after("k") >= 1
    # ...and once the previous window is out of the slide, allowed.
    with sessions() as db:
        db.query(RateCounter).filter_by(key="edge:k").update(
            {"window_start": previous - timedelta(seconds=60)}
        )
        db.commit()
    assert window.retry_after("k") == 0
    assert [window.take("k") for _ in range(6)][-1] >= 1


def test_batched_counts_are_shared_after_a_flush_and_overshoot_at_most_one_batch(sessions):
    clock = FixedClock(EARLY_IN_A_MINUTE)
    replicas = [
        BatchedWindow(sessions, limit=4, prefix="batched", flush_seconds=60, clock=clock)
        for _ in range(2)
    ]
    # Unflushed, each replica sees only its own requests: 3 + 3 pass a limit of 4.
    assert [replicas[0].take("u") for _ in range(3)] == [0, 0, 0]
    assert [replicas[1].take("u") for _ in range(3)] == [0, 0, 0]
    for replica in replicas:
        replica.flush()
    with sessions() as db:
        stored = db.scalars(select(RateCounter.count).where(RateCounter.key == "batched:u"))
        assert list(stored) == [6]
    # A flush reads the shared count back: the replica that flushed last knows all 6; the
    # other one learns them at its next flush (one more request passes meanwhile).
    assert replicas[1].take("u") >= 1
    assert replicas[0].take("u") == 0
    replicas[0].flush()
    assert replicas[0].take("u") >= 1
    # The next window still weighs this one (sliding estimate), then it is free again.
    clock.now += 60
    assert replicas[1].retry_after("u") >= 1
    clock.now += 60
    assert replicas[0].retry_after("u") == 0


def test_the_flusher_writes_the_counts_without_a_request_waiting(sessions):
    window = BatchedWindow(sessions, limit=100, prefix="flusher", flush_seconds=0.1)
    for _ in range(5):
        assert window.take("v") == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with sessions() as db:
            if db.scalar(select(RateCounter.count).where(RateCounter.key == "flusher:v")) == 5:
                return
        time.sleep(0.05)
    raise AssertionError("the counts never reached the database")
