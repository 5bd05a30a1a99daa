"""Leaner writes: the session indexes on optional columns hold only the rows that have one.

``sessions (project_id, updated_at, id)``, ``sessions (active_seed_id)`` and
``sessions (active_persona_id)`` become partial indexes ``WHERE <column> IS NOT NULL``.
Every filter statestore and the analytics recipes put on these columns is an equality
(``project_id = ...``, ``active_seed_id = ...``), which implies ``IS NOT NULL``, so the
same plans use them; a session without a project, seed or persona no longer has entries
in them to write on every create, save and delete. The project index also holds
``updated_at``, which every save changes: sessions without a project now save without it.

No rows change; downgrade builds the full indexes again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_sessions_project_id_updated_at_id": ("project_id", "updated_at", "id"),
    "ix_sessions_active_seed_id": ("active_seed_id",),
    "ix_sessions_active_persona_id": ("active_persona_id",),
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        where = sa.text(f"{columns[0]} IS NOT NULL")
        op.drop_index(name, table_name="sessions")
        op.create_index(name, "sessions", list(columns), sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, columns in INDEXES.items():
        op.drop_index(name, table_name="sessions")
        op.create_index(name, "sessions", list(columns))
