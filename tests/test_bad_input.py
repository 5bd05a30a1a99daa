"""Bad input through every public write operation: a clear error, and nothing changes.

Each case names the operation, how the input is bad, the error type, and the field its
message must name. The store holds sessions and documents before each case; afterwards
everything it shows through the public API is the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from statestore import (
    AgentResponse,
    InvalidDataError,
    InvalidNameError,
    PruneConfig,
    Session,
    StateStore,
    StateStoreError,
    UserMessage,
)
from statestore.models import MAX_JSON_DEPTH, MAX_TEXT_LENGTH

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NAIVE = datetime(2026, 3, 1, 12, 0)
CATEGORIES = ("memory", "personas", "sessions", "notes")
PRUNE_ONE = PruneConfig(max_sessions=1, ttl_hours=0)
"""Would delete the older stored session: a failed save_session_with_prune must not prune."""


def nested(depth: int) -> Any:
    """Return ``depth`` JSON lists nested in one another."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.fixture
async def filled(store: StateStore) -> StateStore:
    """Return the store holding two sessions and three documents."""
    first = Session(id="s-1", user_id="u-1", created_at=T0, metadata={"project_ids": "p"})
    for turn in range(2):
        first.user_messages.append(UserMessage(content=f"question {turn}", timestamp=T0))
        first.agent_responses.append(AgentResponse(content=f"answer {turn}", timestamp=T0))
    first.updated_at = datetime(2026, 3, 2, tzinfo=UTC)
    older = Session(id="s-0", user_id="u-0", created_at=T0)
    await store.save_session(first)
    await store.save_session(older)
    await store.save_markdown("memory", "note", "# original")
    await store.save_json("memory", "note", {"original": True})
    await store.save_json("personas", "architect", {"name": "Architect"})
    return store


async def snapshot(store: StateStore) -> dict[str, Any]:
    """Return everything the public API shows of the store's contents."""
    summaries = await store.list_sessions()
    sessions = {}
    for summary in summaries:
        loaded = await store.load_session(summary.id)
        assert loaded is not None
        sessions[summary.id] = loaded.model_dump_json()
    categories = {category: await store.list_category(category) for category in CATEGORIES}
    documents = {
        (category, name): (
            await store.load_markdown(category, name),
            await store.load_json(category, name),
        )
        for category, names in categories.items()
        for name in names
    }
    return {
        "summaries": [summary.model_dump_json() for summary in summaries],
        "sessions": sessions,
        "categories": categories,
        "documents": documents,
    }


# -- a session made unstorable, through each operation that saves a session -------------

Corrupt = Callable[[Session], object]


def _append(session: Session, item: Any, responses: bool = False) -> None:
    (session.agent_responses if responses else session.user_messages).append(item)


def _naive_message(session: Session) -> None:
    message = UserMessage(content="fine")
    message.timestamp = NAIVE  # assignment is not validated: only the store can refuse it
    session.user_messages.append(message)


def _bad_extra(session: Session) -> None:
    session.trajectory = {"steps": {1, 2}}  # an unknown field, kept in model_extra


def _bad_message_extra(session: Session) -> None:
    session.user_messages[0].score = float("nan")  # assigned, so the save rewrites it


