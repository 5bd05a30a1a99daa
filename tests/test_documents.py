"""The document API: markdown and JSON documents by category and name, and the sessions view."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from statestore import AgentResponse, InvalidDataError, Session, StateStore, UserMessage
from statestore.models import MAX_JSON_DEPTH, MAX_TEXT_LENGTH


class Note(BaseModel):
    """A small model to store as a JSON document."""

    title: str
    tags: list[str]
    score: float
    written_at: datetime


NOTE = Note(
    title="Grocery ✓",
    tags=["home", "weekly"],
    score=0.5,
    written_at=datetime(2026, 3, 4, 14, 49, 5, 120000, tzinfo=UTC),
)


def _nested(depth: int) -> Any:
    """Return ``depth`` lists nested in one another."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _cyclic() -> list[Any]:
    """Return a list that contains itself."""
    cycle: list[Any] = []
    cycle.append(cycle)
    return cycle


def _session() -> Session:
    session = Session.model_validate(
        {
            "id": "0b7e2f4a-4c1d-4f7e-9a51-7d3c2b1a0e9f",
            "user_id": "user-1",
            "created_at": datetime(2026, 3, 4, 14, 49, 0, 544735, tzinfo=UTC),
            "metadata": {"project_ids": "proj-1", "tags": ["a", "b"]},
            "trajectory_steps": [{"tool_name": "grep", "tool_args": {"q": "x"}}],
        }
    )
    session.add_user_message("Can you refactor the parser?")
    session.add_agent_response(
        AgentResponse(content="Sure 👩‍💻", seed_id="seed-beta", evaluation_passed=True)
    )
    session.set_active_seed("seed-beta")
    return session


def _same_json(loaded: Any, expected: Any) -> bool:
    """Whether two JSON values are equal with the same types and key order."""
    return bool(loaded == expected) and json.dumps(loaded) == json.dumps(expected)


# -- markdown ---------------------------------------------------------------------------


async def test_markdown_round_trips(store: StateStore) -> None:
    """A saved markdown document loads back exactly."""
    content = "# Title\n\nline one\r\nline two\n\ttabbed — ünïcødé 👩‍💻\n"
    await store.save_markdown("seeds", "seed-alpha", content)
    assert await store.load_markdown("seeds", "seed-alpha") == content


async def test_markdown_empty_content_round_trips(store: StateStore) -> None:
    """An empty markdown document is stored and loads as an empty string, not None."""
    await store.save_markdown("seeds", "empty", "")
    assert await store.load_markdown("seeds", "empty") == ""


async def test_markdown_overwrite_replaces(store: StateStore) -> None:
    """Saving markdown under an existing name replaces the old text."""
    await store.save_markdown("seeds", "seed-alpha", "old")
    await store.save_markdown("seeds", "seed-alpha", "new")
    assert await store.load_markdown("seeds", "seed-alpha") == "new"


async def test_load_missing_markdown_is_none(store: StateStore) -> None:
    """Loading a markdown document that was never saved returns None."""
    assert await store.load_markdown("seeds", "missing") is None


async def test_markdown_is_per_category(store: StateStore) -> None:
    """The same name in two categories names two documents."""
    await store.save_markdown("memory", "note", "top")
    await store.save_markdown("memory/notes", "note", "nested")
    assert await store.load_markdown("memory", "note") == "top"
    assert await store.load_markdown("memory/notes", "note") == "nested"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("a\x00b", id="nul"),
        pytest.param("\x00", id="only-nul"),
        pytest.param("x\ud800y", id="lone-high-surrogate"),
        pytest.param("\udfff", id="lone-low-surrogate"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param(None, id="none"),
    ],
)
async def test_save_markdown_rejects_bad_content(store: StateStore, content: Any) -> None:
    """Markdown that is not storable text is rejected and the stored text stays."""
    await store.save_markdown("seeds", "seed-alpha", "original")
    with pytest.raises(InvalidDataError):
        await store.save_markdown("seeds", "seed-alpha", content)
    assert await store.load_markdown("seeds", "seed-alpha") == "original"


# -- JSON -------------------------------------------------------------------------------

