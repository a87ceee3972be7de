"""canceled status, idempotency keys, webhooks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 21:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('task') as batch:
        batch.drop_constraint(op.f('ck_task_status'), type_='check')
        batch.create_check_constraint(
            'status', "status IN ('queued', 'in progress', 'done', 'failed', 'canceled')")
        batch.add_column(sa.Column('webhook_url', sa.Text(), nullable=True))
    with op.batch_alter_table('user_account') as batch:
        batch.add_column(sa.Column('webhook_secret', sa.String(length=64), nullable=True))
    op.create_table(
        'idempotency_key',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('request_digest', sa.String(length=64), nullable=False),
        sa.Column('response', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['user_account.id'],
                                name=op.f('fk_idempotency_key_user_id_user_account'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'key', name=op.f('pk_idempotency_key')),
    )
    op.create_table(
        'webhook_delivery',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('event_id', sa.String(length=64), nullable=False),
        sa.Column('task_id', BIG_ID, nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['user_account.id'],
                                name=op.f('fk_webhook_delivery_user_id_user_account'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_delivery')),
        sa.UniqueConstraint('event_id', name=op.f('uq_webhook_delivery_event_id')),
    )
    op.create_index('ix_webhook_delivery_due', 'webhook_delivery',
                    ['state', 'next_attempt_at'], unique=False)
    op.create_index('ix_webhook_delivery_task_id', 'webhook_delivery', ['task_id'],
                    unique=False)
    op.create_table(
        'webhook_attempt',
        sa.Column('delivery_id', BIG_ID, nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('duration_ms', sa.Float(), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['delivery_id'], ['webhook_delivery.id'],
                                name=op.f('fk_webhook_attempt_delivery_id_webhook_delivery'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('delivery_id', 'attempt', name=op.f('pk_webhook_attempt')),
    )


def downgrade() -> None:
    op.drop_table('webhook_attempt')
    op.drop_index('ix_webhook_delivery_task_id', table_name='webhook_delivery')
    op.drop_index('ix_webhook_delivery_due', table_name='webhook_delivery')
    op.drop_table('webhook_delivery')
    op.drop_table('idempotency_key')
    op.execute("DELETE FROM task WHERE status = 'canceled'")
    with op.batch_alter_table('user_account') as batch:
        batch.drop_column('webhook_secret')
    with op.batch_alter_table('task') as batch:
        batch.drop_column('webhook_url')
        batch.drop_constraint(op.f('ck_task_status'), type_='check')
        batch.create_check_constraint(
            'status', "status IN ('queued', 'in progress', 'done', 'failed')")
