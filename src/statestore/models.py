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
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from statestore._tracking import History, note_edit
from statestore.errors import InvalidDataError

__all__ = [
    "FILE_CONTEXT",
    "MAX_JSON_DEPTH",
    "MAX_TEXT_LENGTH",
    "MAX_TIMESTAMP",
    "MIN_TIMESTAMP",
    "OMITTABLE_FIELDS",
    "AgentResponse",
    "History",
    "SearchHit",
    "Session",
    "SessionSummary",
    "SessionTail",
    "UserMessage",
    "build",
    "format_timestamp",
    "to_storable_utc",
]

MAX_JSON_DEPTH = 64
"""How deeply JSON containers may nest in metadata, unmodelled fields and JSON documents."""

MAX_TEXT_LENGTH = 16 * 1024 * 1024
"""The most characters one text value (a message, a document, a JSON value as text) may hold.

Far above any conversation turn, far below what SQLite (1 GB) and PostgreSQL (1 GB) accept,
so an accidental blob fails with a clear error instead of bloating every load.
"""

MIN_TIMESTAMP = datetime(1, 1, 2, tzinfo=UTC)
"""The earliest instant statestore stores (one day after ``datetime.min``).

``datetime.min`` and ``datetime.max`` themselves become -infinity and infinity on
PostgreSQL, and an instant within a day of either cannot be shown in every time zone; so
one range holds on every backend, and whatever is accepted can always be read back.
"""

MAX_TIMESTAMP = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
"""The latest instant statestore stores (one day before ``datetime.max``)."""


def to_storable_utc(moment: datetime) -> datetime:
    """Return an aware datetime in UTC, if it lies within the range statestore stores.

    Raises:
        ValueError: ``moment`` is naive, or its UTC value lies outside
            :data:`MIN_TIMESTAMP` .. :data:`MAX_TIMESTAMP`.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()} has no time zone; use UTC")
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not MIN_TIMESTAMP <= utc <= MAX_TIMESTAMP:
        raise ValueError(
            f"{moment.isoformat()} is outside the range statestore stores "
            "(0001-01-02 to 9999-12-30 UTC)"
        )
    return utc


def format_timestamp(moment: datetime) -> str:
    """Format an aware datetime as the file store did: RFC 3339 in UTC with a ``Z``.

    The fraction has no trailing zeros and is left out when zero, as Go's RFC3339Nano
    layout (which wrote the file store's files) does.

    Raises:
        ValueError: ``moment`` is naive (its zone would be a guess).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()} has no time zone; use UTC")
    moment = moment.astimezone(UTC)
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def _now() -> datetime:
    return datetime.now(UTC)


UTCTimestamp = Annotated[
    AwareDatetime,
    AfterValidator(to_storable_utc),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
]
"""An aware datetime kept in UTC, within the stored range, written as RFC 3339 with ``Z``."""


class _Message(BaseModel):
    """A message or response: assigning one of its fields is counted (see ``_tracking``)."""

    model_config = ConfigDict(extra="allow")

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        note_edit()


class UserMessage(_Message):
    """One message a user sent."""

    content: str
    timestamp: UTCTimestamp = Field(default_factory=_now)


class AgentResponse(_Message):
    """One response the agent gave, with what the agent reports about it.

    ``session_id`` is what the agent reported, which the file store kept as given; it may be
    ``None`` or even name another session. The session that holds the response is its owner.
    """

    content: str
    session_id: str | None = None
    seed_id: str | None = None
    phase_reached: str | None = None
    evaluation_passed: bool | None = None
    timestamp: UTCTimestamp = Field(default_factory=_now)


_HISTORY_FIELDS = frozenset({"user_messages", "agent_responses"})

OMITTABLE_FIELDS = ("user_messages", "agent_responses", "metadata")
"""Session fields an older file store left out when empty; see ``Session`` serialization."""

FILE_CONTEXT = {"statestore_file": True}
"""Validation context for a session read from a file store's JSON: the omittable fields
it left out stay left out when it is written back."""


