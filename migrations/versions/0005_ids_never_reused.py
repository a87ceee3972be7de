"""ids are never reused: SQLite tables with surrogate ids become AUTOINCREMENT

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 02:00:00

SQLite hands out the largest id plus one, so the id of the newest user or task came back after
it was deleted (and with it a deleted user's unexpired token, or a deleted task's webhook log).
AUTOINCREMENT is a property of CREATE TABLE: each table is rebuilt with it (SQLite's documented
twelve-step procedure, which Alembic's batch mode runs), foreign keys checked afterwards.
PostgreSQL's sequences never reuse a value: nothing to do there.
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('user_account', 'task', 'webhook_delivery')


def _rebuild(autoincrement: bool) -> None:
    connection = op.get_bind()
    if connection.dialect.name != 'sqlite':
        return
    # Dropping the old table must not cascade to its children (task_input, task_result...):
    # foreign keys are off for the rebuild, which cannot be switched inside a transaction.
    sqlite = connection.connection.dbapi_connection
    if sqlite.in_transaction:
        sqlite.commit()
    sqlite.execute('PRAGMA foreign_keys=OFF')
    for table in TABLES:
        with op.batch_alter_table(table, recreate='always',
                                  table_kwargs={'sqlite_autoincrement': autoincrement}):
            pass
    broken = sqlite.execute('PRAGMA foreign_key_check').fetchall()
    if broken:
        raise RuntimeError(f'foreign keys broken by the rebuild: {broken[:5]}')
    if sqlite.in_transaction:
        sqlite.commit()
    sqlite.execute('PRAGMA foreign_keys=ON')


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
