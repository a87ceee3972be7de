"""the highest task priority each user may ask for (operators raise it)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 07:40:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('user_account') as batch:
        batch.add_column(sa.Column('max_priority', sa.SmallInteger(), nullable=False,
                                   server_default='5'))


def downgrade() -> None:
    with op.batch_alter_table('user_account') as batch:
        batch.drop_column('max_priority')
