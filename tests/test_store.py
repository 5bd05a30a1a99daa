"""StateStore's session operations on real SQLite files."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL

from statestore import (
    AgentResponse,
    DatabaseError,
    InvalidArgumentError,
    InvalidDataError,
    InvalidNameError,
    PruneConfig,
    PruneThrottle,
    ReentrantWriteError,
    Session,
    StateStore,
    StoreClosedError,
    UserMessage,
    _ops,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_session(
    user_id: str = "user-1", *, messages: int = 2, updated_at: datetime | None = None
) -> Session:
    """Return a session with ``messages`` exchanges, all stamped from T0."""
    session = Session(user_id=user_id, created_at=T0)
    for index in range(messages):
        session.user_messages.append(
            UserMessage(content=f"question {index}", timestamp=T0 + timedelta(minutes=index))
        )
        session.agent_responses.append(
            AgentResponse(
                content=f"answer {index}",
                session_id=session.id,
                seed_id="seed-alpha",
                phase_reached="interview",
                evaluation_passed=index % 2 == 0,
                timestamp=T0 + timedelta(minutes=index, seconds=30),
            )
        )
    session.updated_at = updated_at or T0 + timedelta(minutes=messages)
    return session


def row_counts(db_path: Path) -> dict[str, int]:
    """Count the rows of each table with the stdlib driver."""
    with sqlite3.connect(db_path) as connection:
        return {
            table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("sessions", "messages", "responses", "documents")
        }


# -- the seed's own tests ---------------------------------------------------------------


async def test_session_creation_and_persistence(store: StateStore) -> None:
    """A saved session loads back equal, with its messages and responses in order."""
    session = make_session(messages=3)
    session.set_active_seed("seed-beta")
    session.set_metadata("project_ids", "proj-1")
    await store.save_session(session)

    loaded = await store.load_session(session.id)

    assert loaded == session
    assert [m.content for m in loaded.user_messages] == ["question 0", "question 1", "question 2"]


async def test_list_sessions_sorted_by_updated_newest_first(store: StateStore) -> None:
    """list_sessions returns the most recently updated session first."""
    older = make_session("a", updated_at=T0 + timedelta(hours=1))
    newest = make_session("b", updated_at=T0 + timedelta(hours=3))
    middle = make_session("c", updated_at=T0 + timedelta(hours=2))
    for session in (older, newest, middle):
        await store.save_session(session)

    summaries = await store.list_sessions()

    assert [s.id for s in summaries] == [newest.id, middle.id, older.id]


async def test_delete_session(store: StateStore, db_path: Path) -> None:
    """delete_session removes the session and its rows, and says whether it existed."""
    session = make_session()
    await store.save_session(session)

    assert await store.delete_session(session.id) is True
    assert await store.load_session(session.id) is None
    assert await store.delete_session(session.id) is False
    assert row_counts(db_path) == {"sessions": 0, "messages": 0, "responses": 0, "documents": 0}


async def test_get_or_create_returns_existing(store: StateStore) -> None:
    """get_or_create_session returns the stored session when the id exists."""
    session = make_session("owner")
    await store.save_session(session)

    fetched = await store.get_or_create_session("owner", session.id)

    assert fetched == session


async def test_get_or_create_creates_new(store: StateStore) -> None:
    """get_or_create_session creates and saves a session when the id is missing."""
    created = await store.get_or_create_session("user-9", "fresh-id")

    assert created.id == "fresh-id"
    assert created.user_id == "user-9"
    assert created.is_empty()
    assert await store.load_session("fresh-id") == created


async def test_get_or_create_without_id_makes_a_new_id(store: StateStore) -> None:
    """get_or_create_session without an id creates a session with a fresh id each time."""
    first = await store.get_or_create_session("u")
    second = await store.get_or_create_session("u")

    assert first.id != second.id
    assert {s.id for s in await store.list_sessions()} == {first.id, second.id}


async def test_prune_by_count(store: StateStore) -> None:
    """prune_sessions keeps the max_sessions most recently updated sessions."""
    now = datetime.now(UTC)
    saved = [make_session(f"u{i}", updated_at=now - timedelta(minutes=i)) for i in range(5)]
    for session in saved:
        await store.save_session(session)

    deleted = await store.prune_sessions(PruneConfig(max_sessions=2, ttl_hours=0))

    assert deleted == 3
    assert [s.id for s in await store.list_sessions()] == [saved[0].id, saved[1].id]


async def test_prune_by_ttl(store: StateStore) -> None:
    """prune_sessions deletes sessions not updated within ttl_hours."""
    now = datetime.now(UTC)
    fresh = make_session("fresh", updated_at=now - timedelta(hours=1))
    stale = make_session("stale", updated_at=now - timedelta(hours=30))
    for session in (fresh, stale):
        await store.save_session(session)

    deleted = await store.prune_sessions(PruneConfig(max_sessions=0, ttl_hours=24))

    assert deleted == 1
    assert [s.id for s in await store.list_sessions()] == [fresh.id]


# -- whole-state saves ------------------------------------------------------------------


async def test_save_after_edit_truncate_and_append_loads_exact_state(store: StateStore) -> None:
    """A save replaces the stored state whole: edits, removals and additions all show."""
    session = make_session(messages=4)
    await store.save_session(session)

    session.user_messages[0].content = "edited"
    del session.user_messages[2:]
    del session.agent_responses[1:]
    session.add_user_message("appended")
    session.metadata = {"replaced": True}
    await store.save_session(session)

    assert await store.load_session(session.id) == session


async def test_last_save_of_two_stale_copies_wins_whole(store: StateStore) -> None:
    """Two copies loaded at once and saved in turn leave exactly the last one stored."""
    await store.save_session(make_session(messages=1))
    [summary] = await store.list_sessions()
    first = await store.load_session(summary.id)
    second = await store.load_session(summary.id)
    assert first is not None
    assert second is not None
    first.add_user_message("from first")
    first.add_user_message("first again")
    second.set_metadata("who", "second")

    await store.save_session(first)
    await store.save_session(second)

    assert await store.load_session(summary.id) == second


async def test_update_session_is_save(store: StateStore) -> None:
    """update_session stores the session like save_session."""
    session = make_session()
    await store.update_session(session)
    session.add_user_message("more")
    await store.update_session(session)

    assert await store.load_session(session.id) == session


async def test_unknown_fields_survive_the_database(store: StateStore) -> None:
    """Fields the models do not know are stored and written back in the same place."""
    raw = {
        "id": "s-extra",
        "user_id": "u",
        "user_messages": [{"content": "hi", "timestamp": "2026-03-01T00:00:00Z", "mood": "ok"}],
        "agent_responses": [
            {
                "content": "yo",
                "session_id": None,
                "seed_id": "seed-1",
                "phase_reached": None,
                "evaluation_passed": False,
                "timestamp": "2026-03-01T00:00:01Z",
                "tokens": 3,
            }
        ],
        "created_at": "2026-03-01T00:00:00Z",
        "updated_at": "2026-03-01T00:00:01Z",
        "metadata": {},
        "trajectory_steps": [{"tool_name": "grep", "timestamp": "2026-03-01T00:00:00.000000005Z"}],
        "parent_session_id": None,
    }
    session = Session.model_validate_json(json.dumps(raw))
    await store.save_session(session)

    loaded = await store.load_session("s-extra")

    assert loaded is not None
    assert json.loads(loaded.model_dump_json()) == raw


async def test_summary_fields_come_from_the_session(store: StateStore) -> None:
    """A summary carries counts, active seed and the string project_ids metadata."""
    session = make_session(messages=3)
    session.add_user_message("unanswered")
    session.set_active_seed("seed-x")
    session.set_metadata("project_ids", "proj-7")
    await store.save_session(session)

    [summary] = await store.list_sessions()

    assert summary.model_dump() == {
        "id": session.id,
        "user_id": "user-1",
        "message_count": 4,
        "active_seed_id": "seed-x",
        "project_id": "proj-7",
        "created_at": session.created_at,
        "updated_at": session.updated_at,
        "parent_session_id": None,
    }


async def test_project_id_is_none_unless_project_ids_is_a_string(store: StateStore) -> None:
    """A non-string project_ids entry gives no project_id."""
    session = make_session()
    session.set_metadata("project_ids", ["p1", "p2"])
    await store.save_session(session)

    [summary] = await store.list_sessions()

    assert summary.project_id is None


async def test_timestamps_keep_microseconds_and_come_back_utc(store: StateStore) -> None:
    """Timestamps in any zone come back as the same instant in UTC, with microseconds."""
    plus_two = datetime(2026, 3, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    session = Session(user_id="u", created_at=plus_two, updated_at=plus_two)
    await store.save_session(session)

    loaded = await store.load_session(session.id)

    assert loaded is not None
    assert loaded.created_at == datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert loaded.created_at.tzinfo is UTC


async def test_timestamps_sort_in_sql(store: StateStore, db_path: Path) -> None:
    """Stored timestamps sort in time order as text, whatever offset they were given in."""
    east = datetime(2026, 3, 1, 12, 30, tzinfo=UTC).astimezone(timezone(timedelta(hours=9)))
    west = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=-5)))
    await store.save_session(Session(id="east", user_id="u", created_at=east))
    await store.save_session(Session(id="west", user_id="u", created_at=west))

    with sqlite3.connect(db_path) as connection:
        ordered = [r[0] for r in connection.execute("SELECT id FROM sessions ORDER BY updated_at")]

    assert ordered == ["west", "east"]


async def test_naive_timestamp_set_after_construction_is_rejected(store: StateStore) -> None:
    """A naive datetime assigned to a session is refused at save, naming the field."""
    session = make_session()
    await store.save_session(session)
    changed = session.model_copy(deep=True)
    changed.updated_at = datetime(2026, 3, 1, 12, 0)  # naive

    with pytest.raises(InvalidDataError, match="updated_at"):
        await store.save_session(changed)

    assert await store.load_session(session.id) == session


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s.user_messages.append(UserMessage(content="nul\x00")), "content"),
        (lambda s: s.user_messages.append(UserMessage(content="\ud800")), "content"),
        (lambda s: s.set_metadata("bad", {1, 2}), "metadata"),
        (lambda s: s.set_metadata("nan", float("nan")), "metadata"),
        (lambda s: s.set_metadata("keys", {1: "int key"}), "metadata"),
        (lambda s: setattr(s, "user_id", "nul\x00"), "user_id"),
    ],
    ids=["nul-content", "surrogate-content", "set-metadata", "nan", "int-key", "nul-user"],
)
async def test_unstorable_session_is_rejected_and_nothing_changes(
    store: StateStore, db_path: Path, mutate: object, field: str
) -> None:
    """A session with an unstorable value raises InvalidDataError naming it; storage is intact."""
    session = make_session()
    await store.save_session(session)
    before = row_counts(db_path)
    changed = session.model_copy(deep=True)
    mutate(changed)  # type: ignore[operator]

    with pytest.raises(InvalidDataError, match=field):
        await store.save_session(changed)

    assert await store.load_session(session.id) == session
    assert row_counts(db_path) == before


@pytest.mark.parametrize("session_id", ["", "a/b", "..", "back\\slash", "nul\x00"])
async def test_bad_session_id_is_rejected(store: StateStore, session_id: str) -> None:
    """A session id that could not be a file name is rejected before anything is written."""
    with pytest.raises(InvalidNameError, match="session id"):
        await store.save_session(Session(id=session_id, user_id="u"))

    assert await store.list_sessions() == []


async def test_load_missing_session_is_none(store: StateStore) -> None:
    """Loading an id that was never saved returns None."""
    assert await store.load_session("missing") is None


async def test_list_sessions_ties_break_by_id(store: StateStore) -> None:
    """Sessions updated at the same instant list in descending id order."""
    for session_id in ("b", "c", "a"):
        await store.save_session(Session(id=session_id, user_id="u", created_at=T0))

    assert [s.id for s in await store.list_sessions()] == ["c", "b", "a"]


# -- update_session_with ----------------------------------------------------------------


async def test_update_session_with_applies_sync_fn(store: StateStore) -> None:
    """A sync fn's in-place changes are saved and the saved session is returned."""
    session = make_session()
    await store.save_session(session)

    updated = await store.update_session_with(session.id, lambda s: s.set_metadata("k", 1))

    assert updated is not None
    assert updated.get_metadata("k") == 1
    assert await store.load_session(session.id) == updated


