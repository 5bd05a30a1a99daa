"""The transaction bodies: what each repository operation does inside one transaction.

Each function takes a :class:`~statestore._tx.Tx` and runs statements from
:mod:`statestore._sql`; :mod:`statestore._runner` decides which thread or connection that is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from statestore import _rows, _sql
from statestore._listing import SessionFilter
from statestore._tracking import RowLog
from statestore._tx import Tx
from statestore._validate import SESSIONS_CATEGORY
from statestore.errors import SessionExistsError
from statestore.models import Session, SessionSummary, SessionTail

__all__ = [
    "AppendJob",
    "ImportCounts",
    "SaveJob",
    "append_to_session",
    "delete_document",
    "delete_excess_sessions",
    "delete_file",
    "delete_session",
    "delete_stale_sessions",
    "delete_user_sessions",
    "documents_in",
    "fork_session",
    "import_documents",
    "import_sessions",
    "insert_session_if_missing",
    "list_categories",
    "list_category",
    "list_document_names",
    "list_session_ids",
    "list_summaries",
    "load_document",
    "load_session",
    "load_tail",
    "prunable_sessions",
    "prune_pending",
    "save_document",
    "save_sessions",
]

_LOOKUP_CHUNK = 500
"""Session ids per token lookup (PostgreSQL takes at most 32,767 parameters)."""


@dataclass(eq=False, slots=True)
class SaveJob:
    """A checked save, ready to run in a transaction: the session's state at the call.

    Everything a save may write is captured as rows when it is called, so the state it
    stores is the state the caller asked for, however the session object changes while
    the save waits.

    Attributes:
        session_id: The session saved.
        session_row: Its ``sessions`` row, with the new ``state_token``.
        expected_token: The token the stored row must have for the append-only path, or
            ``None`` to rewrite the session whole.
        narrow_update: On the append-only path, whether the row's columns an append leaves
            alone (``_rows.IDENTITY_COLUMNS``) are as stored: then the row is updated
            without them, and their indexes are not written.
        message_rows: Every message row of the saved state (a delta save writes only the
            part after the stored prefix).
        response_rows: Likewise for responses.
        message_start: How many messages the stored state had (0 for a whole rewrite).
        response_start: Likewise for responses.
    """

    session_id: str
    session_row: dict[str, Any]
    expected_token: int | None
    narrow_update: bool
    message_rows: RowLog
    response_rows: RowLog
    message_start: int
    response_start: int

    def appended_messages(self) -> Sequence[dict[str, Any]]:
        """The message rows after the stored prefix."""
        return _after(self.message_rows, self.message_start)

    def appended_responses(self) -> Sequence[dict[str, Any]]:
        """The response rows after the stored prefix."""
        return _after(self.response_rows, self.response_start)


def _after(log: RowLog, start: int) -> Sequence[dict[str, Any]]:
    """The rows of ``log`` after its first ``start``: its newest link, or all of it."""
    if log.before is not None and log.before.count == start and log.convert is None:
        return log.rows
    return log.params()[start:]


@dataclass(frozen=True, slots=True)
class AppendJob:
    """A checked append, captured at the call: rows with positions counted from 0.

    Attributes:
        session_id: The session appended to.
        message_rows: The new ``messages`` rows (their positions are set in the
            transaction, after the stored ones).
        response_rows: Likewise for ``responses``.
        updated_at: The session's new ``updated_at``, in storage form.
        state_token: The session's new state token.
        metadata: The new metadata (JSON text) and its project id, or ``None`` to keep them.
    """

    session_id: str
    message_rows: list[dict[str, Any]]
    response_rows: list[dict[str, Any]]
    updated_at: Any
    state_token: int
    metadata: tuple[str, str | None] | None


def append_to_session(tx: Tx, job: AppendJob) -> bool:
    """Append rows after a stored session's own, whatever its length; ``False`` if none.

    Reads only the session's row (locked on PostgreSQL): the cost does not grow with the
    history. The session gets a new state token, so any copy loaded before saves whole.
    """
    statement = (
        _sql.SESSION_COUNTS_FOR_UPDATE if tx.dialect == "postgresql" else _sql.SESSION_COUNTS
    )
    found = tx.rows(statement, {"id": job.session_id})
    if not found:
        return False
    stored = _sql.CountsRow._make(found[0])
    tx.run_many(_sql.INSERT_MESSAGE, _placed(job.message_rows, stored.message_count))
    tx.run_many(_sql.INSERT_RESPONSE, _placed(job.response_rows, stored.response_count))
    unset = _rows.unset_after_append(
        stored.unset_fields,
        messages=bool(job.message_rows),
        responses=bool(job.response_rows),
        metadata=job.metadata is not None,
    )
    params: dict[str, Any] = {
        "id": job.session_id,
        "message_count": stored.message_count + len(job.message_rows),
        "response_count": stored.response_count + len(job.response_rows),
        "updated_at": job.updated_at,
        "state_token": job.state_token,
        "unset_fields": unset,
    }
    if job.metadata is None:
        tx.run(_sql.APPEND_TO_SESSION, params)
    else:
        params["metadata"], params["project_id"] = job.metadata
        tx.run(_sql.APPEND_TO_SESSION_WITH_METADATA, params)
    return True


def _placed(rows: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    return [{**row, "position": start + index} for index, row in enumerate(rows)]


def save_sessions(tx: Tx, items: list[SaveJob], *, creates: bool = True) -> None:
    """Store sessions (at most one save per session id) with shared statements.

    A save writes only its appended rows if the stored state is the one the session was
    loaded as (same token), else the whole session, replacing whatever was stored. On
    PostgreSQL the rows are locked and written in id order, so that concurrent batches
    from other processes cannot deadlock on them. ``creates=False``: the caller holds the
    lock of every session's row already, so none is created (no counter shard is taken).
    """
    if creates:
        _count_first(tx)
    if tx.dialect == "postgresql":
        items = sorted(items, key=_by_session_id)
        stored = _stored_tokens(tx, [job.session_id for job in items])
    else:
        stored = _stored_tokens(tx, [job.session_id for job in items if job.expected_token])
    upserted: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []
    appended_messages: list[dict[str, Any]] = []
    appended_responses: list[dict[str, Any]] = []
    whole: list[SaveJob] = []
    for job in items:
        if job.expected_token is not None and stored.get(job.session_id) == job.expected_token:
            (updated if job.narrow_update else upserted).append(job.session_row)
            appended_messages.extend(job.appended_messages())
            appended_responses.extend(job.appended_responses())
        else:
            upserted.append(job.session_row)
            whole.append(job)
    tx.run_many(_sql.UPSERT_SESSION, upserted)
    tx.run_many(_sql.APPEND_TO_SESSION_WITH_METADATA, updated)
    tx.run_many(_sql.INSERT_MESSAGE, appended_messages)
    tx.run_many(_sql.INSERT_RESPONSE, appended_responses)
    for job in whole:
        _rewrite_children(tx, job)


def _by_session_id(job: SaveJob) -> str:
    return job.session_id


def _count_first(tx: Tx) -> None:
    """On PostgreSQL, lock this connection's shard of the session count before any
    session row (see the SQL)."""
    if tx.dialect == "postgresql":
        tx.rows(_sql.LOCK_SESSION_COUNTER_SHARD)


def _stored_tokens(tx: Tx, session_ids: list[str]) -> dict[str, int]:
    """Return the stored ``state_token`` of each of these sessions that exists.

    On PostgreSQL the rows stay locked until the transaction ends, taken in id order (so
    two transactions never wait on each other in a circle): a concurrent save of one of
    these sessions waits, and then this one sees its token, not the one before it.
    """
    if not session_ids:
        return {}
    if tx.dialect == "postgresql":
        rows = tx.rows(_sql.SESSION_TOKENS_FOR_UPDATE, {"ids": sorted(session_ids)})
        return {token.id: token.state_token for token in map(_sql.TokenRow._make, rows)}
    ordered = sorted(session_ids)
    stored: dict[str, int] = {}
    for start in range(0, len(ordered), _LOOKUP_CHUNK):
        chunk = ordered[start : start + _LOOKUP_CHUNK]
        placeholders = ", ".join(f":id{index}" for index in range(len(chunk)))
        params = {f"id{index}": session_id for index, session_id in enumerate(chunk)}
        rows = tx.rows(_sql.SESSION_TOKENS.format(placeholders=placeholders), params)
        for token in map(_sql.TokenRow._make, rows):
            stored[token.id] = token.state_token
    return stored


@dataclass(frozen=True)
class ImportCounts:
    """What one import batch did with its sessions or documents.

    Attributes:
        added: New ones.
        updated: Stored ones the file replaced.
        unchanged: Stored exactly as in the file.
        kept: Stored ones newer than the file (by ``updated_at``), left as they were.
    """

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept: int = 0


def import_sessions(
    tx: Tx, items: list[tuple[SaveJob, Callable[[], Session]]], *, replace_newer: bool
) -> ImportCounts:
    """Store imported sessions whole, leaving alone those stored exactly so, or newer.

    Each job must rewrite its session whole (``expected_token`` is ``None``); its callable
    gives the imported session, asked for only if a version is stored. A stored session
    whose ``updated_at`` is later than the file's was saved since the file was written: it
    is kept unless ``replace_newer``.
    """
    _count_first(tx)
    stored = _stored_tokens(tx, [job.session_id for job, _ in items])
    added = [job for job, _ in items if job.session_id not in stored]
    changed: list[SaveJob] = []
    kept = 0
    for job, imported in items:
        if job.session_id not in stored:
            continue
        session = imported()
        current = load_session(tx, job.session_id)
        if current == session:
            continue
        if current is not None and current.updated_at > session.updated_at and not replace_newer:
            kept += 1
        else:
            changed.append(job)
    tx.run_many(_sql.UPSERT_SESSION, [job.session_row for job in added])
    tx.run_many(_sql.INSERT_MESSAGE, [row for job in added for row in job.message_rows.params()])
    tx.run_many(_sql.INSERT_RESPONSE, [row for job in added for row in job.response_rows.params()])
    save_sessions(tx, changed)
    unchanged = len(items) - len(added) - len(changed) - kept
    return ImportCounts(len(added), len(changed), unchanged, kept)


def delete_user_sessions(tx: Tx, user_id: str) -> int:
    """Delete every session of one user (with their rows); return how many."""
    _count_first(tx)
    locking = tx.dialect == "postgresql"
    statement = _sql.DELETE_USER_SESSIONS_IN_ID_ORDER if locking else _sql.DELETE_USER_SESSIONS
    return tx.run(statement, {"user_id": user_id})


def _rewrite_children(tx: Tx, job: SaveJob) -> None:
    session_id = job.session_id
    message_rows, response_rows = job.message_rows.params(), job.response_rows.params()
    tx.run(_sql.DELETE_MESSAGES_FROM, {"session_id": session_id, "position": len(message_rows)})
    tx.run(_sql.DELETE_RESPONSES_FROM, {"session_id": session_id, "position": len(response_rows)})
    tx.run_many(_sql.UPSERT_MESSAGE, message_rows)
    tx.run_many(_sql.UPSERT_RESPONSE, response_rows)


def insert_session_if_missing(tx: Tx, row: dict[str, Any]) -> bool:
    """Insert a new session row unless one with its id exists; return whether it did."""
    _count_first(tx)
    return tx.run(_sql.INSERT_SESSION_IF_MISSING, row) > 0


def _session_row(tx: Tx, session_id: str, *, lock: bool) -> _sql.SessionRow | None:
    locking = lock and tx.dialect == "postgresql"
    statement = _sql.LOAD_SESSION_FOR_UPDATE if locking else _sql.LOAD_SESSION
    rows = tx.rows(statement, {"id": session_id})
    return _sql.SessionRow._make(rows[0]) if rows else None


def load_session(tx: Tx, session_id: str, *, lock: bool = False) -> Session | None:
    """Read a session and its children with indexed queries (``lock``: for update)."""
    row = _session_row(tx, session_id, lock=lock)
    if row is None:
        return None
    start = {"session_id": session_id, "start": 0}
    message_rows = tx.rows(_sql.SELECT_MESSAGES, start) if row.message_count else ()
    response_rows = tx.rows(_sql.SELECT_RESPONSES, start) if row.response_count else ()
    return _rows.session_from_rows(row, message_rows, response_rows, tx.time)


def load_tail(tx: Tx, session_id: str, count: int) -> SessionTail | None:
    """Read a session's last ``count`` messages and responses, and nothing before them."""
    row = _session_row(tx, session_id, lock=False)
    if row is None:
        return None
    message_start = max(0, row.message_count - count)
    response_start = max(0, row.response_count - count)
    message_rows = tx.rows(_sql.SELECT_MESSAGES, {"session_id": session_id, "start": message_start})
    response_rows = tx.rows(
        _sql.SELECT_RESPONSES, {"session_id": session_id, "start": response_start}
    )
    return _rows.tail_from_rows(
        row, message_start, response_start, message_rows, response_rows, tx.time
    )


