"""Throw-away PostgreSQL databases for the tests and the benchmark."""

from __future__ import annotations

import os
import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get(
    "PRIMITIVES_TEST_ADMIN_URL", "postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres"
)


def create_scratch_database(prefix: str, admin_url: str = ADMIN_URL) -> str:
    """Create an empty database migrated to head; returns its URL."""
    from serve_app.cli import upgrade_database

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade_database(url)
    return url


def drop_scratch_database(url: str, admin_url: str = ADMIN_URL) -> None:
    name = make_url(url).database
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
