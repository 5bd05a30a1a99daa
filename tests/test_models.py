"""The pydantic models' contract: defaults, mutators, and the file store's JSON format."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from statestore import (
    AgentResponse,
    PruneConfig,
    PruneThrottle,
    Session,
    SessionSummary,
    UserMessage,
    _validate,
)

SESSIONS_DIR = Path(__file__).resolve().parents[1] / "examples" / "filestore-sample" / "sessions"
SAMPLE_FILES = sorted(
    path for path in SESSIONS_DIR.glob("*.json") if path.name != "corrupt-half-written.json"
)

OLD = datetime(2000, 1, 1, tzinfo=UTC)
"""A fixed instant long before any test runs."""

FIELD_ORDER = [
    "id",
    "user_id",
    "user_messages",
    "agent_responses",
    "active_seed_id",
    "active_persona_id",
    "created_at",
    "updated_at",
    "metadata",
]

_TIMESTAMP = re.compile(
    r"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<fraction>\d+))?(?P<zone>Z|[+-]\d\d:\d\d)"
)


def _instant(text: str) -> datetime:
    """Parse an RFC 3339 timestamp, truncating the fraction to microseconds, in UTC."""
    match = _TIMESTAMP.fullmatch(text)
    assert match is not None, f"not an RFC 3339 timestamp: {text!r}"
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    return datetime.fromisoformat(f"{match['base']}.{fraction}{zone}").astimezone(UTC)


def _normalized(session_json: dict[str, Any]) -> dict[str, Any]:
    """Return a session's JSON with timestamps parsed and missing lists/metadata as empty."""
    normalized = dict(session_json)
    normalized.setdefault("user_messages", [])
    normalized.setdefault("agent_responses", [])
    normalized.setdefault("metadata", {})
    for key in ("created_at", "updated_at"):
        normalized[key] = _instant(normalized[key])
    for key in ("user_messages", "agent_responses"):
        normalized[key] = [
            {**entry, "timestamp": _instant(entry["timestamp"])} for entry in normalized[key]
        ]
    return normalized


def _full_session() -> Session:
    return Session.model_validate(
        {
            "trajectory_steps": [{"tool_name": "grep"}],
            "metadata": {"project_ids": "proj-1"},
            "updated_at": datetime(2026, 3, 4, 15, 7, 41, tzinfo=UTC),
            "created_at": datetime(2026, 3, 4, 14, 49, tzinfo=UTC),
            "active_persona_id": "persona-2",
            "active_seed_id": "seed-beta",
            "agent_responses": [{"content": "hello", "timestamp": OLD}],
            "user_messages": [{"content": "hi", "timestamp": OLD}],
            "user_id": "user-1",
            "id": "s-1",
            "parent_session_id": "s-0",
        }
    )


# -- defaults ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: UserMessage(content="hi"), id="user-message"),
        pytest.param(lambda: AgentResponse(content="hello"), id="agent-response"),
    ],
)
def test_message_timestamp_defaults_to_now_in_utc(make: Callable[[], Any]) -> None:
    """A message or response without a timestamp is stamped now, aware and in UTC."""
    before = datetime.now(UTC)
    message = make()
    after = datetime.now(UTC)
    assert before <= message.timestamp <= after
    assert message.timestamp.utcoffset() == timedelta(0)


def test_agent_response_optional_fields_default_to_none() -> None:
    """An agent response's reported session, seed, phase and evaluation default to None."""
    response = AgentResponse(content="hello")
    assert response.session_id is None
    assert response.seed_id is None
    assert response.phase_reached is None
    assert response.evaluation_passed is None


def test_session_id_defaults_to_a_uuid4_string() -> None:
    """A new session's id is the string form of a version 4 UUID."""
    session = Session(user_id="u")
    parsed = uuid.UUID(session.id)
    assert parsed.version == 4
    assert str(parsed) == session.id


def test_session_ids_are_new_for_each_session() -> None:
    """Two new sessions get different ids."""
    assert Session(user_id="u").id != Session(user_id="u").id


def test_session_collections_default_to_empty() -> None:
    """A new session has no messages, no responses, no active ids and empty metadata."""
    session = Session(user_id="u")
    assert session.user_messages == []
    assert session.agent_responses == []
    assert session.active_seed_id is None
    assert session.active_persona_id is None
    assert session.metadata == {}


