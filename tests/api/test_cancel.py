"""Cancel (docs/api.md §E2): a queued or running task ends as canceled and never gets a
result; an ended one answers 409."""

from __future__ import annotations

from sqlalchemy import func, select

from storage import claims
from storage.models import TaskResult
from tests.api.conftest import claim_batch, submit


def test_a_queued_task_is_canceled_and_never_runs(
    client, alice, sample_jpeg, sessions, notifications
):
    task_id = submit(client, alice, sample_jpeg)
    response = client.post(f"/api/tasks/{task_id}/cancel", headers=alice)
    assert response.status_code == 200
    assert response.json() == {"id": task_id, "status": "canceled"}
    assert notifications.canceled == [task_id]
    assert client.get(f"/api/tasks/{task_id}/status", headers=alice).json() == {
        "id": task_id,
        "status": "canceled",
    }
    assert client.get(f"/tasks/{task_id}/result", headers=alice).json() == {
        "id": task_id,
        "status": "canceled",
        "result": None,
    }
    with sessions() as db:
        assert claim_batch(db=db, limit=10, lease_seconds=30) == []
    listed = client.get("/api/tasks", params={"status": "canceled"}, headers=alice).json()
    assert [t["id"] for t in listed["tasks"]] == [task_id]
    assert client.get("/api/tasks", params={"status": "queued"}, headers=alice).json() == {
        "tasks": []
    }


def test_a_running_task_loses_its_claim_and_stores_no_result(client, alice, sample_jpeg, sessions):
    task_id = submit(client, alice, sample_jpeg)
    with sessions() as db:
        (claim,) = claim_batch(db=db, limit=10, lease_seconds=30)
    assert (
        client.get(f"/api/tasks/{task_id}/status", headers=alice).json()["status"] == "in progress"
    )
    assert client.post(f"/api/tasks/{task_id}/cancel", headers=alice).status_code == 200
    with sessions() as db:
        assert claims.renew_leases(db=db, claims=[claim], lease_seconds=30) == set()
        assert claims.is_settled(db=db, task_id=task_id)
        assert not claims.complete(
            db=db, claim=claim, image_class="office", primitives=[], details={}
        )
        assert not claims.fail(db=db, claim=claim, error="late")
        assert db.scalar(select(func.count()).select_from(TaskResult)) == 0
    assert client.get(f"/api/tasks/{task_id}/result", headers=alice).json()["status"] == "canceled"


def test_an_ended_task_answers_409_and_stays_as_it_was(client, alice, sample_jpeg, finish):
    done = submit(client, alice, sample_jpeg)
    finish([])
    response = client.post(f"/api/tasks/{done}/cancel", headers=alice)
    assert response.status_code == 409
    assert response.json() == {"detail": f"Task {done} is already done."}
    assert client.get(f"/api/tasks/{done}/status", headers=alice).json()["status"] == "done"
    canceled = submit(client, alice, sample_jpeg)
    client.post(f"/api/tasks/{canceled}/cancel", headers=alice)
    again = client.post(f"/api/tasks/{canceled}/cancel", headers=alice)
    assert again.status_code == 409
    assert again.json() == {"detail": f"Task {canceled} is already canceled."}


def test_someone_elses_task_is_404_like_a_missing_one(client, alice, bob, sample_jpeg):
    task_id = submit(client, alice, sample_jpeg)
    theirs = client.post(f"/api/tasks/{task_id}/cancel", headers=bob)
    missing = client.post(f"/api/tasks/{task_id + 1000}/cancel", headers=bob)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == {"detail": f"Task with id {task_id} does not exist."}
    assert client.post(f"/api/tasks/{task_id}/cancel").status_code == 401
    assert client.get(f"/api/tasks/{task_id}/status", headers=alice).json()["status"] == "queued"
