"""Every SQL statement statestore runs, in one place, valid on SQLite and PostgreSQL.

Parameters are named (``:name``); both stdlib ``sqlite3`` and SQLAlchemy's ``text()``
take them. Timestamps are bound as the backend stores them (see ``statestore._tx``).
Every listing orders by ``updated_at DESC, id DESC``; the README's "Listing filters" table
says which index serves each filter. The search statements are in ``statestore._search``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = [
    "APPEND_TO_SESSION",
    "APPEND_TO_SESSION_WITH_METADATA",
    "COUNT_DOCUMENTS",
    "COUNT_SESSIONS",
    "DELETE_DOCUMENT",
    "DELETE_MESSAGES_FROM",
    "DELETE_RESPONSES_FROM",
    "DELETE_SESSION",
    "DELETE_SESSIONS_UP_TO",
    "DELETE_STALE_SESSIONS",
    "DELETE_STALE_SESSIONS_IN_ID_ORDER",
    "DELETE_USER_SESSIONS",
    "DELETE_USER_SESSIONS_IN_ID_ORDER",
    "DOCUMENTS_IN_CATEGORY",
    "FORK_MESSAGES",
    "FORK_RESPONSES",
    "FORK_SESSION",
    "INSERT_MESSAGE",
    "INSERT_RESPONSE",
    "INSERT_SESSION_IF_MISSING",
    "LIST_CATEGORIES",
    "LIST_DOCUMENT_NAMES",
    "LIST_SESSION_IDS",
    "LOAD_DOCUMENT",
    "LOAD_DOCUMENT_STAMPED",
    "LOAD_SESSION",
    "LOAD_SESSION_FOR_SHARE",
    "LOAD_SESSION_FOR_UPDATE",
    "LOCK_SESSION_COUNT",
    "LOCK_SESSION_COUNTER_SHARD",
    "METADATA_MATCH",
    "METADATA_VALUE",
    "OLDEST_SESSIONS_BOUND",
    "POSTGRESQL_SIZE",
    "POSTGRESQL_VACUUM",
    "PRUNABLE_EXCESS",
    "PRUNABLE_STALE",
    "SELECT_MESSAGES",
    "SELECT_RESPONSES",
    "SESSION_COUNTS",
    "SESSION_COUNTS_FOR_UPDATE",
    "SESSION_TOKENS",
    "SESSION_TOKENS_FOR_UPDATE",
    "STALE_SESSION_EXISTS",
    "STATS_DAYS",
    "STATS_PASS_RATES",
    "STATS_TOTALS",
    "UPSERT_DOCUMENT",
    "UPSERT_MESSAGE",
    "UPSERT_RESPONSE",
    "UPSERT_SESSION",
    "BoundRow",
    "CountsRow",
    "DocumentRow",
    "MessageRow",
    "ResponseRow",
    "SessionRow",
    "StampedDocumentRow",
    "SummaryRow",
    "TokenRow",
    "session_summaries",
]

_SESSION_VALUES = (
    ":id, :user_id, :active_seed_id, :active_persona_id, :project_id, :message_count, "
    ":response_count, :created_at, :updated_at, :metadata, :extra, 1, :state_token, "
    ":unset_fields, :parent_session_id, :forked_at"
)
_SESSION_COLUMNS = (
    "id, user_id, active_seed_id, active_persona_id, project_id, message_count, "
    "response_count, created_at, updated_at, metadata, extra, version, state_token, "
    "unset_fields, parent_session_id, forked_at"
)

UPSERT_SESSION = f"""
INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES ({_SESSION_VALUES})
ON CONFLICT (id) DO UPDATE SET
    user_id = excluded.user_id,
    active_seed_id = excluded.active_seed_id,
    active_persona_id = excluded.active_persona_id,
    project_id = excluded.project_id,
    message_count = excluded.message_count,
    response_count = excluded.response_count,
    created_at = excluded.created_at,
    updated_at = excluded.updated_at,
    metadata = excluded.metadata,
    extra = excluded.extra,
    version = sessions.version + 1,
    state_token = excluded.state_token,
    unset_fields = excluded.unset_fields,
    parent_session_id = excluded.parent_session_id,
    forked_at = excluded.forked_at
