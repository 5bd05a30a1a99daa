"""Full-text search, session lineage, and listing indexes for seed, persona and parent.

* ``sessions.parent_session_id`` and ``sessions.forked_at``: the session a fork was copied
  from and when (both NULL for other sessions), filled from the extra fields of those
  names. No foreign key: deleting a parent leaves its forks whole, still naming it.
* ``sessions (active_seed_id, updated_at, id)``, ``(active_persona_id, updated_at, id)``
  and ``(parent_session_id, updated_at, id)``, partial (``WHERE <column> IS NOT NULL``)
  like 0005's: a listing filtered by one of them pages newest first along it, reading only
  the page (0005's seed and persona indexes made it sort every session with that value:
  44 times the unfiltered listing for a seed of 10,000 sessions). The price: a save of a
  session that has a seed or persona now writes that index too, as every save writes the
  user index.
* The search index: one row of ``search_entries`` per user message and agent response
  (``kind`` ``'message'`` or ``'response'``, with its session and position), numbered by
  ``entry_id`` in the order the texts were written, and the text's words --

  - on SQLite in the FTS5 table ``search_text`` (contentless: the words only, the text
    stays in its own table; rowid = ``entry_id``; tokenizer ``unicode61`` without
    diacritic folding). ``entry_id`` is ``search_entries``' AUTOINCREMENT rowid, never
    used twice: words an entry leaves behind (a write that fired no trigger) can never be
    taken for a later entry's;
  - on PostgreSQL in ``search_entries.document``, a ``tsvector`` of the ``simple``
    configuration with a GIN index, of the text's first 100,000 characters (a
    ``tsvector`` holds at most 1 MB).

  Triggers on ``messages`` and ``responses`` keep it in step with every insert, delete and
  change of text, whoever writes (statestore, an import, plain SQL). A text written again
  gets a new, higher ``entry_id``. The rows stored now are indexed in timestamp order.

Downgrade drops the search index, the parent index and the lineage columns (the extra
fields keep the lineage), and builds 0005's seed and persona indexes again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

import statestore._schema

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LISTING_INDEXES = {
    "active_seed_id": ("ix_sessions_active_seed_id", "ix_sessions_active_seed_id_updated_at_id"),
    "active_persona_id": (
        "ix_sessions_active_persona_id",
        "ix_sessions_active_persona_id_updated_at_id",
    ),
}
"""0005's index of each column, and the one that replaces it."""

PARENT_INDEX = "ix_sessions_parent_session_id_updated_at_id"

KINDS = {"messages": "message", "responses": "response"}
"""The table of each kind of text, and the ``search_entries.kind`` naming it."""

ENTRY_KEY = "session_id = {row}.session_id AND kind = '{kind}' AND position = {row}.position"
TEXT_CHANGED = (
    "old.content IS NOT new.content OR old.session_id IS NOT new.session_id"
    " OR old.position IS NOT new.position"
)

# SQLite. Deleting an entry's words from a contentless FTS5 table needs the text they came
# from, which the delete and update triggers have as old.content. An insert first drops an
# entry left under its key by a write that fired no trigger (INSERT OR REPLACE deletes
# without triggers): its words stay behind under an entry_id no entry will have again
# (AUTOINCREMENT), unreachable, until a rebuild.
SQLITE_TABLES = [
    """
    CREATE TABLE search_entries (
        entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        position INTEGER NOT NULL,
        CONSTRAINT uq_search_entries_session_id_kind_position UNIQUE (session_id, kind, position)
    )
    """,
    """
    CREATE VIRTUAL TABLE search_text USING fts5(
        content, content='', columnsize=0, tokenize='unicode61 remove_diacritics 0'
    )
    """,
    # Each commit writes its words as a new segment: in leaves of 1,000 bytes rather than
    # 4,050, and merged 8 at a time rather than 4, an append wrote 3.2 pages of the index
    # rather than 5.0 (bench_wal_pages.py measures the whole write).
    "INSERT INTO search_text (search_text, rank) VALUES ('pgsz', 1000)",
    "INSERT INTO search_text (search_text, rank) VALUES ('automerge', 8)",
]

