"""Forked sessions: a copy of a session's first exchanges that records where it came from."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from statestore import (
    AgentResponse,
    InvalidArgumentError,
    InvalidNameError,
    Session,
    SessionExistsError,
    SessionNotFoundError,
    StateStore,
    UserMessage,
)
from statestore.models import format_timestamp
from tests.conftest import Traced

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def source(exchanges: int = 3, session_id: str = "src") -> Session:
    """A session of ``exchanges`` exchanges with a seed, persona, metadata and extras."""
    session = Session(
        id=session_id,
        user_id="u1",
        active_seed_id="seed-1",
        active_persona_id="persona-1",
        metadata={"tier": "gold", "project_ids": "p1"},
        created_at=T0,
        trajectory_steps=[{"tool_name": "grep"}],
    )
    for index in range(exchanges):
        at = T0 + timedelta(minutes=index)
        session.user_messages.append(UserMessage(content=f"question {index}", timestamp=at))
        session.agent_responses.append(
            AgentResponse(content=f"answer {index}", seed_id="seed-1", timestamp=at, tag=index)
        )
    return session


async def test_a_fork_copies_the_session_and_records_its_parent(store: StateStore) -> None:
    """Every message, response, field and extra is copied; the lineage is added; the
    source is unchanged."""
    original = source()
    await store.save_session(original)
    before = datetime.now(UTC)

    fork = await store.fork_session("src")

    assert uuid.UUID(fork.id).version == 4
    assert fork.user_messages == original.user_messages
    assert fork.agent_responses == original.agent_responses
    for field in ("user_id", "active_seed_id", "active_persona_id", "metadata", "created_at"):
        assert getattr(fork, field) == getattr(original, field), field
    assert fork.model_extra is not None
    assert fork.model_extra["trajectory_steps"] == [{"tool_name": "grep"}]
    assert fork.model_extra["parent_session_id"] == "src"
    forked_at = datetime.fromisoformat(fork.model_extra["forked_at"])
    assert before <= forked_at <= datetime.now(UTC)
    assert fork.updated_at == forked_at
    assert await store.load_session(fork.id) == fork
    assert await store.load_session("src") == original


@pytest.mark.parametrize(("up_to", "kept"), [(0, 0), (1, 1), (2, 2), (3, 3), (50, 3)])
async def test_up_to_keeps_the_first_exchanges(store: StateStore, up_to: int, kept: int) -> None:
    """``up_to`` keeps the first ``up_to`` messages and responses (all if more)."""
    original = source()
    await store.save_session(original)
    fork = await store.fork_session("src", up_to=up_to, new_id="f")
    assert fork.user_messages == original.user_messages[:kept]
    assert fork.agent_responses == original.agent_responses[:kept]
    [summary] = await store.list_sessions(forks_of="src")
    assert summary.message_count == kept


async def test_uneven_histories_are_cut_per_list(store: StateStore) -> None:
    """A source with more messages than responses keeps up_to of each."""
    original = source(2)
    original.user_messages.append(UserMessage(content="unanswered", timestamp=T0))
    await store.save_session(original)
    fork = await store.fork_session("src", up_to=3)
    assert (len(fork.user_messages), len(fork.agent_responses)) == (3, 2)


async def test_summaries_and_the_forks_listing(store: StateStore) -> None:
    """A fork's summary names its parent; ``forks_of`` lists a session's forks, newest
    first, and nothing else."""
    await store.save_session(source())
    await store.save_session(source(session_id="other"))
    first = await store.fork_session("src", new_id="f1")
    second = await store.fork_session("src", new_id="f2", up_to=1)
    await store.fork_session("other", new_id="f3")
    grandchild = await store.fork_session("f1", new_id="f1a")

    assert [s.id for s in await store.list_sessions(forks_of="src")] == [second.id, first.id]
    assert [s.id for s in await store.list_sessions(forks_of="f1")] == [grandchild.id]
    assert await store.list_sessions(forks_of="f2") == []
    by_id = {summary.id: summary for summary in await store.list_sessions()}
    assert by_id["f1a"].parent_session_id == "f1"
    assert by_id["f1"].parent_session_id == "src"
    assert by_id["src"].parent_session_id is None


async def test_deleting_the_parent_leaves_its_forks_whole(store: StateStore) -> None:
    """A fork outlives its parent, still naming it."""
    await store.save_session(source())
    fork = await store.fork_session("src", new_id="f")
    assert await store.delete_session("src")
    assert await store.load_session("f") == fork
    assert [s.id for s in await store.list_sessions(forks_of="src")] == ["f"]
    assert len(await store.search_messages("question", session_id="f")) == 3


async def test_missing_source_and_taken_id_are_typed_errors(store: StateStore) -> None:
    """Forking nothing raises SessionNotFoundError; onto a stored id, SessionExistsError,
    and the stored session is untouched."""
    with pytest.raises(SessionNotFoundError, match="missing"):
        await store.fork_session("missing")
    await store.save_session(source())
    taken = source(1, session_id="taken")
    await store.save_session(taken)
    with pytest.raises(SessionExistsError, match="taken") as raised:
        await store.fork_session("src", new_id="taken")
    assert raised.value.session_id == "taken"
    assert await store.load_session("taken") == taken
    assert [s.id for s in await store.list_sessions()] == ["taken", "src"]


@pytest.mark.parametrize("up_to", [-1, 1.5, True, "2", 2**63])
async def test_bad_up_to_is_refused(store: StateStore, up_to: object) -> None:
    """``up_to`` must be None or an int >= 0; the error names it."""
    with pytest.raises(InvalidArgumentError, match="up_to"):
        await store.fork_session("src", up_to=up_to)  # type: ignore[arg-type]


@pytest.mark.parametrize("new_id", ["", "a/b", "..", "x" * 300, 5])
async def test_bad_new_id_is_refused(store: StateStore, new_id: object) -> None:
    """``new_id`` follows the naming rules of session ids."""
    await store.save_session(source())
    with pytest.raises((InvalidNameError, InvalidArgumentError)):
        await store.fork_session("src", new_id=new_id)  # type: ignore[arg-type]


async def test_a_fork_holds_every_save_called_before_it(store: StateStore) -> None:
    """Saves and forks of one session, called without waiting, run in call order: each
    fork holds exactly the state saved just before it."""
    session = source(0)
    calls = []
    for index in range(12):
        session.user_messages.append(UserMessage(content=f"m{index}", timestamp=T0))
        calls.append(store.save_session(session))
        calls.append(store.fork_session("src", new_id=f"f{index}"))
    results = await asyncio.gather(*calls)
    forks = [result for result in results if isinstance(result, Session)]
    assert [len(fork.user_messages) for fork in forks] == list(range(1, 13))


async def test_a_fork_saves_and_appends_like_any_session(store: StateStore) -> None:
    """The returned fork can be appended to and saved, keeping its lineage."""
    await store.save_session(source())
    fork = await store.fork_session("src", new_id="f", up_to=1)
    fork.add_user_message("a new direction")
    await store.save_session(fork)
    loaded = await store.load_session("f")
    assert loaded == fork
    assert [s.id for s in await store.list_sessions(forks_of="src")] == ["f"]
    await store.append_to_session("f", user_messages=[UserMessage(content="more")])
    assert [s.id for s in await store.list_sessions(forks_of="src")] == ["f"]


async def test_lineage_set_by_hand_is_lineage(store: StateStore) -> None:
    """A session saved with ``parent_session_id`` and ``forked_at`` extra fields (as the
    service wrote its own forks) lists as a fork; malformed values stay fields only."""
    child = Session(
        id="child", user_id="u", parent_session_id="p", forked_at="2026-06-01T00:00:00Z"
    )
    odd = Session(id="odd", user_id="u", parent_session_id=7, forked_at="yesterday")
    await store.save_session(child)
    await store.save_session(odd)
    assert [s.id for s in await store.list_sessions(forks_of="p")] == ["child"]
    loaded = await store.load_session("odd")
    assert loaded is not None
    assert loaded.model_extra == {"parent_session_id": 7, "forked_at": "yesterday"}
    assert {s.id: s.parent_session_id for s in await store.list_sessions()} == {
        "child": "p",
        "odd": None,
    }


async def test_export_keeps_lineage_and_import_restores_it(
    store: StateStore, tmp_path: Path
) -> None:
    """A fork's file holds its lineage as the two extra fields; a store imported from it
    lists the fork under its parent again."""
    await store.save_session(source())
    fork = await store.fork_session("src", new_id="f")
    await store.export_directory(tmp_path / "out")
    written = json.loads((tmp_path / "out" / "sessions" / "f.json").read_text())
    assert written["parent_session_id"] == "src"
    assert written["forked_at"] == fork.model_extra["forked_at"]  # type: ignore[index]
    assert "parent_session_id" not in json.loads(
        (tmp_path / "out" / "sessions" / "src.json").read_text()
    )

    async with StateStore.open(tmp_path / "imported.db") as imported:
        await imported.import_directory(tmp_path / "out")
        [summary] = await imported.list_sessions(forks_of="src")
        assert summary.id == "f"
        assert await imported.load_session("f") == fork


def test_a_fork_is_one_statement_per_table(db_path: Path, traced: Traced) -> None:
    """The copy runs INSERT ... SELECT once per table, with no per-row round trips."""

    async def fork() -> None:
        async with StateStore.open(db_path) as store:
            await store.save_session(source(40))
            traced.clear()
            await store.fork_session("src", new_id="f")

    asyncio.run(fork())
    statements = {statement.strip() for statement in traced.of(0)}
    copies = {s for s in statements if s.startswith("INSERT INTO") and "SELECT" in s}
    assert {s.split()[2] for s in copies} == {"sessions", "messages", "responses"}
    assert not any(s.startswith("INSERT INTO messages") and "VALUES" in s for s in statements)


def test_forked_at_is_written_as_the_file_store_writes_times() -> None:
    """The lineage time has the file store's format (RFC 3339, UTC, ``Z``)."""
    assert format_timestamp(T0) == "2026-06-01T00:00:00Z"
