"""Ids are never reused, on either database: a token names a user id, a webhook log a task id.
(Found by the outside review on SQLite: the newest user's id came back after it was deleted,
and the deleted user's unexpired token acted as the new user.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import text

from config.settings import REPO_ROOT, Settings
from harness.no_queue import NoQueue
from serve_app.main import create_app
from storage.catalog import sync_models
from storage.database import make_engine, make_session_factory
from storage.users import create_user, delete_user
from tests.api.conftest import JWT_SECRET, submit


def migrate(url: str, revision: str = "head") -> None:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["configure_logging"] = False
    config.attributes["database_url"] = url
    command.upgrade(config, revision)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path: Path, registry, database_url) -> Iterator[tuple[TestClient, object]]:
    """The API and a session factory over a fresh SQLite file or the tests' PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ids.db'}"
        migrate(url)
    else:
        url = database_url
    settings = Settings(database_url=url, jwt_secret=JWT_SECRET, environment="development")
    engine, read_engine = make_engine(url), make_engine(url, autocommit=True)
    sessions = make_session_factory(engine)
    with sessions() as db:
        sync_models(db=db, registry=registry)
    app = create_app(
        settings=settings,
        registry=registry,
        session_factory=sessions,
        read_session_factory=make_session_factory(read_engine),
        queue=NoQueue(),
    )
    with TestClient(app) as client:
        yield client, sessions
    engine.dispose()
    read_engine.dispose()


def login(client: TestClient, name: str) -> dict[str, str]:
    response = client.post("/oauth/login", data={"username": name, "password": "pw-123456"})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_a_deleted_users_token_never_acts_as_the_next_user(backend):
    client, sessions = backend
    with sessions() as db:
        create_user(db=db, username="gone", password="pw-123456")
    old_token = login(client, "gone")
    with sessions() as db:
        assert delete_user(db=db, username="gone")
        create_user(db=db, username="newcomer", password="pw-123456")
    assert client.get("/api/me", headers=old_token).status_code == 401
    assert client.get("/api/me", headers=login(client, "newcomer")).json()["username"] == "newcomer"


def test_a_deleted_tasks_id_is_never_given_again(backend, sample_jpeg):
    client, sessions = backend
    with sessions() as db:
        create_user(db=db, username="owner", password="pw-123456")
    headers = login(client, "owner")
    first = submit(client, headers, sample_jpeg)
    assert client.delete(f"/api/tasks/{first}", headers=headers).status_code == 200
    assert submit(client, headers, sample_jpeg) > first


def test_migrating_an_existing_sqlite_file_keeps_every_row(tmp_path, registry):
    """0005 rebuilds the tables with AUTOINCREMENT: children must survive (dropping the old
    table with foreign keys on would cascade to them)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate(url, "0004")
    engine = make_engine(url)
    with make_session_factory(engine)() as db:
        sync_models(db=db, registry=registry)
        # As 0004 knew the table (the model has columns of later migrations).
        user_id = db.execute(
            text(
                "INSERT INTO user_account (username, password_hash, created_at) VALUES "
                "('kept', 'x', CURRENT_TIMESTAMP) RETURNING id"
            )
        ).scalar()
        db.execute(
            text(
                "INSERT INTO task (id, user_id, detection_model_id, classification_model_id, "
                "status, input_media_type, attempts, created_at, input_bytes) VALUES "
                "(7, :u, 1, 3, 'done', 'image/jpeg', 1, CURRENT_TIMESTAMP, 3)"
            ),
            {"u": user_id},
        )
        db.execute(text("INSERT INTO task_input (task_id, data) VALUES (7, x'ffd8ff')"))
        db.commit()
    engine.dispose()
    migrate(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM task_input")).scalar() == 1
        assert connection.execute(text("SELECT id FROM task")).scalars().all() == [7]
        schema = connection.execute(
            text("SELECT sql FROM sqlite_master WHERE name = 'task'")
        ).scalar()
        assert schema is not None and "AUTOINCREMENT" in schema
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_an_id_no_task_can_have_is_404_on_every_route(backend):
    """Ids outside the column's range (or not positive) name no task: 404 with the contract's
    body, never a 5xx from the database (SQLite cannot even bind them)."""
    client, sessions = backend
    with sessions() as db:
        create_user(db=db, username="prober", password="pw-123456")
    headers = login(client, "prober")
    for task_id in ("0", "-1", str(2**63), "99999999999999999999999"):
        for method, path in (
            ("GET", f"/api/tasks/{task_id}/status"),
            ("GET", f"/tasks/{task_id}/result"),
            ("GET", f"/api/tasks/{task_id}/input"),
            ("POST", f"/api/tasks/{task_id}/cancel"),
            ("POST", f"/api/tasks/{task_id}/retry"),
            ("DELETE", f"/api/tasks/{task_id}"),
        ):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json() == {"detail": f"Task with id {task_id} does not exist."}