async def test_update_session_with_applies_async_fn_returning_replacement(
    store: StateStore,
) -> None:
    """An async fn may return a replacement session, which is what gets saved."""
    session = make_session()
    await store.save_session(session)

    async def replace(current: Session) -> Session:
        await asyncio.sleep(0)
        return current.model_copy(update={"active_persona_id": "persona-1"})

    updated = await store.update_session_with(session.id, replace)

    assert updated is not None
    assert (await store.load_session(session.id)) == updated
    assert updated.active_persona_id == "persona-1"


async def test_update_session_with_missing_session_returns_none(store: StateStore) -> None:
    """A missing session gives None and fn is never called."""
    calls: list[Session] = []

    assert await store.update_session_with("missing", calls.append) is None
    assert calls == []


async def test_update_session_with_raising_fn_saves_nothing(store: StateStore) -> None:
    """When fn raises, the exception propagates and the stored session is unchanged."""
    session = make_session()
    await store.save_session(session)

    def explode(current: Session) -> None:
        current.add_user_message("should not persist")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await store.update_session_with(session.id, explode)

    assert await store.load_session(session.id) == session


async def test_update_session_with_refuses_a_changed_id(store: StateStore) -> None:
    """fn may not change the session's id; nothing is saved then."""
    session = make_session()
    await store.save_session(session)

    with pytest.raises(InvalidDataError, match="id"):
        await store.update_session_with(session.id, lambda s: setattr(s, "id", "other"))

    assert [s.id for s in await store.list_sessions()] == [session.id]


