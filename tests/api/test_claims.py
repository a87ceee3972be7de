"""The queue's claims on a real PostgreSQL: atomic, leased, exactly one result."""

from __future__ import annotations

import threading
import time

from sqlalchemy import func, select, update

from storage import claims
from storage.models import Task, TaskResult
from storage.tasks import NewTasks, create_tasks
from tests.api.conftest import claim_batch


def _tasks(sessions, n: int, username="alice") -> list[int]:
    from storage.users import create_user

    with sessions() as db:
        user = create_user(db=db, username=username, password="pw")
        return create_tasks(
            db=db,
            user_id=user.id,
            new=NewTasks(
                detection_model_id=1,
                classification_model_id=3,
                images=[(b"\xff\xd8\xff", "image/jpeg")] * n,
            ),
        )


def test_concurrent_claimers_never_share_a_task(sessions):
    ids = _tasks(sessions, 60)
    got: list[list[int]] = [[] for _ in range(4)]

    def claimer(slot: int) -> None:
        while True:
            with sessions() as db:
                batch = claim_batch(db=db, limit=3, lease_seconds=60)
            if not batch:
                return
            got[slot].extend(c.task_id for c in batch)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for g in got for i in g]
    assert sorted(everything) == ids  # each claimed once, none missed


def test_lapsed_lease_is_reclaimed_and_the_old_claim_cannot_write(sessions):
    (task_id,) = _tasks(sessions, 1)
    with sessions() as db:
        (first,) = claim_batch(db=db, limit=5, lease_seconds=0.2)
        assert claim_batch(db=db, limit=5, lease_seconds=30) == []  # lease still held
    time.sleep(0.3)
    with sessions() as db:
        (second,) = claim_batch(db=db, limit=5, lease_seconds=30)
        assert second.task_id == task_id and second.attempts == 2
        assert not claims.complete(db=db, claim=first, image_class="x", primitives=[], details={})
        assert not claims.renew_leases(db=db, claims=[first], lease_seconds=30)
        assert claims.complete(db=db, claim=second, image_class="office", primitives=[], details={})
        assert not claims.complete(
            db=db, claim=second, image_class="office", primitives=[], details={}
        )
        assert db.scalar(select(func.count()).select_from(TaskResult)) == 1
        assert db.get(Task, task_id).status == "done"


def test_a_claimer_never_claims_again_a_lapsed_task_it_is_still_running(sessions):
    mine, dead = _tasks(sessions, 2)
    with sessions() as db:
        claim_batch(db=db, limit=5, lease_seconds=0.2)
    time.sleep(0.3)
    with sessions() as db:  # both lapsed; ``mine`` still runs in this claimer, late to renew
        (again,) = claim_batch(db=db, limit=5, lease_seconds=30, running=[mine])
        assert (again.task_id, again.attempts) == (dead, 2)
        assert db.get(Task, mine).attempts == 1


def test_release_puts_a_task_back_and_deleted_tasks_are_discarded(sessions):
    keep, gone = _tasks(sessions, 2)
    with sessions() as db:
        first, second = claim_batch(db=db, limit=5, lease_seconds=30)
        assert claims.release(db=db, claim=first)
        db.execute(update(Task).where(Task.id == gone).values(status="queued"))
        db.commit()
    with sessions() as db:
        db.delete(db.get(Task, gone))
        db.commit()
        assert not claims.complete(db=db, claim=second, image_class="x", primitives=[], details={})
        assert [c.task_id for c in claim_batch(db=db, limit=5, lease_seconds=30)] == [keep]


def test_a_claim_brings_the_images_of_its_tasks(sessions):
    ids = _tasks(sessions, 3)
    with sessions() as db:
        db.delete(db.get(Task, ids[1]).input)
        db.commit()
        claimed = claims.claim_tasks_with_inputs(db=db, limit=5, lease_seconds=30)
    assert [(c.claim.task_id, c.image) for c in claimed] == [
        (ids[0], b"\xff\xd8\xff"),
        (ids[1], None),
        (ids[2], b"\xff\xd8\xff"),
    ]
    assert {c.claim.token for c in claimed} == {claimed[0].claim.token}
