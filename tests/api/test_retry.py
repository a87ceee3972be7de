"""Retry (docs/api.md §E14): a failed or canceled task runs again as a new task with the same
input, models and options; the old one is kept."""

from __future__ import annotations

from storage import claims
from storage.users import set_max_priority
from tests.api.conftest import claim_batch, submit


def retry(client, headers, task_id: int, **extra):
    return client.post(f"/api/tasks/{task_id}/retry", headers={**headers, **extra})


def test_a_failed_task_runs_again_as_a_new_task_with_the_same_input_and_options(
    client, alice, sample_jpeg, sessions, notifications
):
    old = submit(
        client,
        alice,
        sample_jpeg,
        detection_model_id=2,
        priority=3,
        deadline_s=600,
        webhook="http://127.0.0.1:9/hook",
    )
    with sessions() as db:
        (claim,) = claim_batch(db=db, limit=5, lease_seconds=60)
        assert claims.fail(db=db, claim=claim, error="the image could not be read")
    woken = notifications.count
    response = retry(client, alice, old)
    assert response.status_code == 201, response.text
    new = response.json()["id"]
    assert new > old and notifications.count == woken + 1  # stored, and the queue told
    assert client.get(f"/api/tasks/{old}/status", headers=alice).json()["status"] == "failed"
    body = client.get(f"/api/tasks/{new}/result", headers=alice).json()
    assert body == {"id": new, "status": "queued", "result": None, "priority": 3, "deadline_s": 600}
    assert client.get(f"/api/tasks/{new}/input", headers=alice).content == sample_jpeg
    with sessions() as db:
        (again,) = claim_batch(db=db, limit=5, lease_seconds=60)
    assert (again.task_id, again.detection_model_id) == (new, 2)
    hooks = client.get(f"/api/tasks/{new}/webhooks", headers=alice)
    assert hooks.status_code == 200  # the webhook URL came along (delivered when it ends)


def test_a_canceled_task_can_be_retried_and_a_key_makes_one_task(client, alice, sample_jpeg):
    old = submit(client, alice, sample_jpeg)
    assert client.post(f"/api/tasks/{old}/cancel", headers=alice).status_code == 200
    first = retry(client, alice, old, **{"Idempotency-Key": "retry-1"})
    again = retry(client, alice, old, **{"Idempotency-Key": "retry-1"})
    assert first.status_code == 201 and again.status_code == 201
    assert first.json() == again.json()  # one new task, answered twice
    listed = client.get("/api/tasks", headers=alice).json()["tasks"]
    assert len(listed) == 2


def test_only_a_failed_or_canceled_task_of_ones_own_is_retried(
    client, alice, bob, sample_jpeg, finish
):
    queued = submit(client, alice, sample_jpeg)
    response = retry(client, alice, queued)
    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"Task {queued} is queued; only a failed or canceled task can be retried."
    )
    finish([])
    assert retry(client, alice, queued).status_code == 409  # done now
    assert retry(client, bob, queued).status_code == 404  # another user's: not there
    assert retry(client, alice, 10**9).status_code == 404
    assert len(client.get("/api/tasks", headers=alice).json()["tasks"]) == 1  # nothing new


def test_a_retry_asks_for_its_priority_again(client, make_user, login, sample_jpeg, sessions):
    alice = login(*make_user("alice", max_priority=8))
    old = submit(client, alice, sample_jpeg, priority=8)
    assert client.post(f"/api/tasks/{old}/cancel", headers=alice).status_code == 200
    with sessions() as db:
        set_max_priority(db=db, username="alice", priority=5)  # lowered since
    response = retry(client, alice, old)
    assert response.status_code == 403 and "at most 5" in response.json()["detail"]