"""

INSERT_SESSION_IF_MISSING = f"""
INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES ({_SESSION_VALUES})
ON CONFLICT (id) DO NOTHING
"""

# -- row types: what each SELECT returns, read by name. A SELECT builds its column list from
# its row type, so the two cannot drift; timestamps and JSON are in storage form (``Any``:
# text on SQLite, datetimes and text on PostgreSQL).


def _columns(row_type: type[tuple[Any, ...]]) -> str:
    return ", ".join(row_type._fields)  # type: ignore[attr-defined]


class TokenRow(NamedTuple):
    """A session's stored state token."""

    id: str
    state_token: int


class CountsRow(NamedTuple):
    """What an append needs of the stored session: where its lists end, what is unset."""

    message_count: int
    response_count: int
    unset_fields: Any


class SessionRow(NamedTuple):
    """A session's own row, as a load reads it."""

    id: str
    user_id: str
    active_seed_id: str | None
    active_persona_id: str | None
    message_count: int
    response_count: int
    created_at: Any
    updated_at: Any
    metadata: Any
    extra: Any
    state_token: int
    unset_fields: Any


class MessageRow(NamedTuple):
    """One stored user message (read per row: unpacked, not wrapped)."""

    position: int
    content: str
    created_at: Any
    extra: Any


class ResponseRow(NamedTuple):
    """One stored agent response (read per row: unpacked, not wrapped)."""

    position: int
    content: str
    reported_session_id: str | None
    seed_id: str | None
    phase_reached: str | None
    evaluation_passed: Any
    created_at: Any
    extra: Any


class SummaryRow(NamedTuple):
    """What a listing shows of one session (read per row: unpacked, not wrapped)."""

    id: str
    user_id: str
    message_count: int
    active_seed_id: str | None
    project_id: str | None
    created_at: Any
    updated_at: Any
    parent_session_id: str | None


class BoundRow(NamedTuple):
    """Where a count prune stops: the newest session it may delete."""

    updated_at: Any
    id: str


class StampedDocumentRow(NamedTuple):
    """A document's content and when it was last saved."""

    content: str
    updated_at: Any


class DocumentRow(NamedTuple):
    """One document of a category, as export writes it."""

    name: str
    kind: str
    content: str
    updated_at: Any


SESSION_TOKENS = (
    f"SELECT {_columns(TokenRow)} FROM sessions WHERE id IN ({{placeholders}}) ORDER BY id"
)
"""Format ``placeholders`` with one ``:idN`` per session id."""

SESSION_TOKENS_FOR_UPDATE = (
    f"SELECT {_columns(TokenRow)} FROM sessions WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"
)
"""PostgreSQL: the tokens of the sessions in the array ``:ids``, locking their rows in id
order (a concurrent save of one of them then waits for this one; two transactions taking
rows in one order never wait on each other in a circle). One statement for any count."""

SESSION_COUNTS = f"SELECT {_columns(CountsRow)} FROM sessions WHERE id = :id"

SESSION_COUNTS_FOR_UPDATE = SESSION_COUNTS + " FOR UPDATE"
"""PostgreSQL: the same, locking the row (an append then has the session to itself)."""

_APPENDED = """
    message_count = :message_count, response_count = :response_count,
    updated_at = :updated_at, version = version + 1, state_token = :state_token,
    unset_fields = :unset_fields"""

APPEND_TO_SESSION = f"UPDATE sessions SET {_APPENDED} WHERE id = :id"
"""A session's row after an append: new counts, time and token."""

APPEND_TO_SESSION_WITH_METADATA = (
    f"UPDATE sessions SET {_APPENDED}, metadata = :metadata, project_id = :project_id "
    "WHERE id = :id"
)
"""The same, with the metadata replaced. Also the row of a save that only appended and kept
the row's other columns (``_rows.IDENTITY_COLUMNS``): an UPDATE that does not name a column
leaves that column's indexes unwritten."""

LOAD_SESSION = f"SELECT {_columns(SessionRow)} FROM sessions WHERE id = :id"

LOAD_SESSION_FOR_UPDATE = LOAD_SESSION + " FOR UPDATE"
"""PostgreSQL: the same, locking the row (``update_session_with``)."""

LOAD_SESSION_FOR_SHARE = LOAD_SESSION + " FOR SHARE"
"""PostgreSQL: the same, holding the row against saves (which lock it FOR UPDATE) until
this transaction ends: a fork then copies one state of the session, row by row."""