SQLITE_INDEX_ROW = """
    DELETE FROM search_entries WHERE {new_key};
    INSERT INTO search_entries (session_id, kind, position)
        VALUES (new.session_id, '{kind}', new.position);
    INSERT INTO search_text (rowid, content) VALUES (last_insert_rowid(), new.content);
"""
SQLITE_UNINDEX_ROW = """
    INSERT INTO search_text (search_text, rowid, content)
        SELECT 'delete', entry_id, old.content FROM search_entries WHERE {old_key};
    DELETE FROM search_entries WHERE {old_key};
"""


def _sqlite_triggers(table: str, kind: str) -> list[str]:
    keys = {
        "kind": kind,
        "new_key": ENTRY_KEY.format(row="new", kind=kind),
        "old_key": ENTRY_KEY.format(row="old", kind=kind),
    }
    index_row = SQLITE_INDEX_ROW.format(**keys)
    unindex_row = SQLITE_UNINDEX_ROW.format(**keys)
    return [
        f"CREATE TRIGGER {table}_search_insert AFTER INSERT ON {table} BEGIN {index_row} END",
        f"CREATE TRIGGER {table}_search_delete AFTER DELETE ON {table} BEGIN {unindex_row} END",
        f"""CREATE TRIGGER {table}_search_update AFTER UPDATE OF content, session_id, position
        ON {table} WHEN {TEXT_CHANGED} BEGIN {unindex_row} {index_row} END""",
    ]


POSTGRESQL_TABLES = [
    """
    CREATE TABLE search_entries (
        entry_id BIGINT GENERATED ALWAYS AS IDENTITY,
        session_id VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        position INTEGER NOT NULL,
        document TSVECTOR NOT NULL,
        CONSTRAINT pk_search_entries PRIMARY KEY (entry_id),
        CONSTRAINT uq_search_entries_session_id_kind_position UNIQUE (session_id, kind, position)
    )
    """,
    "CREATE INDEX ix_search_entries_document ON search_entries USING gin (document)",
    # The planner walks entries newest first for a term it thinks common and asks the GIN
    # index for one it thinks rare; ten times the default statistics keep 10,000 words'
    # frequencies, so that fewer rare words are taken for common ones.
    "ALTER TABLE search_entries ALTER COLUMN document SET STATISTICS 1000",
    """
    CREATE FUNCTION statestore_search_index() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            DELETE FROM search_entries WHERE session_id = OLD.session_id
                AND kind = TG_ARGV[0] AND position = OLD.position;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            -- An entry left under the key by a write that fired no trigger (TRUNCATE).
            DELETE FROM search_entries WHERE session_id = NEW.session_id
                AND kind = TG_ARGV[0] AND position = NEW.position;
            INSERT INTO search_entries (session_id, kind, position, document)
            VALUES (NEW.session_id, TG_ARGV[0], NEW.position,
                    to_tsvector('simple', left(NEW.content, 100000)));
        END IF;
        RETURN NULL;
    END
    $$
    """,
]


def _postgresql_triggers(table: str, kind: str) -> list[str]:
    changed = TEXT_CHANGED.replace("IS NOT", "IS DISTINCT FROM").replace("old.", "OLD.")
    changed = changed.replace("new.", "NEW.")
    return [
        f"""CREATE TRIGGER {table}_search AFTER INSERT OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION statestore_search_index('{kind}')""",
        f"""CREATE TRIGGER {table}_search_update AFTER UPDATE OF content, session_id, position
        ON {table} FOR EACH ROW WHEN ({changed})
        EXECUTE FUNCTION statestore_search_index('{kind}')""",
    ]


# The texts stored now, oldest first: their entries are numbered in that order.
STORED_TEXTS = """
    SELECT session_id, kind, position, content FROM (
        SELECT session_id, 'message' AS kind, position, content, created_at FROM messages
        UNION ALL
        SELECT session_id, 'response' AS kind, position, content, created_at FROM responses
    ) AS texts ORDER BY created_at, session_id, kind, position
"""


def _index_stored_texts(dialect: str) -> None:
    if dialect == "sqlite":
        op.execute(
            "INSERT INTO search_entries (session_id, kind, position) "
            f"SELECT session_id, kind, position FROM ({STORED_TEXTS}) AS ordered"
        )
        # Each entry just made, joined to its text by key (no second sort of them all).
        op.execute(
            "INSERT INTO search_text (rowid, content) "
            "SELECT e.entry_id, coalesce(m.content, r.content) FROM search_entries AS e "
            "LEFT JOIN messages AS m ON e.kind = 'message' "
            "AND m.session_id = e.session_id AND m.position = e.position "
            "LEFT JOIN responses AS r ON e.kind = 'response' "
            "AND r.session_id = e.session_id AND r.position = e.position"
        )
    else:
        op.execute(
            "INSERT INTO search_entries (session_id, kind, position, document) "
            "SELECT session_id, kind, position, to_tsvector('simple', left(content, 100000)) "
            f"FROM ({STORED_TEXTS}) AS ordered"
        )


EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
"""The timestamps statestore stores (``statestore.models.MIN_TIMESTAMP`` .. ``MAX_``)."""


def _lineage(extra: Any) -> tuple[str | None, datetime | None]:
    """A session's lineage columns from its extra fields, as ``statestore._rows`` derives
    them on every save (a copy: a revision must not change when the package does)."""
    fields = json.loads(extra) if isinstance(extra, str) else extra
    if not isinstance(fields, dict):
        return None, None
    parent, forked_at = fields.get("parent_session_id"), fields.get("forked_at")
    try:
        forked_at = datetime.fromisoformat(forked_at) if isinstance(forked_at, str) else None
    except ValueError:
        forked_at = None
    if forked_at is not None and (
        forked_at.utcoffset() is None or not EARLIEST <= forked_at <= LATEST
    ):
        forked_at = None
    return (parent if isinstance(parent, str) else None), forked_at


def _fill_lineage() -> None:
    """Sessions stored with lineage fields (the service's forks) get the columns filled."""
    connection = op.get_bind()
    update = sa.text(
        "UPDATE sessions SET parent_session_id = :parent, forked_at = :forked_at WHERE id = :id"
    ).bindparams(sa.bindparam("forked_at", type_=statestore._schema.UTCDateTime()))
    stored = connection.execute(sa.text("SELECT id, extra FROM sessions WHERE extra IS NOT NULL"))
    for session_id, extra in stored.all():
        parent, forked_at = _lineage(extra)
        if parent is not None or forked_at is not None:
            connection.execute(update, {"id": session_id, "parent": parent, "forked_at": forked_at})


def _partial_index(name: str, columns: list[str]) -> None:
    where = sa.text(f"{columns[0]} IS NOT NULL")
    op.create_index(name, "sessions", columns, sqlite_where=where, postgresql_where=where)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    parent = "extra['parent_session_id'] when text: the session this fork was copied from."
    op.add_column(
        "sessions", sa.Column("parent_session_id", sa.String(), nullable=True, comment=parent)
    )
    # UTC, as every timestamp column (see statestore._schema.UTCDateTime).
    forked_at = sa.DateTime(timezone=True)
    op.add_column(
        "sessions",
        sa.Column(
            "forked_at",
            forked_at,
            nullable=True,
            comment="extra['forked_at'] when an RFC 3339 time.",
        ),
    )
    _fill_lineage()
    for column, (old, new) in LISTING_INDEXES.items():
        op.drop_index(old, table_name="sessions")
        _partial_index(new, [column, "updated_at", "id"])
    _partial_index(PARENT_INDEX, ["parent_session_id", "updated_at", "id"])
    statements = SQLITE_TABLES if dialect == "sqlite" else POSTGRESQL_TABLES
    triggers = _sqlite_triggers if dialect == "sqlite" else _postgresql_triggers
    for statement in statements:
        op.execute(statement)
    _index_stored_texts(dialect)
    for table, kind in KINDS.items():
        for statement in triggers(table, kind):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in KINDS:
        if dialect == "sqlite":
            for event in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER {table}_search_{event}")
        else:
            for trigger in ("search", "search_update"):
                op.execute(f"DROP TRIGGER {table}_{trigger} ON {table}")
    if dialect == "sqlite":
        op.execute("DROP TABLE search_text")
    else:
        op.execute("DROP FUNCTION statestore_search_index()")
    op.execute("DROP TABLE search_entries")
    op.drop_index(PARENT_INDEX, table_name="sessions")
    for column, (old, new) in LISTING_INDEXES.items():
        op.drop_index(new, table_name="sessions")
        _partial_index(old, [column])
    # In place on both (SQLite 3.35+): a batch copy would have to rename a table the
    # analytics views read, which SQLite refuses.
    op.execute("ALTER TABLE sessions DROP COLUMN forked_at")
    op.execute("ALTER TABLE sessions DROP COLUMN parent_session_id")
