"""Events and counters on PostgreSQL without the owner's row lock (storage/events.py): an
event that commits late is never behind one a reader already has, and the queue's claims and
results never wait for a user's row."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select, text, update

from storage import claims as claim_storage
from storage import events, tasks
from storage.models import User
from tests.api.conftest import claim_batch, submit


def user_id(sessions, name: str) -> int:
    with sessions() as db:
        return int(db.scalar(select(User.id).where(User.username == name)))


def test_an_event_that_commits_late_is_never_behind_one_already_read(
    sessions, read_sessions, make_user
):
    make_user("alice")
    alice = user_id(sessions, "alice")
    with read_sessions() as reader:
        start = events.latest(db=reader, user_id=alice)
    early, late = sessions(), sessions()
    try:
        # The earlier transaction stores its event first, and commits last.
        events.record(db=early, changes=[(alice, 101, "queued")])
        events.record(db=late, changes=[(alice, 102, "queued")])
        late.commit()
        with read_sessions() as reader:
            first_read = events.after(db=reader, user_id=alice, seq=start)
        early.commit()
    finally:
        early.close()
        late.close()
    # What follows, read as a stream does (a poll): events wait below the horizon while any
    # older transaction runs (on this cluster, anyone's), so they come, late at worst.
    seen, deadline = list(first_read), time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        with read_sessions() as reader:
            seen += events.after(db=reader, user_id=alice, seq=seen[-1][0] if seen else start)
        time.sleep(0.05)
    assert sorted(task for _, task, _ in seen) == [101, 102]  # none lost, none twice
    assert [seq for seq, _, _ in seen] == sorted(seq for seq, _, _ in seen)


def test_claims_and_results_never_wait_for_the_owners_row(client, sessions, alice, sample_jpeg):
    """With a user's row locked (a submission of theirs under way), the queue claims and
    finishes their tasks; only their next submission waits."""
    ids = [submit(client, alice, sample_jpeg) for _ in range(3)]
    owner = user_id(sessions, "alice")
    holder = sessions()
    try:
        # The lock a submission takes: its statement raises the user's counters.
        holder.execute(
            update(User).where(User.id == owner).values(active_tasks=User.active_tasks + 0)
        )
        done: list[bool] = []

        def queue_side() -> None:
            with sessions() as db:
                db.execute(text("SET lock_timeout = '3s'"))
                claims = claim_batch(db=db, limit=10, lease_seconds=60)
                assert sorted(c.task_id for c in claims) == ids
                done.extend(
                    claim_storage.complete(
                        db=db, claim=c, image_class="office", primitives=[], details={}
                    )
                    for c in claims[:2]
                )
                assert claim_storage.fail(db=db, claim=claims[2], error="refused")

        worker = threading.Thread(target=queue_side)
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive()
        assert done == [True, True]
    finally:
        holder.rollback()
        holder.close()
    with sessions() as db:
        assert events.usage(db=db, user_id=owner) == (0, 3 * len(sample_jpeg))
    # What the owner sees: all three settled.
    listed = client.get("/api/tasks", headers=alice).json()
    assert sorted(t["status"] for t in listed["tasks"]) == ["done", "done", "failed"]


def test_counters_match_a_count_after_racing_submissions_and_results(sessions, make_user):
    """Submissions fold the results' deltas while results keep writing them: nothing is
    counted twice or dropped (a fold that raced another would show here)."""
    make_user("alice")
    owner = user_id(sessions, "alice")
    image = (b"\xff\xd8\xff" * 10, "image/jpeg")
    submitted = threading.Event()

    def submitter() -> None:
        for _ in range(15):
            with sessions() as db:
                tasks.create_tasks_within_quota(
                    db=db,
                    user_id=owner,
                    new=tasks.NewTasks(
                        detection_model_id=1, classification_model_id=3, images=[image] * 2
                    ),
                    max_active=10_000,
                )

    def finisher() -> None:
        while True:
            last = submitted.is_set()
            with sessions() as db:
                for claim in claim_batch(db=db, limit=5, lease_seconds=60):
                    claim_storage.complete(
                        db=db, claim=claim, image_class="office", primitives=[], details={}
                    )
            if last:
                return

    workers = [threading.Thread(target=submitter) for _ in range(3)]
    finishers = [threading.Thread(target=finisher) for _ in range(2)]
    for t in workers + finishers:
        t.start()
    for t in workers:
        t.join(timeout=60)
    submitted.set()
    for t in finishers:
        t.join(timeout=60)
    with sessions() as db:
        from sqlalchemy import func

        from storage.models import UNSETTLED_STATUSES, Task

        counted = db.execute(
            select(
                func.count().filter(Task.status.in_(UNSETTLED_STATUSES)),
                func.coalesce(func.sum(Task.input_bytes), 0),
            ).where(Task.user_id == owner)
        ).one()
        assert counted[1] == 90 * len(image[0])  # every submission stored
        assert events.usage(db=db, user_id=owner) == tuple(counted)
        events.fold(db=db)
        assert db.execute(
            select(User.active_tasks, User.stored_bytes).where(User.id == owner)
        ).one() == tuple(counted)