async def test_concurrent_update_session_with_loses_no_update(store: StateStore) -> None:
    """Many concurrent read-modify-write updates on one session all take effect."""
    session = make_session(messages=0)
    session.set_metadata("counter", 0)
    await store.save_session(session)

    async def increment(current: Session) -> None:
        value = current.get_metadata("counter")
        await asyncio.sleep(0)  # let the others run between read and write
        current.set_metadata("counter", value + 1)

    await asyncio.gather(*(store.update_session_with(session.id, increment) for _ in range(50)))

    loaded = await store.load_session(session.id)
    assert loaded is not None
    assert loaded.get_metadata("counter") == 50


async def test_update_session_with_across_two_stores_loses_no_update(db_path: Path) -> None:
    """Updates through two stores on one file (two write locks) still all take effect."""
    async with StateStore.open(db_path) as first, StateStore.open(db_path) as second:
        session = make_session(messages=0)
        session.set_metadata("counter", 0)
        await first.save_session(session)

        async def increment(current: Session) -> None:
            value = current.get_metadata("counter")
            await asyncio.sleep(0.001)
            current.set_metadata("counter", value + 1)

        await asyncio.gather(
            *(
                store.update_session_with(session.id, increment)
                for _ in range(20)
                for store in (first, second)
            )
        )

        loaded = await first.load_session(session.id)
        assert loaded is not None
        assert loaded.get_metadata("counter") == 40