def list_summaries(
    tx: Tx,
    *,
    filters: SessionFilter,
    after: tuple[datetime, str] | None,
    limit: int | None,
) -> list[SessionSummary]:
    """List summaries newest first, matching ``filters``, at most ``limit``.

    ``after`` is the ``(updated_at, id)`` of the last summary of the previous page.
    """
    time = tx.time
    params = filters.params(tx.dialect, time)
    if after is not None:
        params |= {"after_updated_at": time.bind(after[0]), "after_id": after[1]}
    params["limit"] = limit
    rows = tx.rows(filters.statement(tx.dialect, limit, after is not None), params)
    return [_rows.summary_from_row(row, time) for row in rows]


def fork_session(
    tx: Tx, source_id: str, new_id: str, up_to: int | None, forked_at: datetime, token: int
) -> Session | None:
    """Copy a session and its first ``up_to`` messages and responses (all: ``None``) to
    ``new_id``, one statement per table; return the fork, or ``None`` if the source is
    missing. Raises :class:`SessionExistsError` if ``new_id`` is taken."""
    _count_first(tx)
    statement = _sql.LOAD_SESSION_FOR_SHARE if tx.dialect == "postgresql" else _sql.LOAD_SESSION
    rows = tx.rows(statement, {"id": source_id})
    if not rows:
        return None
    source = _sql.SessionRow._make(rows[0])
    messages, responses = source.message_count, source.response_count
    if up_to is not None:
        messages, responses = min(messages, up_to), min(responses, up_to)
    params = {
        "source_id": source_id,
        "new_id": new_id,
        "message_count": messages,
        "response_count": responses,
        "extra": _rows.fork_extra(source.extra, source_id, forked_at),
        "forked_at": tx.time.bind(forked_at),
        "state_token": token,
    }
    if not tx.run(_sql.FORK_SESSION, params):
        raise SessionExistsError(new_id)
    tx.run(_sql.FORK_MESSAGES, params)
    tx.run(_sql.FORK_RESPONSES, params)
    return load_session(tx, new_id)


