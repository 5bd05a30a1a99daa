"""The session counter in shards, so that parallel creates do not queue on one row.

Until now one row of ``statestore_counters`` (``'sessions'``) held the number of
sessions, updated by a trigger on every insert and delete of a session: on PostgreSQL
every transaction that created or deleted a session held that row's lock until it
committed, so creates from many processes ran one at a time. The count now lives in the
rows ``'sessions/0'`` .. ``'sessions/15'`` on PostgreSQL, and the trigger updates the row
of the server backend running it (``pg_backend_pid() % 16``): transactions on different
connections update different rows. The number of sessions is the sum of these rows.
SQLite has one writer at a time, so it keeps a single row, renamed ``'sessions/0'``.

Every count is kept: the old row becomes shard 0, the new shards start at 0.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARDS = 16


def _postgresql_function(counter: str) -> str:
    return f"""
    CREATE OR REPLACE FUNCTION statestore_count_sessions() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            UPDATE statestore_counters SET value = value + 1 WHERE name = {counter};
        ELSE
            UPDATE statestore_counters SET value = value - 1 WHERE name = {counter};
        END IF;
        RETURN NULL;
    END $$
    """


def _sqlite_triggers(counter: str) -> list[str]:
    return [
        "DROP TRIGGER statestore_count_session_insert",
        "DROP TRIGGER statestore_count_session_delete",
        f"""
        CREATE TRIGGER statestore_count_session_insert AFTER INSERT ON sessions
        BEGIN UPDATE statestore_counters SET value = value + 1 WHERE name = {counter}; END
        """,
        f"""
        CREATE TRIGGER statestore_count_session_delete AFTER DELETE ON sessions
        BEGIN UPDATE statestore_counters SET value = value - 1 WHERE name = {counter}; END
        """,
    ]


def upgrade() -> None:
    op.execute("UPDATE statestore_counters SET name = 'sessions/0' WHERE name = 'sessions'")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "INSERT INTO statestore_counters (name, value) "
            f"SELECT 'sessions/' || shard, 0 FROM generate_series(1, {SHARDS - 1}) AS shard"
        )
        op.execute(_postgresql_function(f"'sessions/' || (pg_backend_pid() % {SHARDS})"))
    else:
        for statement in _sqlite_triggers("'sessions/0'"):
            op.execute(statement)


def downgrade() -> None:
    op.execute(
        "UPDATE statestore_counters SET value = "
        "(SELECT sum(value) FROM statestore_counters WHERE name LIKE 'sessions/%') "
        "WHERE name = 'sessions/0'"
    )
    op.execute(
        "DELETE FROM statestore_counters WHERE name LIKE 'sessions/%' AND name <> 'sessions/0'"
    )
    op.execute("UPDATE statestore_counters SET name = 'sessions' WHERE name = 'sessions/0'")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_postgresql_function("'sessions'"))
    else:
        for statement in _sqlite_triggers("'sessions'"):
            op.execute(statement)