INSERT_MESSAGE = """
INSERT INTO messages (session_id, position, content, created_at, extra)
VALUES (:session_id, :position, :content, :created_at, :extra)
"""

UPSERT_MESSAGE = (
    INSERT_MESSAGE
    + """ON CONFLICT (session_id, position) DO UPDATE SET
    content = excluded.content, created_at = excluded.created_at, extra = excluded.extra
"""
)

INSERT_RESPONSE = """
INSERT INTO responses (session_id, position, content, reported_session_id, seed_id,
                       phase_reached, evaluation_passed, created_at, extra)
VALUES (:session_id, :position, :content, :reported_session_id, :seed_id,
        :phase_reached, :evaluation_passed, :created_at, :extra)
"""

UPSERT_RESPONSE = (
    INSERT_RESPONSE
    + """ON CONFLICT (session_id, position) DO UPDATE SET
    content = excluded.content, reported_session_id = excluded.reported_session_id,
    seed_id = excluded.seed_id, phase_reached = excluded.phase_reached,
    evaluation_passed = excluded.evaluation_passed, created_at = excluded.created_at,
    extra = excluded.extra
"""
)

DELETE_MESSAGES_FROM = (
    "DELETE FROM messages WHERE session_id = :session_id AND position >= :position"
)
DELETE_RESPONSES_FROM = (
    "DELETE FROM responses WHERE session_id = :session_id AND position >= :position"
)

SELECT_MESSAGES = f"""
SELECT {_columns(MessageRow)} FROM messages
WHERE session_id = :session_id AND position >= :start ORDER BY position
"""

SELECT_RESPONSES = f"""
SELECT {_columns(ResponseRow)}
FROM responses WHERE session_id = :session_id AND position >= :start ORDER BY position
"""

_SUMMARY_COLUMNS = _columns(SummaryRow)

_LISTING_FILTERS = {
    "user_id": "user_id = :user_id",
    "project_id": "project_id = :project_id",
    "active_seed_id": "active_seed_id = :active_seed_id",
    "active_persona_id": "active_persona_id = :active_persona_id",
    "forks_of": "parent_session_id = :forks_of",
    "after": "(updated_at, id) < (:after_updated_at, :after_id)",
    "updated_before": "updated_at < :updated_before",
    "updated_after": "updated_at > :updated_after",
    "created_before": "created_at < :created_before",
    "created_after": "created_at > :created_after",
}
"""Each filter a listing may take, by the argument that asks for it."""

METADATA_MATCH = {
    "sqlite": (
        "EXISTS (SELECT 1 FROM json_each(sessions.metadata) "
        "WHERE key = :metadata_key_{n} AND {value})"
    ),
    "postgresql": "(metadata -> CAST(:metadata_key_{n} AS text))::jsonb = {value}",
}
"""One ``metadata={key: value}`` entry (number ``n``), by dialect; ``value`` from
:data:`METADATA_VALUE`. SQLite's ``json_each`` reads keys decoded (a JSON path would not
match a key holding a quote or a backslash)."""

METADATA_VALUE = {
    "sqlite": {
        "text": "type = 'text' AND value = :metadata_value_{n}",
        "number": "type IN ('integer', 'real') AND value = :metadata_value_{n}",
        "true": "type = 'true'",
        "false": "type = 'false'",
        "null": "type = 'null'",
    },
    "postgresql": dict.fromkeys(
        ("text", "number", "true", "false", "null"), "CAST(:metadata_value_{n} AS jsonb)"
    ),
}
"""How a metadata value of each JSON type matches: as JSON compares (``1`` equals ``1.0``;
``true`` is not ``1``), on SQLite by the type and value ``json_each`` reads, on PostgreSQL
as ``jsonb`` (``:metadata_value_N`` is the value as JSON text there)."""


def session_summaries(given: set[str], metadata_matches: Sequence[str] = ()) -> str:
    """The listing of summaries with the filters ``given`` (and ``"limit"`` for a page),
    and ``metadata_matches`` (from :data:`METADATA_MATCH`) ANDed with them.

    The user, project, seed, persona, parent and update-time filters read an index ending
    in ``(updated_at, id)`` in order; a creation-time range reads ``created_at`` and sorts
    what it gives; metadata is checked on the rows the others give.
    """
    conditions = [sql for name, sql in _LISTING_FILTERS.items() if name in given]
    conditions += metadata_matches
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    page = "LIMIT :limit" if "limit" in given else ""
    return (
        f"SELECT {_SUMMARY_COLUMNS} FROM sessions {where} ORDER BY updated_at DESC, id DESC {page}"
    )


