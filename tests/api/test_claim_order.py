"""The queue's order at the claim (docs/api.md §E10) on both databases: SQLite, the default of
`make run`, runs the same claim statements as PostgreSQL without its row locks, and must
start tasks in the same order (review: only PostgreSQL ran these)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from config.settings import REPO_ROOT
from storage import claims, tasks
from storage.catalog import sync_models
from storage.database import make_engine, make_session_factory, utcnow
from storage.models import Task
from storage.users import create_user
from tests.api.conftest import claim_batch


@pytest.fixture(params=["sqlite", "postgresql"])
def db_sessions(request, tmp_path: Path, registry, sessions) -> Iterator[sessionmaker[Session]]:
    if request.param == "postgresql":
        yield sessions  # the tests' database, emptied after each test
        return
    url = f"sqlite:///{tmp_path / 'order.db'}"
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["configure_logging"] = False
    config.attributes["database_url"] = url
    command.upgrade(config, "head")
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory() as db:
        sync_models(db=db, registry=registry)
    yield factory
    engine.dispose()


def store(factory, user_id: int, count: int = 1, **policy) -> list[int]:
    with factory() as db:
        return tasks.create_tasks(
            db=db,
            user_id=user_id,
            new=tasks.NewTasks(
                detection_model_id=1,
                classification_model_id=3,
                images=[(b"\xff\xd8\xff", "image/jpeg")] * count,
                **policy,
            ),
        )


def user(factory, name: str) -> int:
    with factory() as db:
        return int(create_user(db=db, username=name, password="pw-123456").id)


def claim_order(factory) -> list[int]:
    order = []
    with factory() as db:
        while batch := claim_batch(db=db, limit=1, lease_seconds=60):
            order.append(batch[0].task_id)
    return order


def test_highest_priority_first_then_users_in_turn(db_sessions):
    alice, bob = user(db_sessions, "alice"), user(db_sessions, "bob")
    low = store(db_sessions, alice, priority=1)
    alices = store(db_sessions, alice, 3)
    high = store(db_sessions, alice, 2, priority=9)
    bobs = store(db_sessions, bob, 2)
    assert claim_order(db_sessions) == [
        *high,
        alices[0],
        bobs[0],
        alices[1],
        bobs[1],
        alices[2],
        *low,
    ]


def test_a_new_users_tasks_start_at_the_queues_clock(db_sessions):
    """Review: removing the clock passed every test. Without it a new user's tasks would take
    turns 0, 1, 2 ... and all go ahead of an existing user's waiting ones."""
    alice, bob = user(db_sessions, "alice"), user(db_sessions, "bob")
    alices = store(db_sessions, alice, 10)
    with db_sessions() as db:
        assert len(claim_batch(db=db, limit=6, lease_seconds=60)) == 6
    bobs = store(db_sessions, bob, 3)
    assert claim_order(db_sessions) == [
        bobs[0],
        alices[6],
        bobs[1],
        alices[7],
        bobs[2],
        alices[8],
        alices[9],
    ]


def test_a_task_past_its_deadline_is_never_claimed_and_ends_once(db_sessions):
    alice = user(db_sessions, "alice")
    (late,) = store(db_sessions, alice, deadline_s=1)
    (other,) = store(db_sessions, alice)
    with db_sessions() as db:
        db.execute(
            update(Task).where(Task.id == late).values(deadline_at=utcnow() - timedelta(seconds=1))
        )
        db.commit()
        assert [c.task_id for c in claim_batch(db=db, limit=5, lease_seconds=60)] == [other]
        assert [e.task_id for e in claims.expire_overdue(db=db)] == [late]
        assert claims.expire_overdue(db=db) == []