def test_session_default_lists_are_not_shared() -> None:
    """Each new session gets its own lists and metadata dict."""
    first, second = Session(user_id="u"), Session(user_id="u")
    first.add_user_message("hi")
    first.set_metadata("k", "v")
    assert second.user_messages == []
    assert second.metadata == {}


def test_session_created_at_defaults_to_now_in_utc() -> None:
    """A new session's created_at is now, aware and in UTC."""
    before = datetime.now(UTC)
    session = Session(user_id="u")
    after = datetime.now(UTC)
    assert before <= session.created_at <= after
    assert session.created_at.utcoffset() == timedelta(0)


def test_session_updated_at_defaults_to_created_at() -> None:
    """Without updated_at, a new session is updated at the same instant it was created."""
    session = Session(user_id="u")
    assert session.updated_at == session.created_at


def test_session_updated_at_defaults_to_given_created_at() -> None:
    """Without updated_at, an explicit created_at is used for updated_at too."""
    session = Session(user_id="u", created_at=OLD)
    assert session.updated_at == OLD


def test_session_json_without_updated_at_reads_it_as_created_at() -> None:
    """A session JSON without updated_at reads updated_at as its created_at."""
    session = Session.model_validate_json('{"user_id": "u", "created_at": "2026-03-10T02:09:00Z"}')
    assert session.updated_at == datetime(2026, 3, 10, 2, 9, tzinfo=UTC)


def test_session_explicit_updated_at_is_kept() -> None:
    """An updated_at given explicitly is kept rather than set to created_at."""
    updated = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    session = Session(user_id="u", created_at=OLD, updated_at=updated)
    assert session.created_at == OLD
    assert session.updated_at == updated


def test_session_requires_user_id() -> None:
    """A session without a user_id is rejected."""
    with pytest.raises(ValidationError):
        Session.model_validate({})


# -- mutators ---------------------------------------------------------------------------

MUTATORS = [
    pytest.param(lambda s: s.add_user_message("hi"), id="add_user_message"),
    pytest.param(
        lambda s: s.add_agent_response(AgentResponse(content="a")), id="add_agent_response"
    ),
    pytest.param(lambda s: s.set_active_seed("seed-1"), id="set_active_seed"),
    pytest.param(lambda s: s.set_active_seed(None), id="set_active_seed-clear"),
    pytest.param(lambda s: s.set_active_persona("persona-1"), id="set_active_persona"),
    pytest.param(lambda s: s.set_active_persona(None), id="set_active_persona-clear"),
    pytest.param(lambda s: s.set_metadata("k", "v"), id="set_metadata"),
]


@pytest.mark.parametrize("mutate", MUTATORS)
def test_mutator_sets_updated_at_to_now(mutate: Callable[[Session], object]) -> None:
    """Every mutator moves updated_at from an old value to now."""
    session = Session(user_id="u", created_at=OLD, updated_at=OLD)
    before = datetime.now(UTC)
    mutate(session)
    after = datetime.now(UTC)
    assert session.updated_at > OLD
    assert before <= session.updated_at <= after


@pytest.mark.parametrize("mutate", MUTATORS)
def test_mutator_leaves_created_at_alone(mutate: Callable[[Session], object]) -> None:
    """No mutator changes created_at."""
    session = Session(user_id="u", created_at=OLD, updated_at=OLD)
    mutate(session)
    assert session.created_at == OLD


def test_direct_assignment_leaves_updated_at_alone() -> None:
    """Assigning a field directly does not touch updated_at."""
    session = Session(user_id="u", created_at=OLD, updated_at=OLD)
    session.active_seed_id = "seed-1"
    assert session.updated_at == OLD


def test_add_user_message_appends_and_returns_it() -> None:
    """add_user_message appends a message with the content and returns that message."""
    session = Session(user_id="u")
    session.add_user_message("first")
    message = session.add_user_message("second")
    assert message.content == "second"
    assert session.user_messages[-1] is message
    assert [m.content for m in session.user_messages] == ["first", "second"]


