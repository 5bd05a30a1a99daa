"""Sessions, their messages and responses, and named documents.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("statestore",)
depends_on: str | Sequence[str] | None = None

# Every timestamp column is UTC: text 'YYYY-MM-DD HH:MM:SS.ffffff' on SQLite, timestamptz
# on PostgreSQL (see statestore._schema.UTCDateTime).
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column(
            "id", sa.String(), nullable=False, comment="Session id (a uuid4 string by default)."
        ),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("active_seed_id", sa.String(), nullable=True),
        sa.Column("active_persona_id", sa.String(), nullable=True),
        sa.Column(
            "project_id",
            sa.String(),
            nullable=True,
            comment="metadata['project_ids'] when that is a string; kept by every save.",
        ),
        sa.Column(
            "message_count", sa.Integer(), nullable=False, comment="Number of user messages."
        ),
        sa.Column(
            "response_count", sa.Integer(), nullable=False, comment="Number of agent responses."
        ),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False, comment="The session's metadata object."),
        sa.Column(
            "extra",
            sa.JSON(none_as_null=True),
            nullable=True,
            comment="Session fields statestore does not model, as a JSON object; NULL if none.",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_index(op.f("ix_sessions_updated_at_id"), "sessions", ["updated_at", "id"])
    op.create_index(op.f("ix_sessions_user_id_updated_at"), "sessions", ["user_id", "updated_at"])
    op.create_index(
        op.f("ix_sessions_project_id_updated_at"), "sessions", ["project_id", "updated_at"]
    )
    op.create_table(
        "messages",
        sa.Column("session_id", sa.String(), nullable=False),
        sa.Column(
            "position", sa.Integer(), nullable=False, comment="0-based index in user_messages."
        ),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False, comment="The message's timestamp."),
        sa.Column("extra", sa.JSON(none_as_null=True), nullable=True, comment="Unmodelled fields."),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_messages_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "position", name=op.f("pk_messages")),
    )
    op.create_table(
        "responses",
        sa.Column("session_id", sa.String(), nullable=False),
        sa.Column(
            "position", sa.Integer(), nullable=False, comment="0-based index in agent_responses."
        ),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column(
            "reported_session_id",
            sa.String(),
            nullable=True,
            comment="AgentResponse.session_id as the agent reported it (may be NULL or differ).",
        ),
        sa.Column("seed_id", sa.String(), nullable=True),
        sa.Column("phase_reached", sa.String(), nullable=True),
        sa.Column("evaluation_passed", sa.Boolean(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False, comment="The response's timestamp."),
        sa.Column("extra", sa.JSON(none_as_null=True), nullable=True, comment="Unmodelled fields."),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_responses_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "position", name=op.f("pk_responses")),
    )
    op.create_table(
        "documents",
        sa.Column(
            "category", sa.String(), nullable=False, comment="Category path, e.g. 'memory/notes'."
        ),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False, comment="'markdown' or 'json'."),
        sa.Column("content", sa.Text(), nullable=False, comment="Markdown text, or JSON text."),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.CheckConstraint("kind IN ('markdown', 'json')", name=op.f("ck_documents_kind")),
        sa.PrimaryKeyConstraint("category", "name", "kind", name=op.f("pk_documents")),
    )


def downgrade() -> None:
    op.drop_table("documents")
    op.drop_table("responses")
    op.drop_table("messages")
    op.drop_index(op.f("ix_sessions_project_id_updated_at"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_user_id_updated_at"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_updated_at_id"), table_name="sessions")
    op.drop_table("sessions")