CORRUPTIONS: list[tuple[Corrupt, str, str]] = [
    (lambda s: s.metadata.update({"\ud800": 1}), "metadata", "surrogate-key"),
    (lambda s: s.metadata.update({"k": "a\x00b"}), "metadata", "nul-metadata"),
    (lambda s: s.metadata.update({"k": b"x"}), "metadata", "bytes-metadata"),
    (lambda s: s.metadata.update({"k": nested(MAX_JSON_DEPTH)}), "metadata", "too-deep"),
    (lambda s: setattr(s, "metadata", ["x"]), "metadata", "metadata-list"),
    (_bad_extra, r"session\['trajectory'\]", "unknown-field-set"),
    (_bad_message_extra, r"user_messages\[0\]\['score'\]", "message-extra-nan"),
    (
        lambda s: _append(s, UserMessage(content="a\x00b")),
        r"user_messages\[2\]\.content",
        "appended-nul",
    ),
    (
        lambda s: _append(s, AgentResponse(content="\udfff"), responses=True),
        r"agent_responses\[2\]\.content",
        "appended-surrogate",
    ),
    (
        lambda s: _append(s, UserMessage(content="x" * (MAX_TEXT_LENGTH + 1))),
        r"user_messages\[2\]\.content.*limit",
        "oversized-message",
    ),
    (_naive_message, r"user_messages\[2\]\.timestamp", "naive-message-time"),
    (lambda s: setattr(s, "created_at", NAIVE), "created_at", "naive-created"),
    (lambda s: setattr(s, "user_id", 7), "user_id", "user-id-int"),
    (lambda s: setattr(s, "active_seed_id", 7), "active_seed_id", "seed-int"),
    (
        lambda s: setattr(s.agent_responses[1], "evaluation_passed", "yes"),
        r"agent_responses\[1\]\.evaluation_passed",
        "evaluation-str",
    ),
    (lambda s: _append(s, {"content": "x"}), r"user_messages\[2\]", "message-dict"),
]


async def _save_session(store: StateStore, session: Session) -> None:
    await store.save_session(session)


async def _update_session(store: StateStore, session: Session) -> None:
    await store.update_session(session)


async def _save_with_prune(store: StateStore, session: Session) -> None:
    await store.save_session_with_prune(session, PRUNE_ONE)


async def _update_with(store: StateStore, session: Session) -> None:
    await store.update_session_with(session.id, lambda stored: session)


SAVES: list[Any] = [
    pytest.param(_save_session, id="save_session"),
    pytest.param(_update_session, id="update_session"),
    pytest.param(_save_with_prune, id="save_session_with_prune"),
    pytest.param(_update_with, id="update_session_with"),
]


@pytest.mark.parametrize("save", SAVES)
async def test_unstorable_session_fails_by_field_and_changes_nothing(
    filled: StateStore,
    subtests: pytest.Subtests,
    save: Callable[[StateStore, Session], Awaitable[None]],
) -> None:
    """Every session-saving operation refuses an unstorable session, naming the field."""
    for corrupt, field, case_id in CORRUPTIONS:
        with subtests.test(case_id):
            before = await snapshot(filled)
            session = await filled.load_session("s-1")
            assert session is not None
            corrupt(session)

            with pytest.raises(InvalidDataError, match=field):
                await save(filled, session)

            assert await snapshot(filled) == before


# -- every other write operation ----------------------------------------------------------


class Note(BaseModel):
    """A model to store as a JSON document."""

    text: str


@dataclass(frozen=True)
class Bad:
    """A call with bad input, the error it must raise, and the field its message names."""

    call: Callable[[StateStore], Awaitable[object]]
    error: type[Exception]
    field: str


def case(
    case_id: str, call: Callable[[StateStore], Awaitable[object]], error: Any, field: str
) -> tuple[str, Bad]:
    """Return one row of :data:`BAD_CALLS`."""
    return case_id, Bad(call, error, field)