# -- forks: one statement per table, copying rows inside the database -----------------------

FORK_SESSION = f"""
INSERT INTO sessions ({_SESSION_COLUMNS})
SELECT :new_id, user_id, active_seed_id, active_persona_id, project_id, :message_count,
       :response_count, created_at, :forked_at, metadata, :extra, 1, :state_token,
       unset_fields, id, :forked_at
FROM sessions WHERE id = :source_id
ON CONFLICT (id) DO NOTHING
"""
"""The fork's row: the source's (as ``LOAD_SESSION`` read it in this transaction), with
its new id, counts, extra fields (the lineage added), lineage columns and times (last
updated when it was made; created when the source was)."""

FORK_MESSAGES = """
INSERT INTO messages (session_id, position, content, created_at, extra)
SELECT :new_id, position, content, created_at, extra FROM messages
WHERE session_id = :source_id AND position < :message_count ORDER BY position
"""

FORK_RESPONSES = """
INSERT INTO responses (session_id, position, content, reported_session_id, seed_id,
                       phase_reached, evaluation_passed, created_at, extra)
SELECT :new_id, position, content, reported_session_id, seed_id, phase_reached,
       evaluation_passed, created_at, extra
FROM responses WHERE session_id = :source_id AND position < :response_count ORDER BY position
"""


DELETE_SESSION = "DELETE FROM sessions WHERE id = :id"

DELETE_USER_SESSIONS = "DELETE FROM sessions WHERE user_id = :user_id"

DELETE_USER_SESSIONS_IN_ID_ORDER = """
DELETE FROM sessions WHERE id IN (
    SELECT id FROM sessions WHERE user_id = :user_id ORDER BY id FOR UPDATE
) AND user_id = :user_id
"""
"""PostgreSQL: the same, locking the rows in id order first (see the stale prune's)."""

LIST_SESSION_IDS = "SELECT id FROM sessions"

_COUNTER_SHARDS = "name LIKE 'sessions/%'"
"""The rows of ``statestore_counters`` whose values add up to the number of sessions: one
per server backend modulo 16 on PostgreSQL, kept by a trigger (revision 0004); one on
SQLite."""

COUNT_SESSIONS = f"SELECT coalesce(sum(value), 0) FROM statestore_counters WHERE {_COUNTER_SHARDS}"

LOCK_SESSION_COUNT = (
    f"SELECT value FROM statestore_counters WHERE {_COUNTER_SHARDS} ORDER BY name FOR UPDATE"
)
"""PostgreSQL: lock every shard of the session count (in name order) and read them, for
a count that no other transaction can change until this one ends (a count prune)."""

LOCK_SESSION_COUNTER_SHARD = """
SELECT 1 FROM statestore_counters WHERE name = 'sessions/' || (pg_backend_pid() % 16)
FOR NO KEY UPDATE
"""
"""PostgreSQL: lock the shard of the session count that this connection's trigger updates.

A transaction that may create or delete sessions takes it before any session row: then
no transaction holds a session row while it waits for a shard, and a count prune, which
takes every shard first, cannot wait in a circle with it. Transactions on different
connections mostly take different shards, so creates do not queue on one row."""

# -- the prune rule: what a prune deletes, and what its dry run lists -------------------------

_STALE = "updated_at < :cutoff"
"""A session past the TTL: last updated before ``:cutoff``."""

_OLDEST_FIRST = "ORDER BY updated_at, id"
"""The order a prune deletes in: least recently updated first."""

STALE_SESSION_EXISTS = f"SELECT 1 FROM sessions WHERE {_STALE} LIMIT 1"

# Every condition is repeated in the outer WHERE: at READ COMMITTED, PostgreSQL re-checks
# only the outer conditions against a row that a concurrent save changed, not the
# sub-select's, so without it a session saved just now would be deleted.
DELETE_STALE_SESSIONS = f"""
DELETE FROM sessions WHERE id IN (
    SELECT id FROM sessions WHERE {_STALE} {_OLDEST_FIRST} LIMIT :batch
) AND {_STALE}
"""