def test_add_agent_response_appends_it() -> None:
    """add_agent_response appends the response as given."""
    session = Session(user_id="u")
    response = AgentResponse(content="hello", seed_id="seed-1")
    session.add_agent_response(response)
    assert session.agent_responses == [response]


@pytest.mark.parametrize("seed_id", ["seed-1", None], ids=["set", "clear"])
def test_set_active_seed_sets_or_clears_it(seed_id: str | None) -> None:
    """set_active_seed stores the seed id, or None to clear it."""
    session = Session(user_id="u", active_seed_id="old-seed")
    session.set_active_seed(seed_id)
    assert session.active_seed_id == seed_id


@pytest.mark.parametrize("persona_id", ["persona-1", None], ids=["set", "clear"])
def test_set_active_persona_sets_or_clears_it(persona_id: str | None) -> None:
    """set_active_persona stores the persona id, or None to clear it."""
    session = Session(user_id="u", active_persona_id="old-persona")
    session.set_active_persona(persona_id)
    assert session.active_persona_id == persona_id


def test_set_metadata_sets_one_entry() -> None:
    """set_metadata adds or replaces one entry and keeps the others."""
    session = Session(user_id="u", metadata={"a": 1, "b": 2})
    session.set_metadata("b", [3])
    assert session.metadata == {"a": 1, "b": [3]}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param("present", {"nested": True}, id="present"),
        pytest.param("falsy", 0, id="falsy-value"),
        pytest.param("missing", None, id="missing"),
    ],
)
def test_get_metadata_returns_value_or_none(key: str, expected: object) -> None:
    """get_metadata returns the entry's value, or None when the key is not set."""
    session = Session(user_id="u", metadata={"present": {"nested": True}, "falsy": 0})
    assert session.get_metadata(key) == expected


@pytest.mark.parametrize(
    ("messages", "responses", "expected"),
    [
        pytest.param(0, 0, 0, id="empty"),
        pytest.param(2, 0, 0, id="messages-only"),
        pytest.param(0, 2, 0, id="responses-only"),
        pytest.param(3, 2, 2, id="more-messages"),
        pytest.param(1, 3, 1, id="more-responses"),
        pytest.param(2, 2, 2, id="equal"),
    ],
)
def test_exchange_count_is_the_shorter_history(
    messages: int, responses: int, expected: int
) -> None:
    """exchange_count is the smaller of the message and response counts."""
    session = Session(user_id="u")
    for index in range(messages):
        session.add_user_message(f"m{index}")
    for index in range(responses):
        session.add_agent_response(AgentResponse(content=f"r{index}"))
    assert session.exchange_count() == expected


@pytest.mark.parametrize(
    ("messages", "responses", "expected"),
    [
        pytest.param(0, 0, True, id="new"),
        pytest.param(0, 1, True, id="responses-only"),
        pytest.param(1, 0, False, id="one-message"),
        pytest.param(2, 2, False, id="exchanges"),
    ],
)
def test_is_empty_means_no_user_messages(messages: int, responses: int, expected: bool) -> None:
    """is_empty is true exactly when the user has sent no message."""
    session = Session(user_id="u")
    for index in range(messages):
        session.add_user_message(f"m{index}")
    for index in range(responses):
        session.add_agent_response(AgentResponse(content=f"r{index}"))
    assert session.is_empty() is expected


# -- writing JSON -----------------------------------------------------------------------


def test_dump_json_field_order() -> None:
    """Session JSON lists the known fields in the file store's order, then unknown fields."""
    dumped = json.loads(_full_session().model_dump_json())
    assert list(dumped) == [*FIELD_ORDER, "trajectory_steps", "parent_session_id"]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        pytest.param(
            UserMessage(content="hi", extra_field=1),
            ["content", "timestamp", "extra_field"],
            id="user-message",
        ),
        pytest.param(
            AgentResponse(content="hello", extra_field=1),
            [
                "content",
                "session_id",
                "seed_id",
                "phase_reached",
                "evaluation_passed",
                "timestamp",
                "extra_field",
            ],
            id="agent-response",
        ),
    ],
)
def test_dump_json_message_field_order(
    model: UserMessage | AgentResponse, expected: list[str]
) -> None:
    """Message and response JSON list their fields in the file store's order."""
    assert list(json.loads(model.model_dump_json())) == expected