BAD_CALLS: list[tuple[str, Bad]] = [
    # get_or_create_session
    case(
        "create-nul-user", lambda s: s.get_or_create_session("u\x00"), InvalidDataError, "user_id"
    ),
    case(
        "create-surrogate-user",
        lambda s: s.get_or_create_session("\ud800"),
        InvalidDataError,
        "user_id",
    ),
    case("create-none-user", lambda s: s.get_or_create_session(None), InvalidDataError, "user_id"),
    case(
        "create-bad-id",
        lambda s: s.get_or_create_session("u", "a/b"),
        InvalidNameError,
        "session id",
    ),
    case(
        "create-int-id", lambda s: s.get_or_create_session("u", 5), InvalidNameError, "session id"
    ),
    # save_session and update_session_with: the argument itself, and what fn does
    case("save-none", lambda s: s.save_session(None), InvalidDataError, "session"),
    case(
        "save-bad-id",
        lambda s: s.save_session(Session(id="a/b", user_id="u")),
        InvalidNameError,
        "a/b",
    ),
    case(
        "update-bad-id", lambda s: s.update_session_with("../s-1", print), InvalidNameError, "s-1"
    ),
    case(
        "update-fn-changes-id",
        lambda s: s.update_session_with("s-1", lambda x: setattr(x, "id", "s-0")),
        InvalidDataError,
        "id",
    ),
    case(
        "update-fn-adds-nul",
        lambda s: s.update_session_with("s-1", lambda x: x.add_user_message("\x00")),
        InvalidDataError,
        r"user_messages\[2\]\.content",
    ),
    case(
        "update-fn-sets-datetime-metadata",
        lambda s: s.update_session_with("s-1", lambda x: x.set_metadata("when", T0)),
        InvalidDataError,
        "metadata",
    ),
    case(
        "update-fn-sets-naive-time",
        lambda s: s.update_session_with("s-1", lambda x: setattr(x, "updated_at", NAIVE)),
        InvalidDataError,
        "updated_at",
    ),
    # save_markdown
    case(
        "markdown-nul",
        lambda s: s.save_markdown("memory", "note", "a\x00"),
        InvalidDataError,
        "content",
    ),
    case(
        "markdown-surrogate",
        lambda s: s.save_markdown("memory", "note", "\ud83d"),
        InvalidDataError,
        "content",
    ),
    case(
        "markdown-int", lambda s: s.save_markdown("memory", "note", 5), InvalidDataError, "content"
    ),
    case(
        "markdown-oversized",
        lambda s: s.save_markdown("memory", "note", "m" * (MAX_TEXT_LENGTH + 1)),
        InvalidDataError,
        "content.*limit",
    ),
    case(
        "markdown-bad-category",
        lambda s: s.save_markdown("memory/", "note", "x"),
        InvalidNameError,
        "category",
    ),
    case(
        "markdown-nul-name",
        lambda s: s.save_markdown("memory", "a\x00", "x"),
        InvalidNameError,
        "name",
    ),
    # save_json, also into the sessions category
    case(
        "json-datetime",
        lambda s: s.save_json("memory", "note", {"t": T0}),
        InvalidDataError,
        "data",
    ),
    case(
        "json-inf",
        lambda s: s.save_json("memory", "note", [float("inf")]),
        InvalidDataError,
        "data",
    ),
    case(
        "json-too-deep",
        lambda s: s.save_json("memory", "note", nested(MAX_JSON_DEPTH + 1)),
        InvalidDataError,
        "data",
    ),
    case(
        "json-tuple-key",
        lambda s: s.save_json("memory", "note", {("k",): 1}),
        InvalidDataError,
        "data",
    ),
    case(
        "json-model-nul",
        lambda s: s.save_json("memory", "note", Note(text="\x00")),
        InvalidDataError,
        "data",
    ),
    case(
        "json-oversized",
        lambda s: s.save_json("memory", "note", ["j" * (MAX_TEXT_LENGTH - 3)]),
        InvalidDataError,
        "data.*limit",
    ),
    case(
        "json-bad-category",
        lambda s: s.save_json("mem..ory", "note", {}),
        InvalidNameError,
        "category",
    ),
    case(
        "session-json-list", lambda s: s.save_json("sessions", "s-1", []), InvalidDataError, "data"
    ),
    case(
        "session-json-other-id",
        lambda s: s.save_json("sessions", "s-1", {"id": "s-0", "user_id": "u"}),
        InvalidDataError,
        "data.id",
    ),
    case(
        "session-json-naive-time",
        lambda s: s.save_json("sessions", "s-1", {"user_id": "u", "created_at": "2026-03-01"}),
        ValidationError,
        "created_at",
    ),
    case(
        "session-json-int-user",
        lambda s: s.save_json("sessions", "s-1", {"user_id": 5}),
        ValidationError,
        "user_id",
    ),
    case(
        "session-json-nul-metadata",
        lambda s: s.save_json("sessions", "s-1", {"user_id": "u", "metadata": {"k": "\x00"}}),
        InvalidDataError,
        "metadata",
    ),
    # deletes and prunes
    case("delete-bad-id", lambda s: s.delete_session("s-1/"), InvalidNameError, "session id"),
    case("delete-list-id", lambda s: s.delete_session(["s-1"]), InvalidNameError, "session id"),
    case(
        "delete-file-bad-name",
        lambda s: s.delete_file("memory", "../note"),
        InvalidNameError,
        "name",
    ),
    case(
        "delete-file-bad-category",
        lambda s: s.delete_file("memory\\x", "note"),
        InvalidNameError,
        "category",
    ),
    case(
        "prune-negative",
        lambda s: s.prune_sessions(PruneConfig(max_sessions=-1)),
        ValidationError,
        "max_sessions",
    ),
    case(
        "prune-str",
        lambda s: s.prune_sessions(PruneConfig(ttl_hours="soon")),
        ValidationError,
        "ttl_hours",
    ),
]


