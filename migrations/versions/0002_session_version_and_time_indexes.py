"""Count saves on each session; index message and response times.

``sessions.version`` is how many times the session has been saved (1 after the first save;
sessions stored before this revision start at 0). It gives analysts a change counter and
the store an optimistic-concurrency check. The ``created_at`` indexes serve time-range
queries over messages and responses.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sessions",
        sa.Column(
            "version",
            sa.Integer(),
            server_default=sa.text("0"),
            nullable=False,
            comment="How many times the session was saved.",
        ),
    )
    op.create_index(op.f("ix_messages_created_at"), "messages", ["created_at"])
    op.create_index(op.f("ix_responses_created_at"), "responses", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_responses_created_at"), table_name="responses")
    op.drop_index(op.f("ix_messages_created_at"), table_name="messages")
    # A batch (copy-and-move) on SQLite: statestore runs it with foreign keys off.
    with op.batch_alter_table("sessions") as batch_op:
        batch_op.drop_column("version")