def test_dump_json_keeps_none_in_agent_response() -> None:
    """An agent response writes its unset optional fields as null, as the file store did."""
    dumped = json.loads(AgentResponse(content="hello").model_dump_json())
    assert dumped["session_id"] is None
    assert dumped["evaluation_passed"] is None


@pytest.mark.parametrize("field", ["active_seed_id", "active_persona_id"])
def test_dump_json_omits_unset_active_id(field: str) -> None:
    """An active seed or persona id that is None is left out of the JSON."""
    dumped = json.loads(Session(user_id="u").model_dump_json())
    assert field not in dumped


@pytest.mark.parametrize("field", ["active_seed_id", "active_persona_id"])
def test_dump_json_writes_set_active_id(field: str) -> None:
    """An active seed or persona id that is set is written."""
    dumped = json.loads(Session.model_validate({"user_id": "u", field: "x-1"}).model_dump_json())
    assert dumped[field] == "x-1"


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        pytest.param(
            datetime(2026, 3, 4, 14, 49, 5, tzinfo=UTC), "2026-03-04T14:49:05Z", id="whole"
        ),
        pytest.param(
            datetime(2026, 3, 4, 14, 49, 5, 123456, tzinfo=UTC),
            "2026-03-04T14:49:05.123456Z",
            id="micro",
        ),
        pytest.param(
            datetime(2026, 3, 4, 14, 49, 5, 120000, tzinfo=UTC),
            "2026-03-04T14:49:05.12Z",
            id="trailing-zeros",
        ),
        pytest.param(
            datetime(2026, 3, 4, 14, 49, 5, 100, tzinfo=UTC),
            "2026-03-04T14:49:05.0001Z",
            id="leading-zeros",
        ),
        pytest.param(
            datetime(2026, 3, 4, 16, 49, 5, 500000, tzinfo=timezone(timedelta(hours=2))),
            "2026-03-04T14:49:05.5Z",
            id="offset",
        ),
        pytest.param(
            datetime(2026, 3, 4, 23, 30, tzinfo=timezone(timedelta(hours=-5))),
            "2026-03-05T04:30:00Z",
            id="offset-next-day",
        ),
        pytest.param(
            datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05Z", id="year-999"
        ),
    ],
)
def test_dump_json_timestamp_format(moment: datetime, expected: str) -> None:
    """Timestamps are written as RFC 3339 UTC with Z, fraction trimmed or omitted."""
    dumped = json.loads(UserMessage(content="hi", timestamp=moment).model_dump_json())
    assert dumped["timestamp"] == expected


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param(datetime(2026, 3, 4, 14, 49, 5, 120000, tzinfo=UTC), id="ordinary"),
        pytest.param(datetime(1970, 1, 1, tzinfo=UTC), id="epoch"),
        pytest.param(datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC), id="latest"),
        pytest.param(datetime(1, 1, 2, tzinfo=UTC), id="earliest"),
        pytest.param(datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), id="year-999"),
    ],
)
def test_timestamp_json_round_trips(moment: datetime) -> None:
    """A timestamp written to JSON reads back as the same instant."""
    message = UserMessage(content="hi", timestamp=moment)
    assert UserMessage.model_validate_json(message.model_dump_json()).timestamp == moment


def test_dump_json_session_timestamps_end_in_z() -> None:
    """Every timestamp a session writes, its own and its messages', ends in Z."""
    dumped = json.loads(_full_session().model_dump_json())
    stamps = [dumped["created_at"], dumped["updated_at"]]
    stamps += [entry["timestamp"] for entry in dumped["user_messages"] + dumped["agent_responses"]]
    assert all(stamp.endswith("Z") for stamp in stamps)


