"""Read-only views for analysts, and indexes on the columns they filter and group by.

* ``session_overview``: one row per session -- its counts, first and last activity (the
  earliest and latest message or response, else the session's own timestamps), duration
  in seconds, and how many responses passed and failed evaluation.
* ``session_exchanges``: one row per exchange -- the user message and the agent response at
  the same position, with the response's seed, phase and evaluation result and the seconds
  between the two. A response without a message at its position gets a row of its own.
* ``sessions.unset_fields``: which of ``user_messages``, ``agent_responses`` and
  ``metadata`` a session was given without (older file stores left them out when empty),
  so that an export writes its file back as it was.
* Indexes: ``responses (seed_id, evaluation_passed)`` (pass rate by seed),
  ``responses (phase_reached)``, ``sessions (active_seed_id)``,
  ``sessions (active_persona_id)`` and ``sessions (created_at)`` (sessions per day).

Views are written once per dialect because SQLite and PostgreSQL subtract timestamps
differently; their columns are the same on both. SQLite refuses to rename a table a view
reads, so a later revision that batch-alters (copies and renames) these tables must drop
the views first and create them again after.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite's date functions keep milliseconds only (and round), so seconds are the whole
# seconds of the text's first 19 characters plus the microseconds read from the rest
# (always six digits): exact, as PostgreSQL's are.
SECONDS_BETWEEN = {
    "sqlite": (
        "(CAST(strftime('%s', substr({later}, 1, 19)) AS INTEGER)"
        " - CAST(strftime('%s', substr({earlier}, 1, 19)) AS INTEGER)"
        " + (CAST(substr({later}, 21) AS INTEGER) - CAST(substr({earlier}, 21) AS INTEGER))"
        " / 1000000.0)"
    ),
    "postgresql": "EXTRACT(EPOCH FROM ({later} - {earlier}))::double precision",
}

SESSION_OVERVIEW = """
CREATE VIEW session_overview AS
SELECT
    session_id, user_id, project_id, active_seed_id, active_persona_id,
    message_count, response_count, created_at, updated_at,
    first_activity_at, last_activity_at,
    {duration} AS duration_seconds,
    evaluations_passed, evaluations_failed
FROM (
    SELECT
        s.id AS session_id, s.user_id, s.project_id, s.active_seed_id, s.active_persona_id,
        s.message_count, s.response_count, s.created_at, s.updated_at,
        COALESCE(
            (SELECT min(t.created_at) FROM (
                SELECT m.created_at FROM messages m WHERE m.session_id = s.id
                UNION ALL
                SELECT r.created_at FROM responses r WHERE r.session_id = s.id
            ) t),
            s.created_at
        ) AS first_activity_at,
        COALESCE(
            (SELECT max(t.created_at) FROM (
                SELECT m.created_at FROM messages m WHERE m.session_id = s.id
                UNION ALL
                SELECT r.created_at FROM responses r WHERE r.session_id = s.id
            ) t),
            s.updated_at
        ) AS last_activity_at,
        (SELECT count(*) FROM responses r
         WHERE r.session_id = s.id AND r.evaluation_passed = {true}) AS evaluations_passed,
        (SELECT count(*) FROM responses r
         WHERE r.session_id = s.id AND r.evaluation_passed = {false}) AS evaluations_failed
    FROM sessions s
) overview
"""

SESSION_EXCHANGES = """
CREATE VIEW session_exchanges AS
SELECT
    m.session_id, m.position, s.user_id, s.project_id,
    m.content AS user_content, m.created_at AS asked_at,
    r.content AS response_content, r.created_at AS answered_at,
    r.seed_id, r.phase_reached, r.evaluation_passed,
    {response_seconds} AS response_seconds
FROM messages m
JOIN sessions s ON s.id = m.session_id
LEFT JOIN responses r ON r.session_id = m.session_id AND r.position = m.position
UNION ALL
SELECT
    r.session_id, r.position, s.user_id, s.project_id,
    NULL, NULL,
    r.content, r.created_at,
    r.seed_id, r.phase_reached, r.evaluation_passed,
    NULL
FROM responses r
JOIN sessions s ON s.id = r.session_id
WHERE NOT EXISTS (
    SELECT 1 FROM messages m WHERE m.session_id = r.session_id AND m.position = r.position
)
"""

BOOLEANS = {"sqlite": ("1", "0"), "postgresql": ("TRUE", "FALSE")}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    seconds = SECONDS_BETWEEN[dialect]
    true, false = BOOLEANS[dialect]
    op.add_column(
        "sessions",
        sa.Column(
            "unset_fields",
            sa.JSON(none_as_null=True),
            nullable=True,
            comment=(
                "JSON list of user_messages/agent_responses/metadata when the session was "
                "given without them (an older file store's JSON), so export leaves them out too."
            ),
        ),
    )
    op.create_index(
        "ix_responses_seed_id_evaluation_passed", "responses", ["seed_id", "evaluation_passed"]
    )
    op.create_index("ix_responses_phase_reached", "responses", ["phase_reached"])
    op.create_index("ix_sessions_active_seed_id", "sessions", ["active_seed_id"])
    op.create_index("ix_sessions_active_persona_id", "sessions", ["active_persona_id"])
    op.create_index("ix_sessions_created_at", "sessions", ["created_at"])
    op.execute(
        SESSION_OVERVIEW.format(
            duration=seconds.format(later="last_activity_at", earlier="first_activity_at"),
            true=true,
            false=false,
        )
    )
    op.execute(
        SESSION_EXCHANGES.format(
            response_seconds=seconds.format(later="r.created_at", earlier="m.created_at")
        )
    )


def downgrade() -> None:
    op.execute("DROP VIEW session_exchanges")
    op.execute("DROP VIEW session_overview")
    op.drop_index("ix_sessions_created_at", table_name="sessions")
    op.drop_index("ix_sessions_active_persona_id", table_name="sessions")
    op.drop_index("ix_sessions_active_seed_id", table_name="sessions")
    op.drop_index("ix_responses_phase_reached", table_name="responses")
    op.drop_index("ix_responses_seed_id_evaluation_passed", table_name="responses")
    # On SQLite a batch copies the table and drops the old one with its triggers (the
    # session counter's): keep their SQL and create them again on the copy.
    trigger_sql: list[str] = []
    if op.get_bind().dialect.name == "sqlite":
        rows = op.get_bind().exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'sessions'"
        )
        trigger_sql = [row[0] for row in rows]
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("unset_fields")
    for statement in trigger_sql:
        op.execute(statement)
