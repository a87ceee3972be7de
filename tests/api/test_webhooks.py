"""Signed webhooks (docs/api.md §E4) against real HTTP receivers on loopback: the API stores
the URL, settling a task stores the delivery, the sender signs, retries and logs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from config.settings import Settings
from harness.no_queue import NoQueue
from serve_app.main import create_app
from tests.api.conftest import JWT_SECRET, submit
from tests.receiver import Receiver
from webhooks import signing
from webhooks.sender import DeliveryStore, WebhookSender


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


def _receiver(receivers, statuses, delay_s=0.0) -> Receiver:
    receivers.append(Receiver(statuses, delay_s))
    return receivers[-1]


def _sender(sessions, **options) -> WebhookSender:
    options = {"backoff_s": 0.05, "backoff_cap_s": 0.2, **options}
    return WebhookSender(DeliveryStore(sessions), allow_loopback=True, **options)


def _run(sender: WebhookSender, until, timeout: float = 30.0) -> None:
    """Run the sender until ``until()`` holds (checked between rounds)."""

    async def go() -> None:
        deadline = time.monotonic() + timeout
        try:
            while not until():
                assert time.monotonic() < deadline, "the sender did not get there in time"
                await sender.send_once()
                await asyncio.sleep(0.05)
        finally:
            await sender.close()

    asyncio.run(go())


def test_a_done_task_is_posted_signed_and_a_500_is_retried_with_the_same_id(
    client, alice, sample_jpeg, finish, sessions, receivers
):
    receiver = _receiver(receivers, [500, 200])
    task_id = submit(client, alice, sample_jpeg, webhook=receiver.url)
    finish(
        [
            {
                "primitive_class": "cube",
                "x": 0.5,
                "y": 0.5,
                "width": 0.2,
                "height": 0.2,
                "rotation": 0.0,
                "probability": 0.9,
            }
        ],
        image_class="office",
    )
    _run(
        _sender(sessions),
        lambda: (
            len(receiver.received) == 2
            and client.get(f"/api/tasks/{task_id}/webhooks", headers=alice).json()["deliveries"][0][
                "state"
            ]
            == "delivered"
        ),
    )

    secret = client.get("/api/me", headers=alice).json()["webhook_secret"]
    (first_headers, first_body), (headers, body) = receiver.received
    assert first_headers["webhook-id"] == headers["webhook-id"]
    assert first_body == body
    assert signing.verify(secret, headers, body)
    assert json.loads(body) == client.get(f"/tasks/{task_id}/result", headers=alice).json()

    log = client.get(f"/api/tasks/{task_id}/webhooks", headers=alice).json()["deliveries"]
    assert len(log) == 1
    assert log[0]["webhook_id"] == headers["webhook-id"] and log[0]["url"] == receiver.url
    assert log[0]["next_attempt_at"] is None
    assert [(a["attempt"], a["status_code"]) for a in log[0]["attempts"]] == [(1, 500), (2, 200)]
    assert log[0]["attempts"][0]["error"] == "answered 500"
    assert log[0]["attempts"][1]["error"] is None


def test_a_canceled_task_is_posted_and_a_rotated_secret_signs_later_attempts(
    client, alice, sample_jpeg, sessions, receivers
):
    receiver = _receiver(receivers, [200])
    task_id = submit(client, alice, sample_jpeg, webhook=receiver.url)
    client.post(f"/api/tasks/{task_id}/cancel", headers=alice)
    old = client.get("/api/me", headers=alice).json()["webhook_secret"]
    new = client.post("/api/me/webhook-secret", headers=alice).json()["webhook_secret"]
    assert new != old and new.startswith("whsec_")
    _run(_sender(sessions), lambda: len(receiver.received) == 1)
    headers, body = receiver.received[0]
    assert json.loads(body) == {"id": task_id, "status": "canceled", "result": None}
    assert signing.verify(new, headers, body) and not signing.verify(old, headers, body)


def test_a_dead_receiver_does_not_hold_up_others_and_gives_up_after_the_attempts(
    client, alice, bob, sample_jpeg, finish, sessions, receivers
):
    slow = _receiver(receivers, [200], delay_s=5.0)  # answers after the 1 s time-out
    with socket.socket() as closed:  # a port nothing listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    fine = _receiver(receivers, [200])
    slow_task = submit(client, alice, sample_jpeg, webhook=slow.url)
    dead_task = submit(client, alice, sample_jpeg, webhook=dead_url)
    fine_task = submit(client, bob, sample_jpeg, webhook=fine.url)
    finish([])
    delivered_while_slow_was_waiting: list[bool] = []

    def fine_delivered() -> bool:
        done = bool(fine.received)
        if done and not delivered_while_slow_was_waiting:
            # The slow receiver's first attempt is still open: nothing waited for it.
            log = client.get(f"/api/tasks/{slow_task}/webhooks", headers=alice).json()
            delivered_while_slow_was_waiting.append(not log["deliveries"][0]["attempts"])
        return done

    def all_settled() -> bool:
        states = [
            client.get(f"/api/tasks/{t}/webhooks", headers=h).json()["deliveries"][0]["state"]
            for t, h in ((slow_task, alice), (dead_task, alice), (fine_task, bob))
        ]
        return fine_delivered() and states == ["gave_up", "gave_up", "delivered"]

    _run(_sender(sessions, timeout_s=1.0, max_attempts=3), all_settled)
    assert delivered_while_slow_was_waiting == [True]
    dead_log = client.get(f"/api/tasks/{dead_task}/webhooks", headers=alice).json()
    attempts = dead_log["deliveries"][0]["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert all(a["status_code"] is None and "ConnectError" in a["error"] for a in attempts)
    slow_attempts = client.get(f"/api/tasks/{slow_task}/webhooks", headers=alice).json()[
        "deliveries"
    ][0]["attempts"]
    assert slow_attempts[0]["error"] == "no answer within 1 s"


def test_redirects_are_not_followed(client, alice, sample_jpeg, finish, sessions, receivers):
    receiver = _receiver(receivers, [302])
    task_id = submit(client, alice, sample_jpeg, webhook=receiver.url)
    finish([])
    _run(
        _sender(sessions, max_attempts=1),
        lambda: (
            client.get(f"/api/tasks/{task_id}/webhooks", headers=alice).json()["deliveries"][0][
                "state"
            ]
            == "gave_up"
        ),
    )
    (attempt,) = client.get(f"/api/tasks/{task_id}/webhooks", headers=alice).json()["deliveries"][
        0
    ]["attempts"]
    assert attempt["status_code"] == 302
    assert attempt["error"] == "answered 302; redirects are not followed"
    assert len(receiver.received) == 1


@pytest.fixture
def production_client(database_url, registry, sessions, read_sessions) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, jwt_secret=JWT_SECRET, environment="production")
    app = create_app(
        settings=settings,
        registry=registry,
        session_factory=sessions,
        read_session_factory=read_sessions,
        queue=NoQueue(),
    )
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8080/hook", "resolves to a loopback address"),
        ("http://localhost/hook", "resolves to a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "resolves to a link-local or metadata"),
        ("http://10.0.0.7/hook", "resolves to a private address"),
        ("file:///etc/passwd", "must start with http:// or https://"),
    ],
)
def test_production_refuses_unsafe_webhook_urls_with_400(
    production_client, make_user, sample_jpeg, sessions, url, says
):
    name, password = make_user()
    token = production_client.post(
        "/oauth/login", data={"username": name, "password": password}
    ).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    response = production_client.post(
        "/api/tasks",
        params={"webhook": url},
        content=sample_jpeg,
        headers={**headers, "Content-Type": "image/jpeg"},
    )
    assert response.status_code == 400
    assert says in response.json()["detail"]
    assert production_client.get("/api/tasks", headers=headers).json() == {"tasks": []}
    if url == "http://localhost/hook":  # a name: what it resolved to is not told
        assert "127.0.0.1" not in response.json()["detail"]
        assert "::1" not in response.json()["detail"]
    elif url.startswith("http://10."):  # an address the caller gave is named back
        assert "(10.0.0.7)" in response.json()["detail"]


def test_me_shows_a_stable_secret_and_needs_a_token(client, alice):
    import base64

    first = client.get("/api/me", headers=alice).json()
    assert first["username"] == "alice"
    assert len(base64.b64decode(first["webhook_secret"].removeprefix("whsec_"))) == 24
    assert client.get("/api/me", headers=alice).json() == first
    for call in (client.get("/api/me"), client.post("/api/me/webhook-secret")):
        assert call.status_code == 401
        assert call.json() == {"detail": "Not authenticated"}


def test_a_webhook_log_is_read_by_owner_as_well_as_task_id(
    client, alice, bob, sample_jpeg, finish, sessions
):
    """A delivery outlives its task; were a task id ever given again, the log must still show
    only the owner's rows (found by the outside review on SQLite, where ids came back)."""
    from storage import webhooks
    from storage.models import Task
    from storage.users import get_user_by_username

    task_id = submit(client, alice, sample_jpeg, webhook="http://127.0.0.1:9/hook")
    finish([], image_class="office")
    with sessions() as db:
        task, bob_user = db.get(Task, task_id), get_user_by_username(db=db, username="bob")
        assert task is not None and bob_user is not None
        owner, other = task.user_id, bob_user.id
        assert len(webhooks.deliveries_for_task(db=db, user_id=owner, task_id=task_id)) == 1
        assert webhooks.deliveries_for_task(db=db, user_id=other, task_id=task_id) == []


