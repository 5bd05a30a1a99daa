"""append_to_session: an append that needs no load, on both backends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from statestore import (
    AgentResponse,
    InvalidDataError,
    InvalidNameError,
    Session,
    SessionNotFoundError,
    StateStore,
    UserMessage,
)

from .conftest import Traced
from .test_store import make_session


def question(text: str) -> UserMessage:
    return UserMessage(content=text, timestamp=datetime(2026, 3, 1, tzinfo=UTC))


def answer(text: str) -> AgentResponse:
    return AgentResponse(content=text, seed_id="s", timestamp=datetime(2026, 3, 1, tzinfo=UTC))


async def test_an_append_lands_after_the_stored_rows(store: StateStore) -> None:
    """The stored session plus the appended rows, updated now, metadata replaced if given."""
    session = make_session(messages=3)
    await store.save_session(session)
    before = datetime.now(UTC)

    await store.append_to_session(
        session.id,
        user_messages=[question("q3"), question("q4")],
        agent_responses=[answer("a3")],
        metadata={"project_ids": "p-9", "k": [1, 2]},
    )

    loaded = await store.load_session(session.id)
    assert loaded is not None
    assert loaded.user_messages == [*session.user_messages, question("q3"), question("q4")]
    assert loaded.agent_responses == [*session.agent_responses, answer("a3")]
    assert loaded.metadata == {"project_ids": "p-9", "k": [1, 2]}
    assert loaded.updated_at >= before
    [summary] = await store.list_sessions(project_id="p-9")
    assert (summary.id, summary.message_count) == (session.id, 5)


async def test_an_append_without_metadata_keeps_it(store: StateStore) -> None:
    session = make_session(messages=1)
    session.metadata = {"keep": True}
    await store.save_session(session)

    await store.append_to_session(session.id, agent_responses=[answer("more")])

    loaded = await store.load_session(session.id)
    assert loaded is not None
    assert loaded.metadata == {"keep": True}
    assert [r.content for r in loaded.agent_responses][-1] == "more"


async def test_an_append_to_a_missing_session_raises_and_writes_nothing(store: StateStore) -> None:
    with pytest.raises(SessionNotFoundError, match="'nobody'") as raised:
        await store.append_to_session("nobody", user_messages=[question("lost")])

    assert raised.value.session_id == "nobody"
    assert isinstance(raised.value, LookupError)
    assert await store.list_sessions() == []


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"user_messages": ["not a message"]}, "user_messages[0]"),
        ({"agent_responses": [answer("bad\x00")]}, "agent_responses[0].content"),
        ({"metadata": ["not", "a", "dict"]}, "metadata"),
        ({"metadata": {"x": float("nan")}}, "metadata"),
    ],
)
async def test_bad_input_is_refused_at_the_call(
    store: StateStore, options: dict[str, object], field: str
) -> None:
    """A bad message, response or metadata raises from the call; the session is unchanged."""
    session = make_session(messages=1)
    await store.save_session(session)

    with pytest.raises(InvalidDataError, match=field.replace("[", r"\[").replace("]", r"\]")):
        store.append_to_session(session.id, **options)  # type: ignore[arg-type]

    assert await store.load_session(session.id) == session


async def test_a_bad_session_id_is_refused(store: StateStore) -> None:
    with pytest.raises(InvalidNameError):
        store.append_to_session("../escape", user_messages=[question("q")])


async def test_appends_and_saves_called_together_apply_in_call_order(store: StateStore) -> None:
    """A save, appends and another save of one session, none awaited: applied in order."""
    session = make_session(messages=1)
    first = session.model_copy(deep=True)
    calls = [store.save_session(first)]
    calls += [
        store.append_to_session(session.id, user_messages=[question(f"a{i}")]) for i in range(5)
    ]
    await asyncio.gather(*calls)
    loaded = await store.load_session(session.id)
    assert loaded is not None
    assert [m.content for m in loaded.user_messages] == ["question 0", "a0", "a1", "a2", "a3", "a4"]

    stale = session.model_copy(deep=True)
    stale.user_messages.append(question("stale"))
    await asyncio.gather(
        store.append_to_session(session.id, user_messages=[question("lost")]),
        store.save_session(stale),
    )
    assert await store.load_session(session.id) == stale  # the later save wins, whole


async def test_a_session_loaded_before_an_append_saves_whole_after_it(store: StateStore) -> None:
    """Appending to a copy loaded before the append stores that copy exactly, no clash."""
    session = make_session(messages=2)
    await store.save_session(session)
    loaded = await store.load_session(session.id)
    assert loaded is not None

    await store.append_to_session(session.id, user_messages=[question("appended")])
    loaded.user_messages.append(question("mine"))
    await store.save_session(loaded)

    assert await store.load_session(session.id) == loaded


async def test_an_append_to_a_session_saved_without_lists_sets_them(store: StateStore) -> None:
    """A file-store session stored without its lists gets them from an append."""
    session = Session.model_validate(
        {
            "id": "bare",
            "user_id": "u",
            "created_at": "2026-03-01T00:00:00Z",
            "updated_at": "2026-03-01T00:00:00Z",
        },
        context={"statestore_file": True},
    )
    await store.save_session(session)

    await store.append_to_session("bare", user_messages=[question("first")])

    loaded = await store.load_session("bare")
    assert loaded is not None
    assert "user_messages" in loaded.model_fields_set
    assert "agent_responses" not in loaded.model_fields_set
    assert [m.content for m in loaded.user_messages] == ["first"]


async def test_an_append_reads_no_message_or_response_rows(db_path: Path, traced: Traced) -> None:
    """However long the history, an append reads only the session's own row."""
    async with StateStore.open(db_path) as store:
        session = make_session(messages=50)
        await store.save_session(session)
        traced.clear()

        await store.append_to_session(session.id, user_messages=[question("q")])

        statements = [s.lower() for s in traced.statements()]
        assert not [s for s in statements if s.startswith("select") and "from messages" in s]
        assert not [s for s in statements if s.startswith("select") and "from responses" in s]
        assert any(s.startswith("insert into messages") for s in statements)
