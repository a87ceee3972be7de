"""per-user counters of waiting tasks and stored bytes (quotas checked without a count)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 01:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('user_account') as batch:
        batch.add_column(sa.Column('active_tasks', sa.BigInteger(), nullable=False,
                                   server_default='0'))
        batch.add_column(sa.Column('stored_bytes', sa.BigInteger(), nullable=False,
                                   server_default='0'))
    op.execute(
        "UPDATE user_account SET "
        "active_tasks = (SELECT count(*) FROM task WHERE task.user_id = user_account.id "
        "AND task.status IN ('queued', 'in progress')), "
        "stored_bytes = (SELECT coalesce(sum(task.input_bytes), 0) FROM task "
        "WHERE task.user_id = user_account.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table('user_account') as batch:
        batch.drop_column('stored_bytes')
        batch.drop_column('active_tasks')
