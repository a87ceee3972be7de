"""usage deltas: counters lowered without the user's row lock; event ids by transaction

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 07:20:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Event ids on PostgreSQL become transaction ids times 2**16 (storage/events.py): far
    # above every per-user number stored before, so a stream resumed across the upgrade
    # misses nothing.
    op.create_table(
        'usage_delta',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), primary_key=True),
        sa.Column('user_id', sa.Integer(),
                  sa.ForeignKey('user_account.id', ondelete='CASCADE'), nullable=False),
        sa.Column('tasks', sa.BigInteger(), nullable=False),
        sa.Column('bytes', sa.BigInteger(), nullable=False),
    )
    op.create_index('ix_usage_delta_user_id', 'usage_delta', ['user_id'])


def downgrade() -> None:
    op.execute(
        "UPDATE user_account SET "
        "active_tasks = active_tasks + coalesce((SELECT sum(tasks) FROM usage_delta "
        "WHERE usage_delta.user_id = user_account.id), 0), "
        "stored_bytes = stored_bytes + coalesce((SELECT sum(bytes) FROM usage_delta "
        "WHERE usage_delta.user_id = user_account.id), 0)"
    )
    op.drop_index('ix_usage_delta_user_id', table_name='usage_delta')
    op.drop_table('usage_delta')
