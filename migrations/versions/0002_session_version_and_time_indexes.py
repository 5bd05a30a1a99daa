"""Session versions and save tokens, a session counter, and indexes for listing and time.

* ``sessions.version`` counts saves (1 after the first; sessions stored before this
  revision start at 0): a change counter for analysts.
* ``sessions.state_token`` is a random id of the stored state, new on every save. A save
  that carries the token it was loaded with writes only what was appended; any other save
  rewrites the session whole.
* ``statestore_counters`` keeps the number of sessions, maintained by triggers, so that a
  prune can tell it has nothing to do without counting rows.
* Listing indexes end in ``id`` (the tie-break of every listing), and ``created_at``
  indexes serve time-range queries over messages and responses.

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

SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER statestore_count_session_insert AFTER INSERT ON sessions
    BEGIN UPDATE statestore_counters SET value = value + 1 WHERE name = 'sessions'; END
    """,
    """
    CREATE TRIGGER statestore_count_session_delete AFTER DELETE ON sessions
    BEGIN UPDATE statestore_counters SET value = value - 1 WHERE name = 'sessions'; END
    """,
]

POSTGRESQL_TRIGGERS = [
    """
    CREATE FUNCTION statestore_count_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            UPDATE statestore_counters SET value = value + 1 WHERE name = 'sessions';
        ELSE
            UPDATE statestore_counters SET value = value - 1 WHERE name = 'sessions';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER statestore_count_sessions AFTER INSERT OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION statestore_count_sessions()
    """,
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
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
    op.add_column(
        "sessions",
        sa.Column(
            "state_token",
            sa.BigInteger(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Random id of the stored state; new on every save.",
        ),
    )
    # Existing rows get distinct random tokens too, so no two databases share one.
    if dialect == "postgresql":
        op.execute("UPDATE sessions SET state_token = floor(random() * 9.2e18)::bigint")
    else:
        op.execute("UPDATE sessions SET state_token = random()")
    op.drop_index(op.f("ix_sessions_user_id_updated_at"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_project_id_updated_at"), table_name="sessions")
    op.create_index(
        op.f("ix_sessions_user_id_updated_at_id"), "sessions", ["user_id", "updated_at", "id"]
    )
    op.create_index(
        op.f("ix_sessions_project_id_updated_at_id"), "sessions", ["project_id", "updated_at", "id"]
    )
    op.create_index(op.f("ix_messages_created_at"), "messages", ["created_at"])
    op.create_index(op.f("ix_responses_created_at"), "responses", ["created_at"])
    op.create_table(
        "statestore_counters",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_statestore_counters")),
    )
    op.execute(
        "INSERT INTO statestore_counters (name, value) SELECT 'sessions', count(*) FROM sessions"
    )
    for statement in POSTGRESQL_TRIGGERS if dialect == "postgresql" else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER statestore_count_sessions ON sessions")
        op.execute("DROP FUNCTION statestore_count_sessions()")
    else:
        op.execute("DROP TRIGGER statestore_count_session_insert")
        op.execute("DROP TRIGGER statestore_count_session_delete")
    op.drop_table("statestore_counters")
    op.drop_index(op.f("ix_responses_created_at"), table_name="responses")
    op.drop_index(op.f("ix_messages_created_at"), table_name="messages")
    op.drop_index(op.f("ix_sessions_project_id_updated_at_id"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_user_id_updated_at_id"), table_name="sessions")
    op.create_index(
        op.f("ix_sessions_project_id_updated_at"), "sessions", ["project_id", "updated_at"]
    )
    op.create_index(op.f("ix_sessions_user_id_updated_at"), "sessions", ["user_id", "updated_at"])
    # A batch (copy-and-move) on SQLite: statestore runs it with foreign keys off.
    with op.batch_alter_table("sessions") as batch_op:
        batch_op.drop_column("state_token")
        batch_op.drop_column("version")