class Dribbler:
    """A receiver that reads the request, then sends its answer's head one byte every
    ``every_s``: each read returns in time, the answer never ends (a slowloris)."""

    def __init__(self, every_s: float = 0.3, for_s: float = 15.0):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.connections = 0
        self.every_s, self.for_s = every_s, for_s
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.server.accept()
                self.connections += 1
                threading.Thread(target=self._dribble, args=(connection,), daemon=True).start()

    def _dribble(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            connection.recv(65536)
            deadline = time.monotonic() + self.for_s
            while time.monotonic() < deadline:
                connection.sendall(b"H")
                time.sleep(self.every_s)

    def close(self) -> None:
        self.server.close()


def test_a_slowloris_receiver_is_cut_off_at_the_attempts_deadline(
    client, alice, sample_jpeg, finish, sessions
):
    """Found by the outside review: httpx's time-outs are per read, so a receiver sending a
    byte every few seconds held a delivery slot without end, and after the lock lapsed the
    same delivery was taken into a second slot."""
    dribbler = Dribbler()
    try:
        task_id = submit(client, alice, sample_jpeg, webhook=dribbler.url)
        finish([])
        sender = _sender(sessions, timeout_s=1.0, max_attempts=1)
        started = time.monotonic()

        def given_up() -> bool:
            log = client.get(f"/api/tasks/{task_id}/webhooks", headers=alice).json()
            return log["deliveries"][0]["state"] == "gave_up"

        _run(sender, given_up, timeout=10)
        assert time.monotonic() - started < 5  # on ec95f26: not before the dribble ends
        attempt = client.get(f"/api/tasks/{task_id}/webhooks", headers=alice).json()["deliveries"][
            0
        ]["attempts"]
        assert [a["error"] for a in attempt] == ["no answer within 1 s"]
        assert attempt[0]["duration_ms"] < 2500
        assert dribbler.connections == 1
        # A delivery in flight keeps its lock for far longer than an attempt may last.
        assert sender.lock_seconds > 3 * sender.timeout_s
    finally:
        dribbler.close()


def _log(client, task_id, headers) -> dict:
    return client.get(f"/api/tasks/{task_id}/webhooks", headers=headers).json()["deliveries"][0]


def test_one_users_dead_receivers_leave_the_others_a_slot(
    client, alice, bob, sample_jpeg, finish, sessions, receivers
):
    """Review finding 5: the slots went first come, first served, so one user's receivers
    that never answer took all of them for their whole time-out, attempt after attempt."""
    hung = _receiver(receivers, [200], delay_s=5.0)  # past the 2 s time-out
    fine = _receiver(receivers, [200])
    alice_tasks = [submit(client, alice, sample_jpeg, webhook=hung.url) for _ in range(6)]
    bob_task = submit(client, bob, sample_jpeg, webhook=fine.url)  # due after all of Alice's
    finish([])
    seen_while_alice_hung: list[bool] = []

    def bob_delivered() -> bool:
        if fine.received and not seen_while_alice_hung:
            seen_while_alice_hung.append(
                not any(_log(client, t, alice)["attempts"] for t in alice_tasks)
            )
        return bool(fine.received)

    sender = _sender(sessions, concurrency=4, per_user=2, timeout_s=2.0, max_attempts=1)
    _run(sender, bob_delivered)
    assert seen_while_alice_hung == [True]  # nothing of Alice's had ended: Bob never waited
    assert _log(client, bob_task, bob)["state"] == "delivered"
    assert len(hung.received) == 2  # Alice's share: two at once


def test_an_endpoint_that_keeps_failing_is_paused_without_spending_attempts(
    client, alice, sample_jpeg, finish, sessions, receivers
):
    broken = _receiver(receivers, [500])
    tasks = [submit(client, alice, sample_jpeg, webhook=broken.url) for _ in range(4)]
    finish([])
    sender = _sender(sessions, concurrency=1, pause_after=2, pause_s=30.0, max_attempts=8)
    _run(sender, lambda: sender.stats.paused == 1)
    logs = [_log(client, t, alice) for t in tasks]
    assert sum(len(log["attempts"]) for log in logs) == 2  # the two in a row that failed
    assert all(log["state"] == "pending" for log in logs)
    # Every delivery to it now waits out the pause (a minute's worth here: 30 s).
    from datetime import timedelta

    from sqlalchemy import select

    from storage.database import utcnow
    from storage.models import WebhookDelivery

    with sessions() as db:
        waits = db.scalars(
            select(WebhookDelivery.next_attempt_at).where(WebhookDelivery.task_id.in_(tasks))
        ).all()
    now = utcnow()
    assert len(waits) == 4 and all(w > now + timedelta(seconds=20) for w in waits), (now, waits)
    assert len(broken.received) == 2
