"""Where models become rows and rows become models -- the one place for both directions.

Going in, every value is checked before any SQL runs, so a bad value fails the whole save
with an :class:`InvalidDataError` naming the field, and the stored state stays as it was:

* text must be valid Unicode without NUL characters (one policy for every backend:
  PostgreSQL cannot store NUL);
* JSON values (metadata, unmodelled fields, JSON documents) must be made of dicts with
  ``str`` keys, lists, ``str``, ``int``, finite ``float``, ``bool`` and ``None``, nested at
  most :data:`MAX_JSON_DEPTH` deep, so whatever is accepted comes back exactly;
* timestamps must be timezone-aware.

Coming out, rows are trusted (they passed these checks) and become models without being
validated again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from statestore.errors import InvalidDataError
from statestore.models import AgentResponse, Session, SessionSummary, UserMessage
from statestore.names import check_name

__all__ = [
    "MAX_JSON_DEPTH",
    "PROJECT_METADATA_KEY",
    "check_json",
    "check_text",
    "dump_json_document",
    "message_rows",
    "response_rows",
    "session_from_rows",
    "session_row",
    "summary_from_row",
]

MAX_JSON_DEPTH = 64
"""How deeply JSON containers may nest in metadata, unmodelled fields and JSON documents."""

# Python refuses to turn integers of more than sys.get_int_max_str_digits() (4300 by
# default) digits into text; 14,000 bits is about 4,200 digits.
_MAX_INT_BITS = 14_000

PROJECT_METADATA_KEY = "project_ids"
"""The metadata key whose string value is a session's ``project_id``."""


