"""Where models become rows and rows become models -- the one place for both directions.

Going in, every value is checked (by :mod:`statestore._validate`) as it becomes a row, so a
bad value fails the whole save before any SQL runs. Coming out, rows are trusted (they
passed these checks) and become models without being validated again.

Rows here are in storage form, the parameters of the statements in :mod:`statestore._sql`:
JSON as text, timestamps as the backend stores them (a :data:`TimeCodec` says how).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from statestore._sql import SessionRow
from statestore._tracking import RowLog, StoredState, TrackedDict, tracked
from statestore._validate import (
    check_json,
    check_length,
    check_text,
    check_timestamp,
    check_writable_name,
    model_as_json,
)
from statestore.errors import InvalidDataError
from statestore.models import (
    OMITTABLE_FIELDS,
    AgentResponse,
    History,
    Session,
    SessionSummary,
    SessionTail,
    UserMessage,
    build,
    format_timestamp,
)

__all__ = [
    "POSTGRESQL_TIME",
    "PROJECT_METADATA_KEY",
    "SQLITE_TIME",
    "TimeCodec",
    "dump_json_document",
    "message_rows",
    "messages_from_rows",
    "metadata_columns",
    "project_id_of",
    "response_rows",
    "responses_from_rows",
    "row_identity",
    "session_from_rows",
    "session_row",
    "summary_from_row",
    "tail_from_rows",
    "unset_after_append",
]

PROJECT_METADATA_KEY = "project_ids"
"""The metadata key whose string value is a session's ``project_id``."""


class TimeCodec:
    """How one backend stores timestamps: ``bind`` an aware datetime, ``read`` one back."""

    def __init__(self, bind: Callable[[datetime], Any], read: Callable[[Any], datetime]) -> None:
        self.bind = bind
        self.read = read


def _bind_sqlite_time(moment: datetime) -> str:
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # "YYYY-MM-DD HH:MM:SS.ffffff+00:00" without the offset; slicing is much cheaper
    # than datetime.replace(tzinfo=None).
    return moment.isoformat(sep=" ", timespec="microseconds")[:-6]


def _read_sqlite_time(text: str) -> datetime:
    # Four times faster than parsing then .replace(tzinfo=UTC), and gives the same UTC.
    return datetime.fromisoformat(text + "+00:00")


def _to_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


SQLITE_TIME = TimeCodec(_bind_sqlite_time, _read_sqlite_time)
"""SQLite: UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``, so text order is time order."""

POSTGRESQL_TIME = TimeCodec(_to_utc, _to_utc)
"""PostgreSQL: ``timestamptz``."""


# One encoder, built once: json.dumps with any non-default option builds a new encoder
# per call, which cost more than the encoding of a small metadata object.
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _dump_json(field: str, data: object) -> str:
    text = _encode_json(data)
    check_length(field, text)
    return text


def _load_json(text: Any) -> Any:
    return json.loads(text) if isinstance(text, str | bytes) else text


def dump_json_document(field: str, data: object) -> str:
    """Check ``data`` (a JSON-able value or a pydantic model) and return its JSON text."""
    if isinstance(data, BaseModel):
        data = model_as_json(field, data)
    check_json(field, data)
    return _dump_json(field, data)


def _extra(field: str, model: BaseModel) -> str | None:
    extra = model.model_extra
    if not extra:
        return None
    check_json(field, extra)
    return _dump_json(field, extra)


def project_id_of(session_metadata: Mapping[str, Any]) -> str | None:
    """Return the project a session belongs to: its ``"project_ids"`` entry if a string."""
    project = session_metadata.get(PROJECT_METADATA_KEY)
    return project if isinstance(project, str) else None


