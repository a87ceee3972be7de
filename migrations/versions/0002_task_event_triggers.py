"""task event triggers: PostgreSQL notifies when tasks are stored, released or settled

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 19:20:00

The channels and payloads are ``storage.events``' (TASKS_QUEUED, TASK_SETTLED). Triggers, not
statements in the application's transactions: no extra round trip, and any writer (the CLI,
a migration, an operator's SQL) wakes the queue and the long polls the same way. SQLite has
no notifications: nothing to do there.
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""
        CREATE FUNCTION primitives_notify_tasks_queued() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('primitives_tasks_queued', '');
            RETURN NULL;
        END $$ LANGUAGE plpgsql
    """)
    op.execute("""
        CREATE FUNCTION primitives_notify_task_settled() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('primitives_task_settled',
                              CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END::text);
            RETURN NULL;
        END $$ LANGUAGE plpgsql
    """)
    op.execute("""
        CREATE TRIGGER task_queued_on_insert AFTER INSERT ON task
        FOR EACH STATEMENT EXECUTE FUNCTION primitives_notify_tasks_queued()
    """)
    op.execute("""
        CREATE TRIGGER task_queued_on_release AFTER UPDATE OF status ON task
        FOR EACH ROW WHEN (NEW.status = 'queued' AND OLD.status <> 'queued')
        EXECUTE FUNCTION primitives_notify_tasks_queued()
    """)
    op.execute("""
        CREATE TRIGGER task_settled_on_update AFTER UPDATE OF status ON task
        FOR EACH ROW WHEN (NEW.status IN ('done', 'failed') AND OLD.status <> NEW.status)
        EXECUTE FUNCTION primitives_notify_task_settled()
    """)
    op.execute("""
        CREATE TRIGGER task_settled_on_delete AFTER DELETE ON task
        FOR EACH ROW EXECUTE FUNCTION primitives_notify_task_settled()
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for trigger in ("task_queued_on_insert", "task_queued_on_release",
                    "task_settled_on_update", "task_settled_on_delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON task")
    op.execute("DROP FUNCTION IF EXISTS primitives_notify_tasks_queued()")
    op.execute("DROP FUNCTION IF EXISTS primitives_notify_task_settled()")