def delete_session(tx: Tx, session_id: str) -> bool:
    """Delete a session and its messages and responses; return whether it existed.

    On SQLite the rows go first, by their primary key's range: letting the foreign key's
    cascade delete them took about 200 µs more per session of 20 rows. On PostgreSQL the
    cascade deletes them after the session row is locked (a save holds that lock while it
    rewrites rows, so taking the rows first could wait on it in a circle).
    """
    _count_first(tx)
    if tx.dialect == "sqlite":
        first_position = {"session_id": session_id, "position": 0}
        tx.run(_sql.DELETE_MESSAGES_FROM, first_position)
        tx.run(_sql.DELETE_RESPONSES_FROM, first_position)
    return tx.run(_sql.DELETE_SESSION, {"id": session_id}) > 0


def list_session_ids(tx: Tx) -> list[str]:
    """Return every session id."""
    return [row[0] for row in tx.rows(_sql.LIST_SESSION_IDS)]


def prune_pending(tx: Tx, cutoff: datetime | None, max_sessions: int) -> bool:
    """Return whether a prune would delete anything, with two indexed lookups."""
    if cutoff is not None and tx.rows(_sql.STALE_SESSION_EXISTS, {"cutoff": tx.time.bind(cutoff)}):
        return True
    if max_sessions:
        [(count,)] = tx.rows(_sql.COUNT_SESSIONS)
        return bool(count > max_sessions)
    return False