def check_text(field: str, value: object, *, optional: bool = False) -> None:
    """Raise :class:`InvalidDataError` unless ``value`` is storable text."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise InvalidDataError(field, f"must be a str, not {type(value).__name__}")
    if "\x00" in value:
        raise InvalidDataError(field, "must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidDataError(field, "must be valid Unicode (no lone surrogates)") from None


def check_json(field: str, value: object, depth: int = 0) -> None:
    """Raise :class:`InvalidDataError` unless ``value`` is JSON that round-trips exactly."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise InvalidDataError(field, "integer is too large to write as JSON")
        return
    if isinstance(value, str):
        check_text(field, value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidDataError(field, f"{value!r} is not a JSON number")
    elif isinstance(value, dict | list):
        if depth >= MAX_JSON_DEPTH:
            raise InvalidDataError(field, f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, list):
            for index, item in enumerate(value):
                check_json(f"{field}[{index}]", item, depth + 1)
            return
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidDataError(field, f"key {key!r} is not a str")
            check_text(f"{field} key {key!r}", key)
            check_json(f"{field}[{key!r}]", item, depth + 1)
    else:
        raise InvalidDataError(field, f"{type(value).__name__} is not JSON-able")


def _check_timestamp(field: str, value: object) -> None:
    if not isinstance(value, datetime):
        raise InvalidDataError(field, f"must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidDataError(field, "is a naive datetime; give it a time zone (UTC)")


def dump_json_document(field: str, data: object) -> str:
    """Check ``data`` (a JSON-able value or a pydantic model) and return its JSON text."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    check_json(field, data)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _extra(field: str, model: BaseModel) -> dict[str, Any] | None:
    extra = model.model_extra
    if not extra:
        return None
    check_json(field, extra)
    return dict(extra)


def project_id_of(session_metadata: Mapping[str, Any]) -> str | None:
    """Return the project a session belongs to: its ``"project_ids"`` entry if a string."""
    project = session_metadata.get(PROJECT_METADATA_KEY)
    return project if isinstance(project, str) else None


def session_row(session: Session) -> dict[str, Any]:
    """Check a session's own fields and return its ``sessions`` row."""
    if not isinstance(session, Session):
        raise InvalidDataError("session", f"must be a Session, not {type(session).__name__}")
    check_name(session.id, kind="session id")
    check_text("user_id", session.user_id)
    check_text("active_seed_id", session.active_seed_id, optional=True)
    check_text("active_persona_id", session.active_persona_id, optional=True)
    _check_timestamp("created_at", session.created_at)
    _check_timestamp("updated_at", session.updated_at)
    if not isinstance(session.metadata, dict):
        raise InvalidDataError("metadata", "must be a dict")
    check_json("metadata", session.metadata)
    return {
        "id": session.id,
        "user_id": session.user_id,
        "active_seed_id": session.active_seed_id,
        "active_persona_id": session.active_persona_id,
        "project_id": project_id_of(session.metadata),
        "message_count": len(session.user_messages),
        "response_count": len(session.agent_responses),
        "created_at": session.created_at,
        "updated_at": session.updated_at,
        "metadata": session.metadata,
        "extra": _extra("session", session),
        "version": 1,
    }


def message_rows(
    session_id: str, messages: Sequence[UserMessage], start: int = 0
) -> list[dict[str, Any]]:
    """Check user messages and return their ``messages`` rows, positions from ``start``."""
    rows = []
    for position, message in enumerate(messages, start):
        field = f"user_messages[{position}]"
        if not isinstance(message, UserMessage):
            raise InvalidDataError(field, f"must be a UserMessage, not {type(message).__name__}")
        check_text(f"{field}.content", message.content)
        _check_timestamp(f"{field}.timestamp", message.timestamp)
        rows.append(
            {
                "session_id": session_id,
                "position": position,
                "content": message.content,
                "created_at": message.timestamp,
                "extra": _extra(field, message),
            }
        )
    return rows


def response_rows(
    session_id: str, responses: Sequence[AgentResponse], start: int = 0
) -> list[dict[str, Any]]:
    """Check agent responses and return their ``responses`` rows, positions from ``start``."""
    rows = []
    for position, response in enumerate(responses, start):
        field = f"agent_responses[{position}]"
        if not isinstance(response, AgentResponse):
            raise InvalidDataError(
                field, f"must be an AgentResponse, not {type(response).__name__}"
            )
        check_text(f"{field}.content", response.content)
        check_text(f"{field}.session_id", response.session_id, optional=True)
        check_text(f"{field}.seed_id", response.seed_id, optional=True)
        check_text(f"{field}.phase_reached", response.phase_reached, optional=True)
        if response.evaluation_passed is not None and not isinstance(
            response.evaluation_passed, bool
        ):
            raise InvalidDataError(f"{field}.evaluation_passed", "must be a bool or None")
        _check_timestamp(f"{field}.timestamp", response.timestamp)
        rows.append(
            {
                "session_id": session_id,
                "position": position,
                "content": response.content,
                "reported_session_id": response.session_id,
                "seed_id": response.seed_id,
                "phase_reached": response.phase_reached,
                "evaluation_passed": response.evaluation_passed,
                "created_at": response.timestamp,
                "extra": _extra(field, response),
            }
        )
    return rows


def _message(row: Any) -> UserMessage:
    extra = row.extra or {}
    return UserMessage.model_construct(content=row.content, timestamp=row.created_at, **extra)


def _response(row: Any) -> AgentResponse:
    extra = row.extra or {}
    return AgentResponse.model_construct(
        content=row.content,
        session_id=row.reported_session_id,
        seed_id=row.seed_id,
        phase_reached=row.phase_reached,
        evaluation_passed=row.evaluation_passed,
        timestamp=row.created_at,
        **extra,
    )


def session_from_rows(
    session: Any, message_rows: Iterable[Any], response_rows: Iterable[Any]
) -> Session:
    """Build a :class:`Session` from its ``sessions`` row and its ordered child rows."""
    extra = session.extra or {}
    return Session.model_construct(
        id=session.id,
        user_id=session.user_id,
        user_messages=[_message(row) for row in message_rows],
        agent_responses=[_response(row) for row in response_rows],
        active_seed_id=session.active_seed_id,
        active_persona_id=session.active_persona_id,
        created_at=session.created_at,
        updated_at=session.updated_at,
        metadata=session.metadata,
        **extra,
    )


def summary_from_row(row: Any) -> SessionSummary:
    """Build a :class:`SessionSummary` from the summary columns of a ``sessions`` row."""
    return SessionSummary.model_construct(
        id=row.id,
        user_id=row.user_id,
        message_count=row.message_count,
        active_seed_id=row.active_seed_id,
        project_id=row.project_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