# -- reading JSON -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "empty"),
    [
        pytest.param("user_messages", [], id="user_messages"),
        pytest.param("agent_responses", [], id="agent_responses"),
        pytest.param("metadata", {}, id="metadata"),
    ],
)
def test_validate_json_reads_missing_collections_as_empty(field: str, empty: object) -> None:
    """A session JSON without messages, responses or metadata reads them as empty."""
    text = '{"id": "s", "user_id": "u", "created_at": "2026-03-10T02:09:00Z"}'
    assert getattr(Session.model_validate_json(text), field) == empty


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "2026-03-10T02:09:00.616629275Z",
            datetime(2026, 3, 10, 2, 9, 0, 616629, tzinfo=UTC),
            id="nanoseconds",
        ),
        pytest.param(
            "2026-03-10T02:09:00.999999999Z",
            datetime(2026, 3, 10, 2, 9, 0, 999999, tzinfo=UTC),
            id="truncated-not-rounded",
        ),
        pytest.param(
            "2026-03-10T02:09:00.5Z",
            datetime(2026, 3, 10, 2, 9, 0, 500000, tzinfo=UTC),
            id="short-fraction",
        ),
        pytest.param(
            "2026-03-10T02:09:00Z", datetime(2026, 3, 10, 2, 9, tzinfo=UTC), id="no-fraction"
        ),
    ],
)
def test_validate_json_fractions(text: str, expected: datetime) -> None:
    """Fractions up to nanoseconds are accepted and truncated to microseconds."""
    message = UserMessage.model_validate_json(json.dumps({"content": "hi", "timestamp": text}))
    assert message.timestamp == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "2026-03-10T02:09:00+02:00", datetime(2026, 3, 10, 0, 9, tzinfo=UTC), id="east"
        ),
        pytest.param(
            "2026-03-10T20:09:00.25-05:30",
            datetime(2026, 3, 11, 1, 39, 0, 250000, tzinfo=UTC),
            id="west-next-day",
        ),
        pytest.param(
            "2026-03-10T02:09:00+00:00", datetime(2026, 3, 10, 2, 9, tzinfo=UTC), id="zero"
        ),
    ],
)
def test_validate_json_converts_offsets_to_utc(text: str, expected: datetime) -> None:
    """A timestamp with another offset is converted to the same instant in UTC."""
    message = UserMessage.model_validate_json(json.dumps({"content": "hi", "timestamp": text}))
    assert message.timestamp == expected
    assert message.timestamp.utcoffset() == timedelta(0)


def test_validate_converts_aware_datetime_to_utc() -> None:
    """An aware datetime in another zone given in Python is converted to UTC."""
    moment = datetime(2026, 3, 10, 2, 9, tzinfo=timezone(timedelta(hours=9)))
    session = Session(user_id="u", created_at=moment)
    assert session.created_at == moment
    assert session.created_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"user_id": "u", "created_at": "2026-03-10T02:09:00"}, id="created_at"),
        pytest.param(
            {
                "user_id": "u",
                "created_at": "2026-03-10T02:09:00Z",
                "updated_at": "2026-03-10T02:09:00",
            },
            id="updated_at",
        ),
        pytest.param(
            {
                "user_id": "u",
                "user_messages": [{"content": "hi", "timestamp": "2026-03-10T02:09:00"}],
            },
            id="user-message-timestamp",
        ),
        pytest.param(
            {
                "user_id": "u",
                "agent_responses": [{"content": "a", "timestamp": "2026-03-10T02:09:00.123"}],
            },
            id="agent-response-timestamp",
        ),
    ],
)
def test_validate_json_rejects_naive_timestamps(data: dict[str, Any]) -> None:
    """A timestamp without an offset is rejected rather than guessed at."""
    with pytest.raises(ValidationError):
        Session.model_validate_json(json.dumps(data))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: Session(user_id="u", created_at=datetime(2026, 3, 10)), id="session"),
        pytest.param(
            lambda: UserMessage(content="hi", timestamp=datetime(2026, 3, 10)), id="user-message"
        ),
        pytest.param(
            lambda: AgentResponse(content="a", timestamp=datetime(2026, 3, 10)), id="agent-response"
        ),
    ],
)
def test_validate_rejects_naive_datetime(make: Callable[[], object]) -> None:
    """A naive datetime given in Python is rejected with a ValidationError."""
    with pytest.raises(ValidationError):
        make()


