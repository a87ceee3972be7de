"""the size of each task's input, for per-user storage quotas

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 22:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('task') as batch:
        batch.add_column(sa.Column('input_bytes', sa.BigInteger(), nullable=False,
                                   server_default='0'))
    op.execute("UPDATE task SET input_bytes = COALESCE((SELECT length(data) FROM task_input "
               "WHERE task_input.task_id = task.id), 0)")
    op.create_index('ix_task_finished_at', 'task', ['finished_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_task_finished_at', table_name='task')
    with op.batch_alter_table('task') as batch:
        batch.drop_column('input_bytes')
