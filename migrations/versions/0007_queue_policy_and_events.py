"""queue policy (priority, turns, deadline) and stored task events

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 05:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("status = 'queued'")
QUEUED_WITH_DEADLINE = sa.text("status = 'queued' AND deadline_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table('task') as batch:
        batch.add_column(sa.Column('priority', sa.SmallInteger(), nullable=False,
                                   server_default='5'))
        batch.add_column(sa.Column('turn', sa.BigInteger(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('deadline_s', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('deadline_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_task_queued_order', 'task', [sa.text('priority DESC'), 'turn', 'id'],
                    postgresql_where=QUEUED, sqlite_where=QUEUED)
    op.create_index('ix_task_user_priority_turn', 'task', ['user_id', 'priority', 'turn'])
    op.create_index('ix_task_queued_deadline', 'task', ['deadline_at'],
                    postgresql_where=QUEUED_WITH_DEADLINE, sqlite_where=QUEUED_WITH_DEADLINE)
    with op.batch_alter_table('user_account') as batch:
        batch.add_column(sa.Column('event_seq', sa.BigInteger(), nullable=False,
                                   server_default='0'))
    turns = op.create_table(
        'queue_turn',
        sa.Column('priority', sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column('turn', sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(turns, [{'priority': p, 'turn': 0} for p in range(10)])
    op.create_table(
        'task_event',
        sa.Column('user_id', sa.Integer(),
                  sa.ForeignKey('user_account.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('seq', sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column('task_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_task_event_created_at', 'task_event', ['created_at'])


def downgrade() -> None:
    op.drop_index('ix_task_event_created_at', table_name='task_event')
    op.drop_table('task_event')
    op.drop_table('queue_turn')
    with op.batch_alter_table('user_account') as batch:
        batch.drop_column('event_seq')
    op.drop_index('ix_task_queued_deadline', table_name='task')
    op.drop_index('ix_task_user_priority_turn', table_name='task')
    op.drop_index('ix_task_queued_order', table_name='task')
    with op.batch_alter_table('task') as batch:
        for column in ('deadline_at', 'deadline_s', 'turn', 'priority'):
            batch.drop_column(column)