# -- prune --------------------------------------------------------------------------------


async def test_prune_applies_ttl_before_count(store: StateStore) -> None:
    """TTL removes stale sessions first; the count rule then trims the rest."""
    now = datetime.now(UTC)
    sessions = [make_session(f"u{i}", updated_at=now - timedelta(hours=i * 10)) for i in range(6)]
    for session in sessions:
        await store.save_session(session)

    deleted = await store.prune_sessions(PruneConfig(max_sessions=2, ttl_hours=25))

    assert deleted == 4
    assert [s.id for s in await store.list_sessions()] == [sessions[0].id, sessions[1].id]


async def test_prune_with_both_rules_off_deletes_nothing(store: StateStore) -> None:
    """A config with both rules at 0 deletes nothing."""
    await store.save_session(make_session(updated_at=T0))

    assert await store.prune_sessions(PruneConfig(max_sessions=0, ttl_hours=0)) == 0
    assert len(await store.list_sessions()) == 1


async def test_prune_removes_children_through_cascade(store: StateStore, db_path: Path) -> None:
    """Pruned sessions take their messages and responses with them."""
    await store.save_session(make_session(messages=3, updated_at=T0))

    await store.prune_sessions(PruneConfig(max_sessions=0, ttl_hours=1))

    assert row_counts(db_path) == {"sessions": 0, "messages": 0, "responses": 0, "documents": 0}


async def test_save_session_with_prune_saves_then_prunes_in_background(
    store: StateStore,
) -> None:
    """save_session_with_prune saves at once and the prune finishes by close()."""
    now = datetime.now(UTC)
    old = make_session("old", updated_at=now - timedelta(days=30))
    await store.save_session(old)
    new = make_session("new", updated_at=now)

    await store.save_session_with_prune(new, PruneConfig(max_sessions=10, ttl_hours=24))
    assert await store.load_session(new.id) == new
    await asyncio.gather(*store._db._background)

    assert [s.id for s in await store.list_sessions()] == [new.id]


async def test_close_waits_for_background_prune(db_path: Path) -> None:
    """close() lets a pending background prune finish before disposing of the engine."""
    now = datetime.now(UTC)
    store = await StateStore.open(db_path)
    await store.save_session(make_session("old", updated_at=now - timedelta(days=30)))
    await store.save_session_with_prune(make_session("new", updated_at=now), PruneConfig())
    await store.close()

    async with StateStore.open(db_path) as reopened:
        assert [s.user_id for s in await reopened.list_sessions()] == ["new"]