async def test_bad_input_fails_by_field_and_changes_nothing(
    filled: StateStore, subtests: pytest.Subtests
) -> None:
    """A write given bad input raises a typed error naming the field; the store is unchanged."""
    for case_id, bad in BAD_CALLS:
        with subtests.test(case_id):
            before = await snapshot(filled)

            with pytest.raises(bad.error, match=bad.field) as raised:
                await bad.call(filled)

            assert isinstance(raised.value, StateStoreError | ValidationError)
            assert await snapshot(filled) == before


# -- bad configs, callbacks and models -------------------------------------------------


async def test_prune_with_a_config_of_the_wrong_type_is_a_typed_error(filled: StateStore) -> None:
    """prune_sessions given something other than a PruneConfig raises a StateStoreError."""
    before = await snapshot(filled)

    with pytest.raises((StateStoreError, ValidationError), match="config"):
        await filled.prune_sessions({"max_sessions": 1})  # type: ignore[arg-type]

    assert await snapshot(filled) == before


async def test_save_with_prune_of_a_config_of_the_wrong_type_saves_nothing(
    filled: StateStore,
) -> None:
    """save_session_with_prune refuses a config that is not a PruneConfig before saving."""
    before = await snapshot(filled)

    with pytest.raises((StateStoreError, ValidationError), match="config"):
        await filled.save_session_with_prune(Session(user_id="new"), None)  # type: ignore[arg-type]

    assert await snapshot(filled) == before


async def test_save_json_of_a_session_with_a_naive_timestamp_is_refused(
    filled: StateStore,
) -> None:
    """A Session given to save_json('sessions', ...) with a naive timestamp is refused."""
    before = await snapshot(filled)
    session = await filled.load_session("s-1")
    assert session is not None
    session.updated_at = NAIVE

    with pytest.raises((StateStoreError, ValidationError), match="updated_at"):
        await filled.save_json("sessions", "s-1", session)

    assert await snapshot(filled) == before


async def test_save_json_of_a_model_that_cannot_be_written_is_a_typed_error(
    filled: StateStore,
) -> None:
    """A model whose values pydantic cannot write as JSON raises a StateStoreError."""

    class Loose(BaseModel):
        value: Any

    before = await snapshot(filled)

    with pytest.raises(StateStoreError, match="data"):
        await filled.save_json("memory", "note", Loose(value=object()))

    assert await snapshot(filled) == before


async def test_update_session_with_something_not_callable_is_a_typed_error(
    filled: StateStore,
) -> None:
    """update_session_with refuses an fn that is not callable before touching anything."""
    before = await snapshot(filled)

    with pytest.raises(InvalidDataError, match="fn"):
        await filled.update_session_with("s-1", "not a function")  # type: ignore[arg-type]

    assert await snapshot(filled) == before
