"""Idempotency keys (docs/api.md §E3): one task per key, however the retries race."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import func, select, update

from storage.database import utcnow
from storage.models import IdempotencyKey, Task


def _post(client, headers, image: bytes, key: str, **params):
    return client.post(
        "/api/tasks",
        params=params,
        content=image,
        headers={**headers, "Content-Type": "image/jpeg", "Idempotency-Key": key},
    )


def _task_count(sessions) -> int:
    with sessions() as db:
        return db.scalar(select(func.count()).select_from(Task)) or 0


def test_four_racing_requests_with_one_key_make_one_task(client, alice, sample_jpeg, sessions):
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _post(client, alice, sample_jpeg, "retry-1"), range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    assert len({a.json()["id"] for a in answers}) == 1
    assert _task_count(sessions) == 1


def test_a_repeated_key_answers_the_first_id_and_a_new_key_makes_a_new_task(
    client, alice, bob, sample_jpeg, sessions, notifications
):
    first = _post(client, alice, sample_jpeg, "k").json()
    assert _post(client, alice, sample_jpeg, "k").json() == first
    assert notifications.count == 1  # the replay woke nobody
    assert _post(client, alice, sample_jpeg, "k2").json()["id"] != first["id"]
    assert _post(client, bob, sample_jpeg, "k").json()["id"] != first["id"]  # per user
    assert _task_count(sessions) == 3


def test_the_same_key_with_another_request_is_409(client, alice, sample_jpeg, sessions):
    _post(client, alice, sample_jpeg, "k")
    other_image = _post(client, alice, sample_jpeg + b"\0", "k")
    other_model = _post(client, alice, sample_jpeg, "k", detection_model_id=2)
    for response in (other_image, other_model):
        assert response.status_code == 409
        assert "already used with a different" in response.json()["detail"]
    assert _task_count(sessions) == 1


def test_a_key_older_than_a_day_is_forgotten(client, alice, sample_jpeg, sessions):
    first = _post(client, alice, sample_jpeg, "old").json()["id"]
    with sessions() as db:
        db.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25)))
        db.commit()
    assert _post(client, alice, sample_jpeg, "old").json()["id"] != first


def test_bad_keys_are_400(client, alice, sample_jpeg, sessions):
    for key in ("", "x" * 256, "tab\there", "é"):
        response = client.post(
            "/api/tasks",
            content=sample_jpeg,
            headers={**alice, "Content-Type": "image/jpeg", "Idempotency-Key": key.encode("utf-8")},
        )
        assert response.status_code == 400, key
        assert response.json() == {
            "detail": "Idempotency-Key must be 1 to 255 printable ASCII characters."
        }
    assert _task_count(sessions) == 0


def test_a_refused_request_does_not_spend_the_key(
    client, alice, sample_jpeg, settings, sessions, monkeypatch
):
    monkeypatch.setattr(settings, "max_active_tasks_per_user", 0)
    assert _post(client, alice, sample_jpeg, "later").status_code == 429
    monkeypatch.setattr(settings, "max_active_tasks_per_user", 10)
    assert _post(client, alice, sample_jpeg, "later").status_code == 200
    assert _task_count(sessions) == 1


def test_racing_transactions_wait_for_the_first_and_replay_its_answer(sessions, make_user):
    """Below the HTTP layer, four sessions start together on one key: the database, not a
    replica's memory, makes three of them wait and then answer the first one's id."""
    import threading

    from storage.tasks import NewTasks, create_tasks_within_quota
    from storage.users import get_user_by_username

    name, _ = make_user()
    with sessions() as db:
        user = get_user_by_username(db=db, username=name)
        assert user is not None
        user_id = user.id
    new = NewTasks(
        detection_model_id=1,
        classification_model_id=3,
        images=[(b"\xff\xd8\xff-bytes", "image/jpeg")],
    )
    barrier = threading.Barrier(4)
    outcomes = []

    def attempt() -> None:
        with sessions() as db:
            barrier.wait()
            outcomes.append(
                create_tasks_within_quota(
                    db=db, user_id=user_id, new=new, max_active=100, idempotency_key="race"
                )
            )

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({tuple(o.ids) for o in outcomes}) == 1
    assert sorted(o.replayed for o in outcomes) == [False, True, True, True]
    assert _task_count(sessions) == 1
