"""Per-user storage quota and retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from harness.no_queue import NoQueue
from serve_app.main import create_app
from storage.database import utcnow
from storage.models import Task, TaskInput
from tests.api.conftest import submit


@pytest.fixture
def small_quota(settings, registry, sessions, read_sessions, sample_jpeg):
    quota = len(sample_jpeg) * 2 + 10  # two images fit, a third does not
    limited = settings.model_copy(update={"max_stored_bytes_per_user": quota})
    with TestClient(
        create_app(
            settings=limited,
            registry=registry,
            session_factory=sessions,
            read_session_factory=read_sessions,
            queue=NoQueue(),
        )
    ) as client:
        yield client


def test_a_full_storage_quota_is_413_until_tasks_are_deleted(
    small_quota, make_user, login, sample_jpeg, sessions
):
    headers = login(*make_user())  # tokens from the other app: same secret
    first = submit(small_quota, headers, sample_jpeg)
    submit(small_quota, headers, sample_jpeg)
    refused = small_quota.post(
        "/api/tasks", content=sample_jpeg, headers={**headers, "Content-Type": "image/jpeg"}
    )
    assert refused.status_code == 413
    assert refused.json()["detail"].startswith("Your stored images take ")
    assert "Delete tasks you no longer need" in refused.json()["detail"]
    with sessions() as db:
        assert len(list(db.scalars(select(Task.id)))) == 2  # nothing stored for it
    assert small_quota.delete(f"/api/tasks/{first}", headers=headers).status_code == 200
    submit(small_quota, headers, sample_jpeg)


def test_retention_purges_old_settled_tasks_only(client, alice, sample_jpeg, finish, sessions, cli):  # noqa: F811
    old_done, recent_done = (submit(client, alice, sample_jpeg) for _ in range(2))
    finish([])
    old_queued = submit(client, alice, sample_jpeg)  # unsettled tasks are never purged
    long_ago = utcnow() - timedelta(days=40)
    with sessions() as db:
        db.execute(
            update(Task).where(Task.id.in_([old_done, old_queued])).values(created_at=long_ago)
        )
        db.execute(update(Task).where(Task.id == old_done).values(finished_at=long_ago))
        db.commit()
    assert cli("retention", "run", "--days", "30") == 0
    with sessions() as db:
        left = set(db.scalars(select(Task.id)))
        inputs = set(db.scalars(select(TaskInput.task_id)))
    assert left == {old_queued, recent_done} and inputs == left
    assert client.get(f"/api/tasks/{old_done}/status", headers=alice).status_code == 404
    assert cli("retention", "run") == 2  # no age configured: refuses rather than guess


def test_expired_keys_and_finished_webhook_logs_are_purged(
    client, alice, sample_jpeg, finish, sessions
):
    """Found by the outside review: idempotency rows and webhook bodies were never purged
    and outlived deleted tasks."""
    from storage import retention
    from storage.models import IdempotencyKey, WebhookDelivery

    old_key, new_key = "key-old", "key-new"
    submit(client, {**alice, "Idempotency-Key": old_key}, sample_jpeg)
    submit(client, {**alice, "Idempotency-Key": new_key}, sample_jpeg)
    hooks = [
        submit(client, alice, sample_jpeg, webhook="http://127.0.0.1:9/hook") for _ in range(3)
    ]
    finish([])
    long_ago = utcnow() - timedelta(days=30)
    with sessions() as db:
        db.execute(
            update(IdempotencyKey).where(IdempotencyKey.key == old_key).values(created_at=long_ago)
        )
        by_task = {d.task_id: d.id for d in db.scalars(select(WebhookDelivery))}
        db.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == by_task[hooks[0]])
            .values(state="delivered", created_at=long_ago)
        )
        db.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == by_task[hooks[1]])
            .values(created_at=long_ago)
        )  # still pending: kept, however old
        db.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == by_task[hooks[2]])
            .values(state="gave_up")
        )  # finished but recent: kept
        db.commit()
        now = utcnow()
        assert retention.purge_expired_keys(db=db, moment=now - timedelta(hours=24)) == 1
        assert retention.purge_finished_deliveries(db=db, moment=now - timedelta(days=7)) == 1
        assert set(db.scalars(select(IdempotencyKey.key))) == {new_key}
        assert set(db.scalars(select(WebhookDelivery.task_id))) == set(hooks[1:])


def test_the_users_counters_match_a_count_after_every_kind_of_change(
    client, alice, bob, sample_jpeg, sessions
):
    """The quotas read counters the same statements keep: after submitting, claiming,
    finishing, failing, giving back, canceling, expiring, deleting and purging, they equal
    a count of the rows (what the quota checks used to read)."""
    from sqlalchemy import func

    from storage import claims, events, retention
    from storage.models import UNSETTLED_STATUSES, User
    from tests.api.conftest import claim_batch

    ids = [submit(client, alice, sample_jpeg) for _ in range(7)]
    late = submit(client, alice, sample_jpeg, deadline_s=1)
    submit(client, bob, sample_jpeg)
    with sessions() as db:
        db.execute(update(Task).where(Task.id == late).values(deadline_at=utcnow()))
        db.commit()
        assert [e.task_id for e in claims.expire_overdue(db=db)] == [late]
        done, failed, released, running = claim_batch(db=db, limit=4, lease_seconds=60)
        assert claims.complete(db=db, claim=done, image_class="office", primitives=[], details={})
        assert claims.fail(db=db, claim=failed, error="refused")
        assert claims.release(db=db, claim=released)
    assert client.post(f"/api/tasks/{ids[5]}/cancel", headers=alice).status_code == 200
    for task_id in (done.task_id, ids[6]):  # one settled, one waiting
        assert client.delete(f"/api/tasks/{task_id}", headers=alice).status_code == 200
    with sessions() as db:
        db.execute(update(Task).where(Task.id == failed.task_id).values(finished_at=utcnow()))
        db.commit()
        assert retention.purge_settled_before(db=db, moment=utcnow() + timedelta(1)) == 3
        for user in db.scalars(select(User)):
            counted = db.execute(
                select(
                    func.count().filter(Task.status.in_(UNSETTLED_STATUSES)),
                    func.coalesce(func.sum(Task.input_bytes), 0),
                ).where(Task.user_id == user.id)
            ).one()
            assert events.usage(db=db, user_id=user.id) == tuple(counted), user.username
        # Alice: 8 stored, 5 gone or settled; Bob: his one, running.
        users = list(db.scalars(select(User)))
        assert sorted(events.usage(db=db, user_id=u.id)[0] for u in users) == [1, 3]
        events.fold(db=db)  # the books kept every minute: the same numbers, on the rows
        db.expire_all()
        assert sorted((u.active_tasks, u.stored_bytes) for u in users) == sorted(
            events.usage(db=db, user_id=u.id) for u in users
        )
        assert db.get(Task, running.task_id).status == "in progress"
