"""Shared fixtures: a fresh PostgreSQL database per test run, users and tokens via the API."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# Admin connection used to create and drop the per-run database.
ADMIN_URL = os.environ.get("PRIMITIVES_TEST_ADMIN_URL",
                           "postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres")
FOLDER_MARKERS = {"unit": "unit", "api": "api", "integration": "integration", "gpu": "gpu"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers follow folders: tests/unit -> unit, tests/integration -> integration..."""
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in FOLDER_MARKERS:
            item.add_marker(getattr(pytest.mark, FOLDER_MARKERS[folder]))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database, migrated to head, dropped after the run."""
    from serve_app.cli import upgrade_database

    name = f"primitives_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_database(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def sample_jpeg() -> bytes:
    """A scene rendered by our generator (seed 7), as JPEG bytes."""
    from training.render import render_jpeg

    return render_jpeg(7)[0]