def test_validate_json_keeps_unknown_session_fields() -> None:
    """Fields a session does not model are kept as extra fields."""
    text = json.dumps(
        {
            "user_id": "u",
            "created_at": "2026-03-10T02:09:00Z",
            "trajectory_steps": [{"tool_name": "grep", "tool_args": {"q": "x"}}],
            "parent_session_id": "parent-1",
        }
    )
    session = Session.model_validate_json(text)
    assert session.model_extra == {
        "trajectory_steps": [{"tool_name": "grep", "tool_args": {"q": "x"}}],
        "parent_session_id": "parent-1",
    }


def test_dump_json_writes_unknown_fields_back() -> None:
    """Unknown fields read from JSON are written back unchanged."""
    text = json.dumps(
        {
            "id": "s",
            "user_id": "u",
            "created_at": "2026-03-10T02:09:00Z",
            "trajectory_steps": [{"tool_name": "grep"}],
            "parent_session_id": None,
        }
    )
    dumped = json.loads(Session.model_validate_json(text).model_dump_json())
    assert dumped["trajectory_steps"] == [{"tool_name": "grep"}]
    assert "parent_session_id" in dumped
    assert dumped["parent_session_id"] is None


@pytest.mark.parametrize(
    ("model", "data"),
    [
        pytest.param(
            UserMessage,
            {"content": "hi", "timestamp": "2026-03-10T02:09:00Z", "attachments": ["a.png"]},
            id="user-message",
        ),
        pytest.param(
            AgentResponse,
            {"content": "a", "timestamp": "2026-03-10T02:09:00Z", "tokens": {"in": 3, "out": 5}},
            id="agent-response",
        ),
    ],
)
def test_message_unknown_fields_round_trip(
    model: type[UserMessage | AgentResponse], data: dict[str, Any]
) -> None:
    """Messages and responses keep unknown fields and write them back."""
    dumped = json.loads(model.model_validate_json(json.dumps(data)).model_dump_json())
    assert {key: dumped[key] for key in data} == data


def test_sample_files_found() -> None:
    """The sample directory holds session files to round-trip."""
    assert len(SAMPLE_FILES) > 10
    assert all(path.suffix == ".json" for path in SAMPLE_FILES)


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[path.stem for path in SAMPLE_FILES])
def test_sample_file_round_trips(path: Path) -> None:
    """A file store session reads and writes back the same JSON, to the microsecond."""
    original = json.loads(path.read_text(encoding="utf-8"))
    dumped = json.loads(Session.model_validate_json(path.read_bytes()).model_dump_json())
    assert _normalized(dumped) == _normalized(original)


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[path.stem for path in SAMPLE_FILES])
def test_sample_file_field_order_is_kept(path: Path) -> None:
    """Writing a file store session back keeps the file's field order."""
    original = json.loads(path.read_text(encoding="utf-8"))
    dumped = json.loads(Session.model_validate_json(path.read_bytes()).model_dump_json())
    assert [key for key in dumped if key in original] == list(original)


def test_corrupt_sample_file_is_rejected() -> None:
    """A half-written session file fails validation."""
    with pytest.raises(ValidationError):
        Session.model_validate_json((SESSIONS_DIR / "corrupt-half-written.json").read_bytes())


# -- summaries and prune settings -------------------------------------------------------


def test_session_summary_fields() -> None:
    """A session summary has exactly the listing's fields, in order."""
    assert list(SessionSummary.model_fields) == [
        "id",
        "user_id",
        "message_count",
        "active_seed_id",
        "project_id",
        "created_at",
        "updated_at",
        "parent_session_id",
    ]


def test_session_summary_dumps_timestamps_in_utc() -> None:
    """A session summary writes its timestamps as RFC 3339 UTC with Z."""
    summary = SessionSummary(
        id="s",
        user_id="u",
        message_count=2,
        active_seed_id=None,
        project_id="proj-1",
        created_at=datetime(2026, 3, 10, 3, 9, tzinfo=timezone(timedelta(hours=1))),
        updated_at=datetime(2026, 3, 10, 2, 9, 0, 500000, tzinfo=UTC),
    )
    dumped = json.loads(summary.model_dump_json())
    assert dumped["created_at"] == "2026-03-10T02:09:00Z"
    assert dumped["updated_at"] == "2026-03-10T02:09:00.5Z"