def prunable_sessions(tx: Tx, cutoff: datetime | None, max_sessions: int) -> list[SessionSummary]:
    """Return what a prune would delete now, in the order it deletes: the same rule's SQL."""
    time = tx.time
    going: list[SessionSummary] = []
    params: dict[str, Any] = {}
    if cutoff is not None:
        params["cutoff"] = time.bind(cutoff)
        going = [_rows.summary_from_row(row, time) for row in tx.rows(_sql.PRUNABLE_STALE, params)]
    if max_sessions:
        [(count,)] = tx.rows(_sql.COUNT_SESSIONS)
        excess = count - len(going) - max_sessions
        if excess > 0:
            rows = tx.rows(_sql.PRUNABLE_EXCESS[cutoff is not None], {**params, "excess": excess})
            going += [_rows.summary_from_row(row, time) for row in rows]
    return going


def delete_stale_sessions(tx: Tx, cutoff: datetime, batch: int) -> int:
    """Delete up to ``batch`` of the sessions last updated before ``cutoff``, oldest first."""
    _count_first(tx)
    locking = tx.dialect == "postgresql"
    statement = _sql.DELETE_STALE_SESSIONS_IN_ID_ORDER if locking else _sql.DELETE_STALE_SESSIONS
    return tx.run(statement, {"cutoff": tx.time.bind(cutoff), "batch": batch})