def session_row(session: Session, time: TimeCodec, state_token: int) -> dict[str, Any]:
    """Check a session's own fields and return its ``sessions`` row."""
    if not isinstance(session, Session):
        raise InvalidDataError("session", f"must be a Session, not {type(session).__name__}")
    check_writable_name(session.id, kind="session id")
    check_text("user_id", session.user_id)
    check_text("active_seed_id", session.active_seed_id, optional=True)
    check_text("active_persona_id", session.active_persona_id, optional=True)
    check_timestamp("created_at", session.created_at)
    check_timestamp("updated_at", session.updated_at)
    if not isinstance(session.metadata, dict):
        raise InvalidDataError("metadata", "must be a dict")
    check_json("metadata", session.metadata)
    if not isinstance(session.user_messages, list):
        raise InvalidDataError("user_messages", "must be a list")
    if not isinstance(session.agent_responses, list):
        raise InvalidDataError("agent_responses", "must be a list")
    return {
        "id": session.id,
        "user_id": session.user_id,
        "active_seed_id": session.active_seed_id,
        "active_persona_id": session.active_persona_id,
        "project_id": project_id_of(session.metadata),
        "message_count": len(session.user_messages),
        "response_count": len(session.agent_responses),
        "created_at": time.bind(session.created_at),
        "updated_at": time.bind(session.updated_at),
        "metadata": _dump_json("metadata", session.metadata),
        "extra": _extra("session", session),
        "state_token": state_token,
        "unset_fields": _unset_fields(session),
        **lineage_columns(session.__pydantic_extra__, time),
    }


IDENTITY_COLUMNS = ("user_id", "active_seed_id", "active_persona_id", "created_at", "extra")
"""The ``sessions`` columns an append leaves alone: a save that changed none of them (and
only appended) updates the row without touching their indexes. The lineage columns come
from ``extra``, so they are kept with it."""


