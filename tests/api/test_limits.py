"""Abuse limits: failed logins, request rate, tasks waiting per user."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from harness.no_queue import NoQueue
from serve_app.main import create_app


@pytest.fixture
def strict_client(settings, registry, sessions):
    strict = settings.model_copy(
        update={
            "login_failures_per_minute": 3,
            "requests_per_minute": 8,
            "max_active_tasks_per_user": 2,
        }
    )
    app = create_app(settings=strict, registry=registry, session_factory=sessions, queue=NoQueue())
    with TestClient(app) as client:
        yield client


def test_repeated_failed_logins_are_answered_429(strict_client, make_user):
    make_user("first", "111")
    for _ in range(3):
        response = strict_client.post("/oauth/login", data={"username": "first", "password": "bad"})
        assert response.status_code == 422
    response = strict_client.post("/oauth/login", data={"username": "first", "password": "111"})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert "Too many failed logins" in response.json()["detail"]
    # another user name from the same client is not affected
    make_user("second", "222")
    assert (
        strict_client.post(
            "/oauth/login", data={"username": "second", "password": "222"}
        ).status_code
        == 200
    )


def test_tasks_waiting_and_request_rate_are_capped(strict_client, make_user, sample_jpeg):
    name, password = make_user()
    token = strict_client.post("/oauth/login", data={"username": name, "password": password})
    headers = {
        "Authorization": f"Bearer {token.json()['access_token']}",
        "Content-Type": "image/jpeg",
    }
    codes = [
        strict_client.post("/api/tasks", content=sample_jpeg, headers=headers).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    response = strict_client.post("/api/tasks", content=sample_jpeg, headers=headers)
    assert response.status_code == 429 and response.headers["retry-after"] == "5"
    assert "tasks waiting" in response.json()["detail"]
    statuses = [strict_client.get("/api/tasks", headers=headers).status_code for _ in range(6)]
    assert statuses[-1] == 429 and 200 in statuses
    assert "Too many requests" in strict_client.get("/api/tasks", headers=headers).json()["detail"]


def test_parallel_submissions_cannot_overrun_the_waiting_quota(
    settings, registry, sessions, make_user, sample_jpeg
):
    """Found by the outside review: the quota was an unlocked count, so parallel requests
    each passed it."""
    limited = settings.model_copy(
        update={"max_active_tasks_per_user": 4, "requests_per_minute": 10**6}
    )
    name, password = make_user()
    with TestClient(
        create_app(settings=limited, registry=registry, session_factory=sessions, queue=NoQueue())
    ) as client:
        token = client.post("/oauth/login", data={"username": name, "password": password})
        headers = {
            "Authorization": f"Bearer {token.json()['access_token']}",
            "Content-Type": "image/jpeg",
        }
        with ThreadPoolExecutor(16) as pool:
            codes = list(
                pool.map(
                    lambda _: (
                        client.post("/api/tasks", content=sample_jpeg, headers=headers).status_code
                    ),
                    range(32),
                )
            )
        assert codes.count(200) == 4 and codes.count(429) == 28
        listed = client.get("/api/tasks", headers=headers).json()["tasks"]
    assert len(listed) == 4