def delete_excess_sessions(tx: Tx, max_sessions: int, batch: int) -> int:
    """Delete up to ``batch`` of the least recently updated sessions beyond ``max_sessions``.

    The delete names the newest session it may take (the last of the oldest ``batch``), so
    a session that a concurrent save makes newer than that is kept: a prune never deletes
    a session newer than one it keeps.
    """
    statement = _sql.LOCK_SESSION_COUNT if tx.dialect == "postgresql" else _sql.COUNT_SESSIONS
    count = sum(shard for (shard,) in tx.rows(statement))
    excess = count - max_sessions
    if excess <= 0:
        return 0
    bound = tx.rows(_sql.OLDEST_SESSIONS_BOUND, {"offset": min(excess, batch) - 1})
    if not bound:
        return 0
    newest = _sql.BoundRow._make(bound[0])
    return tx.run(_sql.DELETE_SESSIONS_UP_TO, {"updated_at": newest.updated_at, "id": newest.id})


def save_document(tx: Tx, category: str, name: str, kind: str, content: str, now: datetime) -> None:
    """Insert or replace one document (its ``created_at`` stays)."""
    tx.run(
        _sql.UPSERT_DOCUMENT,
        {
            "category": category,
            "name": name,
            "kind": kind,
            "content": content,
            "now": tx.time.bind(now),
        },
    )


def import_documents(tx: Tx, rows: list[dict[str, Any]], *, replace_newer: bool) -> ImportCounts:
    """Store imported documents, leaving alone those stored with that content, or newer.

    Each row holds ``category``, ``name``, ``kind``, ``content`` and ``now`` (the file's
    modification time, in storage form). A stored document updated after the file was
    written is kept unless ``replace_newer``.
    """
    added = updated = kept = 0
    for row in rows:
        found = tx.rows(
            _sql.LOAD_DOCUMENT_STAMPED,
            {"category": row["category"], "name": row["name"], "kind": row["kind"]},
        )
        if not found:
            added += 1
        else:
            stored = _sql.StampedDocumentRow._make(found[0])
            if stored.content == row["content"]:
                continue
            if stored.updated_at > row["now"] and not replace_newer:
                kept += 1
                continue
            updated += 1
        tx.run(_sql.UPSERT_DOCUMENT, row)
    return ImportCounts(added, updated, len(rows) - added - updated - kept, kept)


def list_categories(tx: Tx) -> list[str]:
    """Return every category that holds a document, sorted."""
    return [row[0] for row in tx.rows(_sql.LIST_CATEGORIES, {})]


def documents_in(tx: Tx, category: str) -> list[_sql.DocumentRow]:
    """Return a category's documents, sorted by name and kind, ``updated_at`` as a datetime."""
    read = tx.time.read
    rows = map(_sql.DocumentRow._make, tx.rows(_sql.DOCUMENTS_IN_CATEGORY, {"category": category}))
    return [row._replace(updated_at=read(row.updated_at)) for row in rows]


def load_document(tx: Tx, category: str, name: str, kind: str) -> str | None:
    """Return one document's content, or ``None``."""
    rows = tx.rows(_sql.LOAD_DOCUMENT, {"category": category, "name": name, "kind": kind})
    return rows[0][0] if rows else None


def list_document_names(tx: Tx, category: str) -> list[str]:
    """Return the names of a category's documents (a name may appear once per kind)."""
    return [row[0] for row in tx.rows(_sql.LIST_DOCUMENT_NAMES, {"category": category})]


def delete_document(tx: Tx, category: str, name: str, kind: str) -> bool:
    """Delete one document; return whether it existed."""
    return tx.run(_sql.DELETE_DOCUMENT, {"category": category, "name": name, "kind": kind}) > 0


def list_category(tx: Tx, category: str) -> list[str]:
    """Return a category's document names, sorted; in ``sessions``, the session ids too."""
    names = set(list_document_names(tx, category))
    if category == SESSIONS_CATEGORY:
        names.update(list_session_ids(tx))
    return sorted(names)


def delete_file(tx: Tx, category: str, name: str) -> bool:
    """Delete the JSON document (in ``sessions``, the session), else the markdown one."""
    if category == SESSIONS_CATEGORY:
        deleted_json = delete_session(tx, name)
    else:
        deleted_json = delete_document(tx, category, name, "json")
    return deleted_json or delete_document(tx, category, name, "markdown")
