"""The queue policy and the event stream on the running platform (real models, Serve's proxy
in front): a backlog of one user does not hold back another's task, and status changes
arrive as server-sent events through the proxy."""

from __future__ import annotations

import threading
import time

from primitives_client import Client
from tests.integration.conftest import wait_finished


def test_a_backlog_of_200_does_not_hold_back_another_users_task(http, user_headers, sample_jpeg):
    alice, bob = user_headers(), user_headers()
    backlog: list[int] = []
    for _ in range(7):  # 7 x 29 = 203 tasks, multipart
        files = [("file", (f"{i}.jpg", sample_jpeg, "image/jpeg")) for i in range(29)]
        response = http.post("/api/tasks", files=files, headers=alice)
        assert response.status_code == 200, response.text
        backlog += response.json()["ids"]
    response = http.post(
        "/api/tasks",
        content=sample_jpeg,
        headers={**bob, "Content-Type": "image/jpeg", "Prefer": "wait=60"},
        timeout=90,
    )
    assert response.status_code == 200 and response.json()["status"] == "done", response.text
    waiting = http.get(
        "/api/tasks", params={"status": "queued", "limit": 1000}, headers=alice
    ).json()["tasks"]
    # Bob's one task was done while most of Alice's still waited their turn.
    assert len(waiting) > 100, len(waiting)
    for task in waiting:  # make room for the tests that follow
        http.post(f"/api/tasks/{task['id']}/cancel", headers=alice)
    wait_finished(http, alice, backlog)


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_status_changes_arrive_as_events_through_the_proxy(platform, account, sample_jpeg):
    client = Client(platform.url)
    client.login(*account)
    # A new account: every event it has is after 0, so resuming after 0 misses none,
    # whenever the stream opens.
    stream = client.events(last_event_id=0, reconnect=False)
    got: list[dict] = []

    def read() -> None:
        for event in stream:
            got.append({**event, "at": time.monotonic()})
            if len(got) == 9:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ids = [client.submit(sample_jpeg)["id"] for _ in range(3)]
    submitted = time.monotonic()
    # Each task's "queued" event comes while the other changes are still to happen: the proxy
    # passes the stream on as it is written, not when it ends (80 s later).
    queued_seen = wait_until(lambda: sum(e["status"] == "queued" for e in got) == 3, 30)
    assert queued_seen, got
    final = {client.wait(task_id, timeout=120)["status"] for task_id in ids}
    assert final == {"done"}
    done_at = time.monotonic()
    reader.join(timeout=30)
    stream.close()
    assert len(got) == 9, got
    assert max(e["at"] for e in got) - done_at < 10  # the last change, seconds after it ended
    assert min(e["at"] for e in got) - submitted < 10
    for task_id in ids:
        assert [e["status"] for e in got if e["id"] == task_id] == [
            "queued",
            "in progress",
            "done",
        ]