def row_identity(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Return a ``sessions`` row's :data:`IDENTITY_COLUMNS`, in storage form."""
    return (
        row["user_id"],
        row["active_seed_id"],
        row["active_persona_id"],
        row["created_at"],
        row["extra"],
    )


def _stored_identity(row: SessionRow) -> tuple[Any, ...]:
    """The same, of a row as a load reads it."""
    return (row.user_id, row.active_seed_id, row.active_persona_id, row.created_at, row.extra)


PARENT_FIELD = "parent_session_id"
FORKED_AT_FIELD = "forked_at"
"""The extra session fields that hold a fork's lineage (the service's own names)."""


def lineage_columns(extra: Mapping[str, Any] | None, time: TimeCodec) -> dict[str, Any]:
    """The ``parent_session_id`` and ``forked_at`` columns of a session with these extra
    fields: the parent when it is text, the time when it is an RFC 3339 timestamp with a
    zone (else NULL: the field is kept as it is, but not as lineage)."""
    parent = extra.get(PARENT_FIELD) if extra else None
    forked_at = extra.get(FORKED_AT_FIELD) if extra else None
    if isinstance(forked_at, str):
        try:
            forked_at = datetime.fromisoformat(forked_at)
        except ValueError:
            forked_at = None
    if not isinstance(forked_at, datetime) or forked_at.utcoffset() is None:
        forked_at = None
    else:
        try:
            check_timestamp(FORKED_AT_FIELD, forked_at)
        except InvalidDataError:
            forked_at = None
    return {
        "parent_session_id": parent if isinstance(parent, str) else None,
        "forked_at": None if forked_at is None else time.bind(forked_at),
    }


def fork_extra(stored: Any, parent_id: str, forked_at: datetime) -> str:
    """A stored ``extra`` column with a fork's lineage set (the other fields in their
    order), as JSON text."""
    extra = {} if stored is None else dict(_load_json(stored))
    extra[PARENT_FIELD] = parent_id
    extra[FORKED_AT_FIELD] = format_timestamp(forked_at)
    return _encode_json(extra)


def _unset_fields(session: Session) -> str | None:
    unset = [name for name in OMITTABLE_FIELDS if name not in session.model_fields_set]
    return _encode_json(unset) if unset else None


def metadata_columns(metadata: object) -> tuple[str, str | None]:
    """Check session metadata and return its ``metadata`` and ``project_id`` columns."""
    if not isinstance(metadata, dict):
        raise InvalidDataError("metadata", f"must be a dict, not {type(metadata).__name__}")
    check_json("metadata", metadata)
    return _dump_json("metadata", metadata), project_id_of(metadata)


def unset_after_append(
    stored: Any, *, messages: bool, responses: bool, metadata: bool
) -> str | None:
    """A stored ``unset_fields`` value without the fields an append just gave values."""
    if stored is None:
        return None
    given = {
        "user_messages": messages,
        "agent_responses": responses,
        "metadata": metadata,
    }
    unset = [name for name in _load_json(stored) if not given.get(name)]
    return _encode_json(unset) if unset else None


def message_rows(
    session_id: str, messages: Sequence[UserMessage], time: TimeCodec, start: int = 0
) -> list[dict[str, Any]]:
    """Check user messages and return their ``messages`` rows, positions from ``start``."""
    rows = []
    for position, message in enumerate(messages, start):
        try:
            if not isinstance(message, UserMessage):
                raise InvalidDataError("", f"must be a UserMessage, not {type(message).__name__}")
            check_text(".content", message.content)
            check_timestamp(".timestamp", message.timestamp)
            rows.append(
                {
                    "session_id": session_id,
                    "position": position,
                    "content": message.content,
                    "created_at": time.bind(message.timestamp),
                    "extra": _extra("", message),
                }
            )
            _track_extra(message)
        except InvalidDataError as exc:
            raise _placed_error(exc, f"user_messages[{position}]") from None
    return rows


def response_rows(
    session_id: str, responses: Sequence[AgentResponse], time: TimeCodec, start: int = 0
) -> list[dict[str, Any]]:
    """Check agent responses and return their ``responses`` rows, positions from ``start``."""
    rows = []
    for position, response in enumerate(responses, start):
        try:
            if not isinstance(response, AgentResponse):
                raise InvalidDataError(
                    "", f"must be an AgentResponse, not {type(response).__name__}"
                )
            check_text(".content", response.content)
            check_text(".session_id", response.session_id, optional=True)
            check_text(".seed_id", response.seed_id, optional=True)
            check_text(".phase_reached", response.phase_reached, optional=True)
            passed = response.evaluation_passed
            if passed is not None and not isinstance(passed, bool):
                raise InvalidDataError(".evaluation_passed", "must be a bool or None")
            check_timestamp(".timestamp", response.timestamp)
            rows.append(
                {
                    "session_id": session_id,
                    "position": position,
                    "content": response.content,
                    "reported_session_id": response.session_id,
                    "seed_id": response.seed_id,
                    "phase_reached": response.phase_reached,
                    "evaluation_passed": passed,
                    "created_at": time.bind(response.timestamp),
                    "extra": _extra("", response),
                }
            )
            _track_extra(response)
        except InvalidDataError as exc:
            raise _placed_error(exc, f"agent_responses[{position}]") from None
    return rows


def _track_extra(message: BaseModel) -> None:
    """Hold a message's unknown fields, now that they are stored, as tracked containers:
    changing them in place (``message.model_extra["k"] = v``, ``message.tags.append(...)``)
    then counts as an edit, so the session's next save rewrites it whole."""
    extra = message.__pydantic_extra__
    if not isinstance(extra, TrackedDict):
        object.__setattr__(message, "__pydantic_extra__", tracked(extra or {}))


def _stored_extra(text: Any) -> TrackedDict:
    """A stored ``extra`` column (NULL, JSON text, or decoded JSON) as tracked containers."""
    return TrackedDict() if text is None else tracked(_load_json(text))


def _placed_error(error: InvalidDataError, item: str) -> InvalidDataError:
    """The error a check raised with a field relative to one item (``".content"``), made
    to name that item (``"user_messages[3].content"``). The name is built only on failure:
    building it for every row cost more than the checks."""
    return InvalidDataError(f"{item}{error.field}", error.reason)


def _as_json_text(value: Any) -> str | None:
    """A JSON column as read back (text, or decoded by the driver), as text to bind."""
    return value if value is None or isinstance(value, str) else _encode_json(value)


def _stored_message_params(session_id: str) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """Turn ``_sql.SELECT_MESSAGES`` rows back into ``_sql.UPSERT_MESSAGE`` parameters."""

    def params(row: Sequence[Any]) -> dict[str, Any]:
        position, content, created_at, extra = row  # a MessageRow
        return {
            "session_id": session_id,
            "position": position,
            "content": content,
            "created_at": created_at,
            "extra": _as_json_text(extra),
        }

    return params


def _stored_response_params(session_id: str) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """Turn ``_sql.SELECT_RESPONSES`` rows back into ``_sql.UPSERT_RESPONSE`` parameters."""

    def params(row: Sequence[Any]) -> dict[str, Any]:
        (
            position,
            content,
            reported_session_id,
            seed_id,
            phase_reached,
            evaluation_passed,
            created_at,
            extra,
        ) = row  # a ResponseRow
        return {
            "session_id": session_id,
            "position": position,
            "content": content,
            "reported_session_id": reported_session_id,
            "seed_id": seed_id,
            "phase_reached": phase_reached,
            "evaluation_passed": None if evaluation_passed is None else bool(evaluation_passed),
            "created_at": created_at,
            "extra": _as_json_text(extra),
        }

    return params


def messages_from_rows(
    rows: Iterable[Sequence[Any]], read: Callable[[Any], datetime]
) -> list[UserMessage]:
    """Build user messages from ``_sql.MessageRow`` rows (unpacked by name: there are many)."""
    return [
        build(
            UserMessage,
            {"content": content, "timestamp": read(created_at)},
            _stored_extra(extra),
        )
        for position, content, created_at, extra in rows
    ]


def responses_from_rows(
    rows: Iterable[Sequence[Any]], read: Callable[[Any], datetime]
) -> list[AgentResponse]:
    """Build agent responses from ``_sql.ResponseRow`` rows (unpacked by name)."""
    return [
        build(
            AgentResponse,
            {
                "content": content,
                "session_id": reported_session_id,
                "seed_id": seed_id,
                "phase_reached": phase_reached,
                "evaluation_passed": None if evaluation_passed is None else bool(evaluation_passed),
                "timestamp": read(created_at),
            },
            _stored_extra(extra),
        )
        for (
            position,
            content,
            reported_session_id,
            seed_id,
            phase_reached,
            evaluation_passed,
            created_at,
            extra,
        ) in rows
    ]


def session_from_rows(
    row: SessionRow,
    message_rows: Sequence[Sequence[Any]],
    response_rows: Sequence[Sequence[Any]],
    time: TimeCodec,
) -> Session:
    """Build a :class:`Session` from its row and its child rows.

    The session remembers the state it was loaded as, rows included, so saving it after
    appending writes only the appended rows.
    """
    session = build(
        Session,
        {
            "id": row.id,
            "user_id": row.user_id,
            "user_messages": History(messages_from_rows(message_rows, time.read)),
            "agent_responses": History(responses_from_rows(response_rows, time.read)),
            "active_seed_id": row.active_seed_id,
            "active_persona_id": row.active_persona_id,
            "created_at": time.read(row.created_at),
            "updated_at": time.read(row.updated_at),
            "metadata": _load_json(row.metadata),
        },
        _load_json(row.extra) if row.extra is not None else {},
        {"_stored": None},
        _load_json(row.unset_fields) if row.unset_fields is not None else (),
    )
    session._stored = StoredState.of(
        row.state_token,
        session,
        RowLog.extend(None, message_rows, _stored_message_params(row.id)),
        RowLog.extend(None, response_rows, _stored_response_params(row.id)),
        time,
        _stored_identity(row),
    )
    return session


def tail_from_rows(
    row: SessionRow,
    message_start: int,
    response_start: int,
    message_rows: Iterable[Sequence[Any]],
    response_rows: Iterable[Sequence[Any]],
    time: TimeCodec,
) -> SessionTail:
    """Build a :class:`SessionTail` from a session row and its last child rows."""
    return SessionTail(
        session_id=row.id,
        user_id=row.user_id,
        message_count=row.message_count,
        response_count=row.response_count,
        message_start=message_start,
        response_start=response_start,
        user_messages=messages_from_rows(message_rows, time.read),
        agent_responses=responses_from_rows(response_rows, time.read),
    )


def summary_from_row(row: Sequence[Any], time: TimeCodec) -> SessionSummary:
    """Build a :class:`SessionSummary` from a ``_sql.SummaryRow`` (unpacked by name)."""
    (
        id_,
        user_id,
        message_count,
        active_seed_id,
        project_id,
        created_at,
        updated_at,
        parent_session_id,
    ) = row
    return build(
        SessionSummary,
        {
            "id": id_,
            "user_id": user_id,
            "message_count": message_count,
            "active_seed_id": active_seed_id,
            "project_id": project_id,
            "created_at": time.read(created_at),
            "updated_at": time.read(updated_at),
            "parent_session_id": parent_session_id,
        },
    )