JSON_VALUES = [
    pytest.param({"a": 1, "b": [True, None, 2.5]}, id="dict"),
    pytest.param({"z": 1, "a": 2, "m": 3}, id="dict-key-order"),
    pytest.param({}, id="empty-dict"),
    pytest.param([1, "two", 3.0, False, None], id="list"),
    pytest.param([], id="empty-list"),
    pytest.param("text", id="str"),
    pytest.param("", id="empty-str"),
    pytest.param(42, id="int"),
    pytest.param(-(2**80), id="big-int"),
    pytest.param(1.5e-300, id="float"),
    pytest.param(-0.0, id="negative-zero"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(0, id="zero"),
    pytest.param({"ключ": "значение", "emoji": "👩‍💻", "sep": "\u2028\u2029"}, id="unicode"),
    pytest.param({"quote": '"', "backslash": "\\", "newline": "\n"}, id="escapes"),
    pytest.param({"a": [{"b": {"c": [1, [2, [3]]]}}], "d": {"e": None}}, id="nested"),
    pytest.param(_nested(MAX_JSON_DEPTH), id="max-depth"),
]


@pytest.mark.parametrize("value", JSON_VALUES)
async def test_json_round_trips(store: StateStore, value: Any) -> None:
    """A saved JSON value loads back equal, with the same types and key order."""
    await store.save_json("agents", "doc", value)
    assert _same_json(await store.load_json("agents", "doc"), value)


async def test_json_null_round_trips(store: StateStore) -> None:
    """A JSON null is stored as a document: it loads as None and is listed."""
    await store.save_json("agents", "nothing", None)
    assert await store.load_json("agents", "nothing") is None
    assert await store.list_category("agents") == ["nothing"]


async def test_json_overwrite_replaces(store: StateStore) -> None:
    """Saving JSON under an existing name replaces the old value."""
    await store.save_json("agents", "agent-0", {"version": 1})
    await store.save_json("agents", "agent-0", ["now", "a", "list"])
    assert await store.load_json("agents", "agent-0") == ["now", "a", "list"]


async def test_load_missing_json_is_none(store: StateStore) -> None:
    """Loading a JSON document that was never saved returns None."""
    assert await store.load_json("agents", "missing") is None


async def test_load_missing_json_with_model_is_none(store: StateStore) -> None:
    """Loading a missing JSON document into a model returns None."""
    assert await store.load_json("agents", "missing", model=Note) is None


async def test_save_json_of_model_stores_its_json(store: StateStore) -> None:
    """A pydantic model is stored as its JSON form."""
    await store.save_json("notes", "n1", NOTE)
    assert await store.load_json("notes", "n1") == json.loads(NOTE.model_dump_json())


async def test_load_json_validates_into_model(store: StateStore) -> None:
    """load_json with a model returns the document validated into that model."""
    await store.save_json("notes", "n1", NOTE)
    assert await store.load_json("notes", "n1", model=Note) == NOTE


async def test_session_model_round_trips_outside_sessions(store: StateStore) -> None:
    """A Session saved as a JSON document elsewhere loads back as the same session."""
    session = _session()
    await store.save_json("archive", session.id, session)
    loaded = await store.load_json("archive", session.id, model=Session)
    assert loaded is not None
    assert json.loads(loaded.model_dump_json()) == json.loads(session.model_dump_json())


async def test_load_json_of_dict_into_model(store: StateStore) -> None:
    """A JSON document saved as a plain dict can be loaded into a model."""
    await store.save_json("notes", "n1", json.loads(NOTE.model_dump_json()))
    assert await store.load_json("notes", "n1", model=Note) == NOTE


BAD_JSON = [
    pytest.param({1, 2}, id="set"),
    pytest.param(object(), id="object"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param({"a": [1, float("-inf")]}, id="nested-inf"),
    pytest.param({1: "one"}, id="int-key"),
    pytest.param({"a": {None: 1}}, id="nested-none-key"),
    pytest.param(("tuple",), id="tuple"),
    pytest.param(b"bytes", id="bytes"),
    pytest.param({"a": "x\x00y"}, id="nul-in-str"),
    pytest.param({"x\x00": 1}, id="nul-in-key"),
    pytest.param(["\ud800"], id="lone-surrogate"),
    pytest.param(_nested(MAX_JSON_DEPTH + 1), id="too-deep-list"),
    pytest.param({"a": _nested(MAX_JSON_DEPTH)}, id="too-deep-dict"),
    pytest.param(_cyclic(), id="cyclic"),
]


@pytest.mark.parametrize("data", BAD_JSON)
async def test_save_json_rejects_unjsonable(store: StateStore, data: Any) -> None:
    """Data that is not exactly JSON is rejected and the stored document stays."""
    await store.save_json("agents", "doc", {"original": True})
    with pytest.raises(InvalidDataError):
        await store.save_json("agents", "doc", data)
    assert await store.load_json("agents", "doc") == {"original": True}


@pytest.mark.parametrize("data", BAD_JSON)
async def test_save_json_rejects_unjsonable_new_document(store: StateStore, data: Any) -> None:
    """Rejected data creates no document."""
    with pytest.raises(InvalidDataError):
        await store.save_json("agents", "doc", data)
    assert await store.list_category("agents") == []


async def test_save_json_rejects_int_too_long_to_write(store: StateStore) -> None:
    """An int too long for Python to write as JSON is rejected with InvalidDataError."""
    await store.save_json("agents", "doc", {"original": True})
    with pytest.raises(InvalidDataError):
        await store.save_json("agents", "doc", {"n": 10**5000})
    assert await store.load_json("agents", "doc") == {"original": True}


# -- markdown and JSON together, listing and deleting -----------------------------------


async def test_markdown_and_json_share_a_name(store: StateStore) -> None:
    """A markdown and a JSON document of the same name are kept apart and both load."""
    await store.save_markdown("personas", "persona-1", "# Persona")
    await store.save_json("personas", "persona-1", {"name": "Persona"})
    assert await store.load_markdown("personas", "persona-1") == "# Persona"
    assert await store.load_json("personas", "persona-1") == {"name": "Persona"}


async def test_list_category_lists_shared_name_once(store: StateStore) -> None:
    """A name with both a markdown and a JSON document is listed once."""
    await store.save_markdown("personas", "persona-1", "# Persona")
    await store.save_json("personas", "persona-1", {"name": "Persona"})
    assert await store.list_category("personas") == ["persona-1"]


async def test_list_category_is_sorted(store: StateStore) -> None:
    """list_category returns names in sorted order, whatever order they were saved in."""
    names = ["zeta", "Alpha", "beta", "b", "10", "2", "ünï", "a.b", "a-b"]
    for index, name in enumerate(names):
        if index % 2:
            await store.save_markdown("memory", name, name)
        else:
            await store.save_json("memory", name, name)
    assert await store.list_category("memory") == sorted(names)


async def test_list_category_of_unknown_category_is_empty(store: StateStore) -> None:
    """Listing a category with no documents returns an empty list."""
    assert await store.list_category("nothing/here") == []


async def test_list_category_excludes_nested_category(store: StateStore) -> None:
    """Listing a category does not list a nested category's documents."""
    await store.save_markdown("memory", "top", "t")
    await store.save_markdown("memory/notes", "nested", "n")
    assert await store.list_category("memory") == ["top"]


async def test_list_category_excludes_parent_category(store: StateStore) -> None:
    """Listing a nested category does not list its parent's documents."""
    await store.save_markdown("memory", "top", "t")
    await store.save_json("memory/notes", "nested", {"n": 1})
    assert await store.list_category("memory/notes") == ["nested"]


async def test_list_category_excludes_prefix_sibling(store: StateStore) -> None:
    """Listing a category does not list a category whose name merely starts the same."""
    await store.save_markdown("memory", "top", "t")
    await store.save_markdown("memory-old", "other", "o")
    assert await store.list_category("memory") == ["top"]


async def test_delete_file_deletes_json_first(store: StateStore) -> None:
    """delete_file removes the JSON document and leaves the markdown one of that name."""
    await store.save_markdown("personas", "p", "# P")
    await store.save_json("personas", "p", {"p": 1})
    assert await store.delete_file("personas", "p") is True
    assert await store.load_json("personas", "p") is None
    assert await store.load_markdown("personas", "p") == "# P"


async def test_delete_file_deletes_markdown_second(store: StateStore) -> None:
    """A second delete_file removes the markdown document."""
    await store.save_markdown("personas", "p", "# P")
    await store.save_json("personas", "p", {"p": 1})
    await store.delete_file("personas", "p")
    assert await store.delete_file("personas", "p") is True
    assert await store.load_markdown("personas", "p") is None
    assert await store.list_category("personas") == []


async def test_delete_file_returns_false_when_nothing_left(store: StateStore) -> None:
    """Once both documents are gone, delete_file returns False."""
    await store.save_markdown("personas", "p", "# P")
    await store.save_json("personas", "p", {"p": 1})
    await store.delete_file("personas", "p")
    await store.delete_file("personas", "p")
    assert await store.delete_file("personas", "p") is False


async def test_delete_file_of_missing_is_false(store: StateStore) -> None:
    """Deleting a document that never existed returns False."""
    assert await store.delete_file("personas", "missing") is False


async def test_delete_file_leaves_other_categories(store: StateStore) -> None:
    """delete_file removes only the document in the given category."""
    await store.save_json("memory", "note", {"top": True})
    await store.save_json("memory/notes", "note", {"nested": True})
    await store.delete_file("memory", "note")
    assert await store.load_json("memory/notes", "note") == {"nested": True}


# -- the sessions category --------------------------------------------------------------


async def test_sessions_category_lists_saved_sessions(store: StateStore) -> None:
    """list_category('sessions') lists the ids of sessions saved with save_session."""
    sessions = [Session(user_id="u") for _ in range(3)]
    for session in sessions:
        await store.save_session(session)
    assert await store.list_category("sessions") == sorted(s.id for s in sessions)


async def test_sessions_category_load_json_is_session_json(store: StateStore) -> None:
    """load_json('sessions', id) returns the session's JSON object."""
    session = _session()
    await store.save_session(session)
    loaded = await store.load_json("sessions", session.id)
    assert loaded == json.loads(session.model_dump_json())


async def test_sessions_category_load_json_into_model(store: StateStore) -> None:
    """load_json('sessions', id, model=Session) returns the stored session."""
    session = _session()
    await store.save_session(session)
    loaded = await store.load_json("sessions", session.id, model=Session)
    assert loaded is not None
    assert json.loads(loaded.model_dump_json()) == json.loads(session.model_dump_json())


async def test_sessions_category_load_missing_is_none(store: StateStore) -> None:
    """load_json('sessions', id) of an unknown id returns None."""
    assert await store.load_json("sessions", "missing") is None


async def test_sessions_category_save_json_saves_session(store: StateStore) -> None:
    """save_json('sessions', id, data) saves a session that load_session returns."""
    session = _session()
    data = json.loads(session.model_dump_json())
    await store.save_json("sessions", session.id, data)
    loaded = await store.load_session(session.id)
    assert loaded is not None
    assert json.loads(loaded.model_dump_json()) == data


async def test_sessions_category_save_json_without_id_uses_name(store: StateStore) -> None:
    """Session data without an id is saved under the document name."""
    await store.save_json("sessions", "named-1", {"user_id": "u"})
    loaded = await store.load_session("named-1")
    assert loaded is not None
    assert loaded.id == "named-1"


async def test_sessions_category_save_json_of_session_model(store: StateStore) -> None:
    """save_json('sessions', id, session) saves that session."""
    session = _session()
    await store.save_json("sessions", session.id, session)
    loaded = await store.load_session(session.id)
    assert loaded is not None
    assert json.loads(loaded.model_dump_json()) == json.loads(session.model_dump_json())


async def test_sessions_category_save_json_rejects_mismatched_id(store: StateStore) -> None:
    """Session data whose id differs from the name is rejected and nothing is saved."""
    with pytest.raises(InvalidDataError):
        await store.save_json("sessions", "name-1", {"id": "other-1", "user_id": "u"})
    assert await store.load_session("name-1") is None
    assert await store.load_session("other-1") is None


async def test_sessions_category_save_json_rejects_non_object(store: StateStore) -> None:
    """Session data that is not a JSON object is rejected."""
    with pytest.raises(InvalidDataError):
        await store.save_json("sessions", "s-1", ["not", "a", "session"])


async def test_sessions_category_delete_file_deletes_session(store: StateStore) -> None:
    """delete_file('sessions', id) deletes the session."""
    session = _session()
    await store.save_session(session)
    assert await store.delete_file("sessions", session.id) is True
    assert await store.load_session(session.id) is None
    assert await store.list_category("sessions") == []


async def test_sessions_category_delete_missing_is_false(store: StateStore) -> None:
    """delete_file('sessions', id) of an unknown id returns False."""
    assert await store.delete_file("sessions", "missing") is False


# -- properties -------------------------------------------------------------------------

STORABLE_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"))

JSON_STRATEGY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | STORABLE_TEXT,
    lambda children: st.lists(children) | st.dictionaries(STORABLE_TEXT, children),
    max_leaves=30,
)

PROPERTY_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


async def _open(path: Path) -> StateStore:
    return await StateStore.open(path)


def test_any_storable_text_round_trips(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Any text without NUL or lone surrogates loads back exactly as saved as markdown."""
    path = tmp_path_factory.mktemp("markdown-property") / "h.db"
    with asyncio.Runner() as runner:
        store = runner.run(_open(path))
        try:

            @PROPERTY_SETTINGS
            @given(contents=st.lists(STORABLE_TEXT, min_size=1, max_size=5))
            def check(contents: list[str]) -> None:
                async def round_trip() -> list[str | None]:
                    for index, content in enumerate(contents):
                        await store.save_markdown("prop", f"doc-{index}", content)
                    return [
                        await store.load_markdown("prop", f"doc-{index}")
                        for index in range(len(contents))
                    ]

                assert runner.run(round_trip()) == contents

            check()
        finally:
            runner.run(store.close())


def test_any_json_value_round_trips(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Any JSON value loads back equal, same types and key order, as saved."""
    path = tmp_path_factory.mktemp("json-property") / "h.db"
    with asyncio.Runner() as runner:
        store = runner.run(_open(path))
        try:

            @PROPERTY_SETTINGS
            @given(values=st.lists(JSON_STRATEGY, min_size=1, max_size=5))
            def check(values: list[Any]) -> None:
                async def round_trip() -> list[Any]:
                    for index, value in enumerate(values):
                        await store.save_json("prop", f"doc-{index}", value)
                    return [
                        await store.load_json("prop", f"doc-{index}")
                        for index in range(len(values))
                    ]

                loaded = runner.run(round_trip())
                assert len(loaded) == len(values)
                for got, expected in zip(loaded, values, strict=True):
                    assert _same_json(got, expected)

            check()
        finally:
            runner.run(store.close())


# -- size limit ---------------------------------------------------------------------------


async def test_markdown_longer_than_the_limit_is_refused(store: StateStore) -> None:
    """A document of MAX_TEXT_LENGTH characters is stored; one more is refused, naming why."""
    await store.save_markdown("notes", "doc", "kept")
    await store.save_markdown("notes", "edge", "x" * MAX_TEXT_LENGTH)
    with pytest.raises(InvalidDataError, match=r"content.*limit"):
        await store.save_markdown("notes", "doc", "x" * (MAX_TEXT_LENGTH + 1))
    assert await store.load_markdown("notes", "doc") == "kept"


async def test_json_longer_than_the_limit_as_text_is_refused(store: StateStore) -> None:
    """The limit applies to a JSON value's text, even when each string in it is short."""
    await store.save_json("agents", "doc", {"original": True})
    many_short = ["x" * 1000] * (MAX_TEXT_LENGTH // 1000)
    with pytest.raises(InvalidDataError, match="limit"):
        await store.save_json("agents", "doc", many_short)
    assert await store.load_json("agents", "doc") == {"original": True}


async def test_session_with_oversized_message_or_metadata_is_refused(store: StateStore) -> None:
    """An oversized message or metadata value fails the save and leaves the stored session."""
    session = Session(id="s", user_id="u")
    session.user_messages.append(UserMessage(content="hi"))
    await store.save_session(session)
    too_long = "x" * (MAX_TEXT_LENGTH + 1)
    session.user_messages.append(UserMessage(content=too_long))
    with pytest.raises(InvalidDataError, match=r"user_messages\[1\]\.content"):
        await store.save_session(session)
    fresh = await store.load_session("s")
    assert fresh is not None
    fresh.metadata["blob"] = ["y" * 1000] * (MAX_TEXT_LENGTH // 1000)
    with pytest.raises(InvalidDataError, match="metadata"):
        await store.save_session(fresh)
    stored = await store.load_session("s")
    assert stored is not None
    assert [m.content for m in stored.user_messages] == ["hi"]
    assert stored.metadata == {}