DELETE_STALE_SESSIONS_IN_ID_ORDER = f"""
DELETE FROM sessions WHERE id IN (
    SELECT id FROM sessions WHERE id IN (
        SELECT id FROM sessions WHERE {_STALE} {_OLDEST_FIRST} LIMIT :batch
    ) ORDER BY id FOR UPDATE
) AND {_STALE}
"""
"""PostgreSQL: the same, locking the rows in id order first, as a batch of saves does, so
that a prune and a batch of saves never each hold a row the other waits for."""

OLDEST_SESSIONS_BOUND = f"""
SELECT {_columns(BoundRow)} FROM sessions {_OLDEST_FIRST} LIMIT 1 OFFSET :offset
"""
"""The newest of the ``:offset + 1`` least recently updated sessions."""

PRUNABLE_STALE = f"SELECT {_SUMMARY_COLUMNS} FROM sessions WHERE {_STALE} {_OLDEST_FIRST}"
"""What the TTL rule deletes, in the order the prune deletes it."""

PRUNABLE_EXCESS = {
    True: f"""
SELECT {_SUMMARY_COLUMNS} FROM sessions WHERE NOT ({_STALE}) {_OLDEST_FIRST} LIMIT :excess
""",
    False: f"SELECT {_SUMMARY_COLUMNS} FROM sessions {_OLDEST_FIRST} LIMIT :excess",
}
"""What the count rule deletes (``:excess`` sessions), after the TTL rule or without it
(the key: whether a TTL applies)."""

DELETE_SESSIONS_UP_TO = "DELETE FROM sessions WHERE (updated_at, id) <= (:updated_at, :id)"
"""Delete the sessions listed at or before a bound from ``OLDEST_SESSIONS_BOUND``."""

UPSERT_DOCUMENT = """
INSERT INTO documents (category, name, kind, content, created_at, updated_at)
VALUES (:category, :name, :kind, :content, :now, :now)
ON CONFLICT (category, name, kind) DO UPDATE SET
    content = excluded.content, updated_at = excluded.updated_at
"""

LOAD_DOCUMENT = """
SELECT content FROM documents WHERE category = :category AND name = :name AND kind = :kind
"""

LOAD_DOCUMENT_STAMPED = f"""
SELECT {_columns(StampedDocumentRow)} FROM documents
WHERE category = :category AND name = :name AND kind = :kind
"""

LIST_DOCUMENT_NAMES = "SELECT name FROM documents WHERE category = :category"

LIST_CATEGORIES = "SELECT DISTINCT category FROM documents ORDER BY category"

DOCUMENTS_IN_CATEGORY = f"""
SELECT {_columns(DocumentRow)} FROM documents
WHERE category = :category ORDER BY name, kind
"""

DELETE_DOCUMENT = """
DELETE FROM documents WHERE category = :category AND name = :name AND kind = :kind
"""

_TABLES = ("sessions", "messages", "responses", "documents", "statestore_counters")

POSTGRESQL_SIZE = "SELECT " + " + ".join(
    f"pg_total_relation_size('{table}'::regclass)" for table in _TABLES
)
"""Bytes statestore's tables and their indexes take on PostgreSQL."""

POSTGRESQL_VACUUM = f"VACUUM (FULL, ANALYZE) {', '.join(_TABLES)}"

# -- stats, from the views of revision 0003 ------------------------------------------------

STATS_TOTALS = """
SELECT count(*), count(DISTINCT user_id), sum(message_count), sum(response_count),
       min(first_activity_at), max(last_activity_at)
FROM session_overview
"""

COUNT_DOCUMENTS = "SELECT count(*) FROM documents"

STATS_PASS_RATES = """
SELECT seed_id, count(*) AS evaluated,
       sum(CASE WHEN evaluation_passed THEN 1 ELSE 0 END) AS passed
FROM session_exchanges WHERE evaluation_passed IS NOT NULL
GROUP BY seed_id ORDER BY seed_id NULLS FIRST
"""

_STATS_DAYS = """
SELECT {day} AS day, count(*), count(DISTINCT session_id), count(DISTINCT user_id)
FROM session_exchanges WHERE asked_at >= :since
GROUP BY {day} ORDER BY day
"""
STATS_DAYS = {
    "sqlite": _STATS_DAYS.format(day="date(asked_at)"),
    "postgresql": _STATS_DAYS.format(day="CAST(asked_at AT TIME ZONE 'UTC' AS date)"),
}
"""Activity per UTC day since ``:since``, by dialect."""