def test_prune_config_defaults() -> None:
    """By default a prune keeps 100 sessions and removes those idle for 168 hours."""
    config = PruneConfig()
    assert config.max_sessions == 100
    assert config.ttl_hours == 168


@pytest.mark.parametrize("field", ["max_sessions", "ttl_hours"])
def test_prune_config_rejects_negative(field: str) -> None:
    """A negative prune limit is rejected."""
    with pytest.raises(ValidationError):
        PruneConfig.model_validate({field: -1})


@pytest.mark.parametrize("field", ["max_sessions", "ttl_hours"])
def test_prune_config_accepts_zero(field: str) -> None:
    """A prune limit of 0 (rule off) is accepted."""
    assert getattr(PruneConfig.model_validate({field: 0}), field) == 0


def test_prune_config_is_frozen() -> None:
    """A prune config cannot be changed after it is made."""
    config = PruneConfig()
    with pytest.raises(ValidationError):
        config.max_sessions = 5  # type: ignore[misc]


def test_prune_throttle_lets_first_call_through() -> None:
    """The first should_prune call returns True."""
    assert PruneThrottle(3600).should_prune() is True


def test_prune_throttle_blocks_within_cooldown() -> None:
    """A second call within the cooldown returns False."""
    throttle = PruneThrottle(3600)
    throttle.should_prune()
    assert throttle.should_prune() is False
    assert throttle.should_prune() is False


def test_prune_throttle_lets_through_after_cooldown() -> None:
    """A call after the cooldown has passed returns True again."""
    throttle = PruneThrottle(0.05)
    assert throttle.should_prune() is True
    time.sleep(0.1)
    assert throttle.should_prune() is True


def test_prune_throttle_zero_cooldown_always_lets_through() -> None:
    """With a cooldown of 0 every call returns True."""
    throttle = PruneThrottle(0)
    assert all(throttle.should_prune() for _ in range(20))


def test_prune_throttle_rejects_negative_cooldown() -> None:
    """A negative cooldown is rejected with ValueError."""
    with pytest.raises(ValueError, match="cooldown_secs"):
        PruneThrottle(-1)


def test_prune_throttle_lets_one_of_many_threads_through() -> None:
    """Of many threads calling at once within one cooldown, exactly one gets True."""
    throttle = PruneThrottle(3600)
    thread_count = 32
    barrier = threading.Barrier(thread_count)
    results: list[bool] = []
    results_lock = threading.Lock()

    def call() -> None:
        barrier.wait()
        outcome = throttle.should_prune()
        with results_lock:
            results.append(outcome)

    threads = [threading.Thread(target=call) for _ in range(thread_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == thread_count
    assert results.count(True) == 1


# -- fields an older file store left out --------------------------------------------------


def test_fields_a_file_left_out_stay_out_while_empty() -> None:
    """A session file read without its empty lists and metadata dumps without them."""
    session = _validate.session_from_json("s", '{"id": "s", "user_id": "u"}')
    assert set(session.model_dump(mode="json")) == {"id", "user_id", "created_at", "updated_at"}
    session.user_messages.append(UserMessage(content="hi"))
    assert "user_messages" in session.model_dump(mode="json")


def test_fields_a_file_gave_empty_are_written_back() -> None:
    """Empty lists and metadata given explicitly are written back explicitly."""
    text = '{"id": "s", "user_id": "u", "user_messages": [], "agent_responses": [], "metadata": {}}'
    dumped = Session.model_validate_json(text).model_dump(mode="json")
    assert (dumped["user_messages"], dumped["agent_responses"], dumped["metadata"]) == ([], [], {})


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: Session(user_id="u"), id="constructor"),
        pytest.param(lambda: Session.model_validate({"user_id": "u"}), id="model_validate"),
        pytest.param(lambda: Session.model_validate_json('{"user_id": "u"}'), id="validate_json"),
    ],
)
def test_a_new_session_writes_every_field_as_the_file_store_did(
    make: Callable[[], Session],
) -> None:
    """A session made in code dumps its empty lists and metadata, as the file store wrote them."""
    dumped = make().model_dump(mode="json")
    assert (dumped["user_messages"], dumped["agent_responses"], dumped["metadata"]) == ([], [], {})
