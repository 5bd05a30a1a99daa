"""The tables statestore keeps, and the column type every timestamp goes through.

The alembic revisions in ``migrations/`` create and evolve exactly these tables; a test
checks that autogenerate finds nothing to change at head. Stored formats:

* ids, names and other short strings: ``VARCHAR`` text, stored as given.
* timestamps: :class:`UTCDateTime` -- on SQLite ``YYYY-MM-DD HH:MM:SS.ffffff`` text in UTC
  (so text order is time order), on PostgreSQL ``timestamptz``.
* JSON: ``JSON`` (SQLite text usable with ``json_extract``; PostgreSQL ``json``).

Revision 0003 adds two read-only views over these tables, ``session_overview`` and
``session_exchanges``; they are created and dropped by the migrations only (see
``migrations/versions/0003_analytics_views_and_indexes.py``). So is the full-text search
index of revision 0006 (``search_entries``, and on SQLite the FTS5 table ``search_text``),
which triggers on ``messages`` and ``responses`` keep in step (see
``migrations/versions/0006_search_forks_filters.py`` and ``statestore._search``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "DOCUMENT_KINDS",
    "UTCDateTime",
    "counters",
    "documents",
    "messages",
    "metadata",
    "responses",
    "sessions",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Every statestore table, with stable constraint and index names."""

DOCUMENT_KINDS = ("markdown", "json")
"""The ``documents.kind`` values: a markdown and a JSON document may share a name."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp, stored so that SQL ordering is time ordering.

    Values are converted to UTC on the way in (SQLite keeps no offset, so mixed offsets
    would otherwise sort wrongly) and come back aware, in UTC, with microseconds. Naive
    values are refused: their zone would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} has no time zone; use UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


sessions = Table(
    "sessions",
    metadata,
    Column("id", String, primary_key=True, comment="Session id (a uuid4 string by default)."),
    Column("user_id", String, nullable=False),
    Column("active_seed_id", String, nullable=True),
    Column("active_persona_id", String, nullable=True),
    Column(
        "project_id",
        String,
        nullable=True,
        comment="metadata['project_ids'] when that is a string; kept by every save.",
    ),
    Column("message_count", Integer, nullable=False, comment="Number of user messages."),
    Column("response_count", Integer, nullable=False, comment="Number of agent responses."),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("metadata", JSON, nullable=False, comment="The session's metadata object."),
    Column(
        "extra",
        JSON(none_as_null=True),
        nullable=True,
        comment="Session fields statestore does not model, as a JSON object; NULL if none.",
    ),
    Column(
        "version",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="How many times the session was saved.",
    ),
    Column(
        "state_token",
        BigInteger,
        nullable=False,
        server_default=text("0"),
        comment="Random id of the stored state; new on every save.",
    ),
    Column(
        "parent_session_id",
        String,
        nullable=True,
        # No foreign key: a fork outlives the session it was copied from.
        comment="extra['parent_session_id'] when text: the session this fork was copied from.",
    ),
    Column(
        "forked_at", UTCDateTime, nullable=True, comment="extra['forked_at'] when an RFC 3339 time."
    ),
    Column(
        "unset_fields",
        JSON(none_as_null=True),
        nullable=True,
        comment=(
            "JSON list of user_messages/agent_responses/metadata when the session was "
            "given without them (an older file store's JSON), so export leaves them out too."
        ),
    ),
    Index(None, "updated_at", "id"),
    Index(None, "user_id", "updated_at", "id"),
    # Partial (revisions 0005, 0006): sessions without a project, seed, persona or parent
    # have no entry to write; every filter on these columns is an equality, which implies
    # NOT NULL. Each ends in (updated_at, id), so a listing filtered by one pages newest
    # first along it, as the user listing does.
    *(
        Index(
            None,
            *columns,
            sqlite_where=text(f"{columns[0]} IS NOT NULL"),
            postgresql_where=text(f"{columns[0]} IS NOT NULL"),
        )
        for columns in (
            ("project_id", "updated_at", "id"),
            ("active_seed_id", "updated_at", "id"),
            ("active_persona_id", "updated_at", "id"),
            ("parent_session_id", "updated_at", "id"),
        )
    ),
    Index(None, "created_at"),
)

messages = Table(
    "messages",
    metadata,
    Column(
        "session_id",
        String,
        ForeignKey("sessions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True, comment="0-based index in user_messages."),
    Column("content", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False, comment="The message's timestamp."),
    Column("extra", JSON(none_as_null=True), nullable=True, comment="Unmodelled fields."),
    Index(None, "created_at"),
)

responses = Table(
    "responses",
    metadata,
    Column(
        "session_id",
        String,
        ForeignKey("sessions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True, comment="0-based index in agent_responses."),
    Column("content", Text, nullable=False),
    Column(
        "reported_session_id",
        String,
        nullable=True,
        comment="AgentResponse.session_id as the agent reported it (may be NULL or differ).",
    ),
    Column("seed_id", String, nullable=True),
    Column("phase_reached", String, nullable=True),
    Column("evaluation_passed", Boolean, nullable=True),
    Column("created_at", UTCDateTime, nullable=False, comment="The response's timestamp."),
    Column("extra", JSON(none_as_null=True), nullable=True, comment="Unmodelled fields."),
    Index(None, "created_at"),
    Index(None, "seed_id", "evaluation_passed"),
    Index(None, "phase_reached"),
)

documents = Table(
    "documents",
    metadata,
    Column("category", String, primary_key=True, comment="Category path, e.g. 'memory/notes'."),
    Column("name", String, primary_key=True),
    Column("kind", String, primary_key=True, comment="'markdown' or 'json'."),
    Column("content", Text, nullable=False, comment="Markdown text, or JSON text."),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("kind IN ('markdown', 'json')", name="kind"),
)

counters = Table(
    "statestore_counters",
    metadata,
    Column("name", String, primary_key=True),
    Column(
        "value",
        BigInteger,
        nullable=False,
        comment="Rows 'sessions/N': shards of the number of sessions, kept by triggers.",
    ),
)
