"""The conversation-state values statestore keeps: sessions, their messages and responses.

Each model reads and writes the file store's JSON with ``model_validate_json`` and
``model_dump_json``: the same field names in the same order, RFC 3339 UTC timestamps ending
in ``Z``, ``active_seed_id``/``active_persona_id`` left out when unset. Fields a model does
not know (written by a newer version of the service) are kept and written back.

Timestamps are timezone-aware UTC. A naive ``datetime`` is rejected rather than guessed at;
an aware one in another zone is converted to UTC.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

__all__ = ["AgentResponse", "Session", "SessionSummary", "UserMessage", "format_timestamp"]


def format_timestamp(moment: datetime) -> str:
    """Format an aware datetime as the file store did: RFC 3339 in UTC with a ``Z``.

    The fraction has no trailing zeros and is left out when zero, as Go's RFC3339Nano
    layout (which wrote the file store's files) does.
    """
    moment = moment.astimezone(UTC)
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def _to_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


UTCTimestamp = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
]
"""An aware datetime kept in UTC and written as RFC 3339 with ``Z``."""


class UserMessage(BaseModel):
    """One message a user sent."""

    model_config = ConfigDict(extra="allow")

    content: str
    timestamp: UTCTimestamp = Field(default_factory=_now)


class AgentResponse(BaseModel):
    """One response the agent gave, with what the agent reports about it.

    ``session_id`` is what the agent reported, which the file store kept as given; it may be
    ``None`` or even name another session. The session that holds the response is its owner.
    """

    model_config = ConfigDict(extra="allow")

    content: str
    session_id: str | None = None
    seed_id: str | None = None
    phase_reached: str | None = None
    evaluation_passed: bool | None = None
    timestamp: UTCTimestamp = Field(default_factory=_now)


class Session(BaseModel):
    """One conversation: the user's messages, the agent's responses and the session's state.

    Every mutator method sets ``updated_at`` to now. Assigning fields directly does not.
    """

    model_config = ConfigDict(extra="allow")

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    user_id: str
    user_messages: list[UserMessage] = Field(default_factory=list)
    agent_responses: list[AgentResponse] = Field(default_factory=list)
    active_seed_id: str | None = None
    active_persona_id: str | None = None
    created_at: UTCTimestamp = Field(default_factory=_now)
    updated_at: UTCTimestamp = Field(default_factory=_now)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _updated_defaults_to_created(cls, data: Any) -> Any:
        """A new session's ``updated_at`` is the same instant as its ``created_at``."""
        if isinstance(data, dict) and "updated_at" not in data:
            data = dict(data)
            data.setdefault("created_at", _now())
            data["updated_at"] = data["created_at"]
        return data

    @model_serializer(mode="wrap")
    def _omit_unset_active_ids(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Leave out unset active seed and persona ids, as the file store did."""
        dumped = handler(self)
        if isinstance(dumped, dict):
            for key in ("active_seed_id", "active_persona_id"):
                if key in dumped and dumped[key] is None:
                    del dumped[key]
        return dumped

    def _touch(self) -> None:
        self.updated_at = _now()

    def add_user_message(self, content: str) -> UserMessage:
        """Append a user message stamped now, and return it."""
        message = UserMessage(content=content)
        self.user_messages.append(message)
        self._touch()
        return message

    def add_agent_response(self, response: AgentResponse) -> None:
        """Append an agent response."""
        self.agent_responses.append(response)
        self._touch()

    def set_active_seed(self, seed_id: str | None) -> None:
        """Set or clear the active seed."""
        self.active_seed_id = seed_id
        self._touch()

    def set_active_persona(self, persona_id: str | None) -> None:
        """Set or clear the active persona."""
        self.active_persona_id = persona_id
        self._touch()

    def set_metadata(self, key: str, value: Any) -> None:
        """Set one metadata entry."""
        self.metadata[key] = value
        self._touch()

    def get_metadata(self, key: str) -> Any | None:
        """Return one metadata entry, or ``None`` when it is not set."""
        return self.metadata.get(key)

    def exchange_count(self) -> int:
        """Return the number of complete exchanges: the shorter of the two histories."""
        return min(len(self.user_messages), len(self.agent_responses))

    def is_empty(self) -> bool:
        """Return whether the user has sent no message yet."""
        return not self.user_messages


class SessionSummary(BaseModel):
    """What a session listing shows of one session, without its messages.

    ``project_id`` is the session's ``"project_ids"`` metadata entry when that is a string;
    ``message_count`` is the number of user messages.
    """

    id: str
    user_id: str
    message_count: int
    active_seed_id: str | None
    project_id: str | None
    created_at: UTCTimestamp
    updated_at: UTCTimestamp