async def test_save_session_with_prune_respects_throttle(store: StateStore) -> None:
    """With a throttle that says no, no prune runs."""
    throttle = PruneThrottle(cooldown_secs=3600)
    assert throttle.should_prune()
    old = make_session("old", updated_at=datetime.now(UTC) - timedelta(days=30))

    await store.save_session_with_prune(old, PruneConfig(), throttle=throttle)

    assert store._db._background == set()
    assert [s.id for s in await store.list_sessions()] == [old.id]


async def test_background_prune_errors_are_logged(
    store: StateStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing background prune is logged on the statestore logger, not raised."""
    session = make_session()
    await store.save_session(session)

    def broken(*args: Any, **kwargs: Any) -> bool:
        raise DatabaseError("prune_sessions failed: simulated")

    monkeypatch.setattr(_ops, "prune_pending", broken)
    with caplog.at_level(logging.ERROR, logger="statestore"):
        await store.save_session_with_prune(session, PruneConfig(max_sessions=1, ttl_hours=1))
        while store._db._background:  # the prune runs after the save, in the background
            await asyncio.gather(*store._db._background)

    assert "background prune failed" in caplog.text
    assert "simulated" in caplog.text


# -- lifecycle ----------------------------------------------------------------------------


async def test_open_can_be_awaited_and_closed(db_path: Path) -> None:
    """await StateStore.open(...) gives a usable store; close() is idempotent."""
    store = await StateStore.open(db_path)
    await store.save_session(make_session())
    await store.close()
    await store.close()

    with pytest.raises(StoreClosedError):
        await store.list_sessions()


async def test_use_after_close_raises(db_path: Path) -> None:
    """Every operation on a closed store raises StoreClosedError."""
    async with StateStore.open(db_path) as store:
        pass

    with pytest.raises(StoreClosedError):
        await store.save_session(make_session())
    with pytest.raises(StoreClosedError):
        await store.load_markdown("notes", "a")


async def test_wrapping_a_host_engine_leaves_it_usable(db_path: Path) -> None:
    """StateStore(engine) works on the host's engine and does not dispose of it on close."""
    from sqlalchemy import text

    from statestore._engine import create_engine, resolve_url
    from statestore.migrate import upgrade

    engine = create_engine(resolve_url(db_path))
    try:
        await upgrade(engine)
        async with StateStore(engine) as store:
            session = make_session()
            await store.save_session(session)
            assert await store.load_session(session.id) == session
        async with engine.connect() as connection:
            count = (await connection.execute(text("SELECT count(*) FROM sessions"))).scalar()
        assert count == 1
    finally:
        await engine.dispose()


async def test_cancelled_save_still_commits_whole(target: Path | URL) -> None:
    """Cancelling the caller of a save does not cut the write: it commits whole."""
    session = make_session(messages=50)
    async with StateStore.open(target) as store:
        task = asyncio.create_task(store.save_session(session))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # close() waited for the write in flight
    async with StateStore.open(target) as store:
        assert await store.load_session(session.id) == session


async def test_closing_a_store_inside_update_fn_on_the_same_file_is_refused(
    db_path: Path,
) -> None:
    """A second store on the file, opened and closed inside fn: reading works, closing
    raises ReentrantWriteError (it would wait for the update, which waits for fn)."""
    async with StateStore.open(db_path) as store:
        session = make_session(messages=1)
        await store.save_session(session)
        seen: list[BaseException] = []
        others: list[StateStore] = []

        async def fn(current: Session) -> None:
            other = await StateStore.open(db_path, migrate=False)
            others.append(other)
            assert await other.load_session(current.id) is not None
            try:
                await other.close()
            except ReentrantWriteError as error:
                seen.append(error)
            current.add_user_message("from fn")

        await asyncio.wait_for(store.update_session_with(session.id, fn), 30)
        assert len(seen) == 1
        await others[0].close()  # after the update, it closes
        loaded = await store.load_session(session.id)
        assert loaded is not None
        assert loaded.user_messages[-1].content == "from fn"


@pytest.mark.parametrize("busy_timeout", [float("nan"), float("inf"), -1, True, "5", 10**9])
async def test_a_bad_busy_timeout_is_refused(db_path: Path, busy_timeout: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="busy_timeout"):
        await StateStore.open(db_path, busy_timeout=busy_timeout)