class Session(BaseModel):
    """One conversation: the user's messages, the agent's responses and the session's state.

    Every mutator method sets ``updated_at`` to now. Assigning fields directly does not.
    Equality compares the conversation state only, not where it was loaded from.

    A session made by ``StateStore.fork_session`` names the session it was copied from in
    the extra field ``parent_session_id`` and the moment of the copy in ``forked_at`` (an
    RFC 3339 string), as the service's own forks did: ``session.parent_session_id`` on a
    fork, ``session.model_extra.get("parent_session_id")`` on any session.
    """

    model_config = ConfigDict(extra="allow")

    _stored: Any = PrivateAttr(default=None)
    """What this object was stored as (a ``statestore._tracking.StoredState``), or None."""

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    user_id: str
    user_messages: list[UserMessage] = Field(default_factory=History)
    agent_responses: list[AgentResponse] = Field(default_factory=History)
    active_seed_id: str | None = None
    active_persona_id: str | None = None
    created_at: UTCTimestamp = Field(default_factory=_now)
    updated_at: UTCTimestamp = Field(default_factory=_now)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("user_messages", "agent_responses", mode="after")
    @classmethod
    def _track_history(cls, items: list[Any]) -> list[Any]:
        """Hold the lists as :class:`History`, so saves can tell appends from rewrites."""
        return History(items)

    @model_validator(mode="before")
    @classmethod
    def _updated_defaults_to_created(cls, data: Any) -> Any:
        """A new session's ``updated_at`` is the same instant as its ``created_at``."""
        if isinstance(data, dict) and "updated_at" not in data:
            data = dict(data)
            data.setdefault("created_at", _now())
            data["updated_at"] = data["created_at"]
        return data

    @model_validator(mode="after")
    def _new_sessions_write_every_field(self, info: ValidationInfo) -> Self:
        """Mark the omittable fields as set, unless the session comes from a file's JSON.

        The file store wrote ``user_messages``, ``agent_responses`` and ``metadata`` for
        every session it created; only a file an older version wrote without them (read
        with :data:`FILE_CONTEXT`) keeps leaving them out.
        """
        if not (info.context and info.context.get("statestore_file")):
            self.__pydantic_fields_set__.update(OMITTABLE_FIELDS)
        return self

    @model_serializer(mode="wrap")
    def _omit_as_the_file_store_did(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Leave out unset active ids, and the empty fields the session was given without.

        The file store always left out a ``None`` active id; older versions of it also left
        out empty ``user_messages``, ``agent_responses`` and ``metadata``. A session read
        from such a file (those fields not in ``model_fields_set``) is written back so.
        """
        dumped = handler(self)
        if isinstance(dumped, dict):
            for key in ("active_seed_id", "active_persona_id"):
                if key in dumped and dumped[key] is None:
                    del dumped[key]
            for key in OMITTABLE_FIELDS:
                if key not in self.model_fields_set and key in dumped and not dumped[key]:
                    del dumped[key]
        return dumped

    def __setattr__(self, name: str, value: Any) -> None:
        # A list assigned to a history is held as a History copy, as validation would.
        if name in _HISTORY_FIELDS and not isinstance(value, History):
            if not isinstance(value, list | tuple):
                raise InvalidDataError(name, f"must be a list, not {type(value).__name__}")
            value = History(value)
        super().__setattr__(name, value)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        # A deep copy is another object: the record is not its own, and its rows would
        # be copied for nothing (and its chain, link by link, past the recursion limit).
        memo = {} if memo is None else memo
        private = self.__pydantic_private__
        stored = private.get("_stored") if private else None
        if stored is not None:
            memo[id(stored)] = None
        return super().__deepcopy__(memo)

    def __getstate__(self) -> dict[Any, Any]:
        # What a session remembers about its stored state is true of this object in this
        # process only: a pickled session arrives without it, and saves whole.
        state = super().__getstate__()
        private = state.get("__pydantic_private__")
        if private:
            state["__pydantic_private__"] = {**private, "_stored": None}
        return state

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Session):
            return NotImplemented
        return (
            type(self) is type(other)
            and self.__dict__ == other.__dict__
            and self.__pydantic_extra__ == other.__pydantic_extra__
        )

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
    ``message_count`` is the number of user messages; ``parent_session_id`` is the session
    a fork was copied from (``None`` for a session that is not a fork).
    """

    id: str
    user_id: str
    message_count: int
    active_seed_id: str | None
    project_id: str | None
    created_at: UTCTimestamp
    updated_at: UTCTimestamp
    parent_session_id: str | None = None


class SearchHit(BaseModel):
    """A user message or agent response that ``StateStore.search_messages`` found.

    ``kind`` says which list it is in (``"message"``: ``user_messages``, ``"response"``:
    ``agent_responses``) and ``position`` where; ``timestamp`` is its own. ``snippet`` is
    the text around the first match, each matching word marked ``**like this**``, ``…``
    where it was cut. ``entry_id`` orders hits: the most recently written text has the
    highest; pass a page's last hit as ``after`` for the next page.
    """

    entry_id: int
    session_id: str
    user_id: str
    kind: Literal["message", "response"]
    position: int
    timestamp: UTCTimestamp
    snippet: str


class SessionTail(BaseModel):
    """The last messages and responses of a session, read without the rest of its history.

    Not a :class:`Session`, so it cannot be saved back as if it were the whole session.
    ``user_messages[i]`` sits at position ``message_start + i`` of the full history, and
    ``agent_responses[i]`` at ``response_start + i``.
    """

    session_id: str
    user_id: str
    message_count: int
    response_count: int
    message_start: int
    response_start: int
    user_messages: list[UserMessage]
    agent_responses: list[AgentResponse]


ModelT = TypeVar("ModelT", bound=BaseModel)


def build(
    model: type[ModelT],
    fields: dict[str, Any],
    extra: dict[str, Any] | None = None,
    private: dict[str, Any] | None = None,
    unset: Iterable[str] = (),
) -> ModelT:
    """Make a model from trusted, complete field values without validating them.

    Like ``model_construct`` without its per-field bookkeeping: rows coming out of the
    database passed statestore's checks on the way in, and this runs once per row.
    ``fields`` must hold every declared field; ``extra`` is required (a dict, possibly
    empty) for models that keep unknown fields; ``unset`` names fields to treat as not
    given (see ``model_fields_set``).
    """
    instance = _new_object(model)
    _set_slot(instance, "__dict__", fields)
    # Usually every declared field is set, and that set is shared: it already holds every
    # name pydantic could add to it on assignment.
    fields_set = _FIELD_SETS[model]
    if unset:
        fields_set = fields_set - set(unset)
    _set_slot(instance, "__pydantic_fields_set__", fields_set)
    _set_slot(instance, "__pydantic_extra__", extra)
    _set_slot(instance, "__pydantic_private__", private)
    return instance


_new_object = object.__new__
_set_slot = object.__setattr__
_FIELD_SETS: dict[type[BaseModel], set[str]] = {
    model: set(model.__pydantic_fields__)
    for model in (UserMessage, AgentResponse, Session, SessionSummary, SearchHit)
}
