"""The SQLite runner: group commit, failure isolation, cancellation and clean shutdown."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from statestore import DatabaseError, Session, StateStore, StateStoreError, _runner

from .conftest import Traced
from .test_store import make_session

POISON_TRIGGER = """
CREATE TRIGGER reject_poison BEFORE INSERT ON sessions WHEN new.user_id = 'poison'
BEGIN SELECT RAISE(ABORT, 'poisoned session'); END
"""


async def test_concurrent_saves_commit_together(db_path: Path, traced: Traced) -> None:
    """Fifty saves queued at once commit in fewer transactions than saves, all of them."""
    async with StateStore.open(db_path) as store:
        sessions = [make_session(f"u{i}", messages=2) for i in range(50)]
        await asyncio.gather(*(store.save_session(s) for s in sessions))
        transactions = traced.of(0).count("BEGIN IMMEDIATE")

        assert transactions < 50
        for session in sessions:
            assert await store.load_session(session.id) == session


async def test_one_failing_save_does_not_fail_its_batch(db_path: Path, traced: Traced) -> None:
    """A save the database rejects fails alone; the others queued with it are stored."""
    async with StateStore.open(db_path) as store:
        with sqlite3.connect(db_path) as connection:
            connection.execute(POISON_TRIGGER)
        good = [make_session(f"u{i}") for i in range(20)]
        poison = make_session("poison")
        saves = [store.save_session(s) for s in good[:10]]
        saves.append(store.save_session(poison))
        saves.extend(store.save_session(s) for s in good[10:])

        outcomes = await asyncio.gather(*saves, return_exceptions=True)

        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failures) == 1
        assert isinstance(failures[0], DatabaseError)
        assert "poisoned session" in str(failures[0])
        assert {s.id for s in await store.list_sessions()} == {s.id for s in good}


async def test_saves_of_one_session_never_share_a_batch(db_path: Path) -> None:
    """Two queued saves of the same session apply in order: the later one wins."""
    async with StateStore.open(db_path) as store:
        first = make_session(messages=1)
        second = first.model_copy(deep=True)
        second.add_user_message("later")

        await asyncio.gather(store.save_session(first), store.save_session(second))

        assert await store.load_session(first.id) == second


async def test_cancelled_update_releases_the_write_lock_promptly(db_path: Path) -> None:
    """A caller cancelled inside update_session_with's fn leaves the lock free at once."""
    async with StateStore.open(db_path) as store:
        session = make_session()
        await store.save_session(session)
        entered = asyncio.Event()

        async def slow(current: Session) -> None:
            current.set_metadata("slow", True)
            entered.set()
            await asyncio.sleep(0.05)

        task = asyncio.create_task(store.update_session_with(session.id, slow))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        other = await StateStore.open(db_path)
        try:
            await asyncio.wait_for(other.save_session(make_session("other")), timeout=1.0)
        finally:
            await other.close()
        loaded = await store.load_session(session.id)
        assert loaded is not None
        assert loaded.get_metadata("slow") is True  # the cancelled caller's update committed


async def test_fn_writing_through_the_store_is_refused(store: StateStore) -> None:
    """update_session_with's fn may not write through the store that holds the lock."""
    session = make_session()
    await store.save_session(session)

    async def writes(current: Session) -> None:
        await store.save_session(make_session("nested"))

    with pytest.raises(StateStoreError, match="inside update_session_with"):
        await store.update_session_with(session.id, writes)

    assert [s.id for s in await store.list_sessions()] == [session.id]


async def test_fn_may_read_through_the_store(store: StateStore) -> None:
    """Reads from inside update_session_with's fn work while the write is held."""
    session = make_session()
    await store.save_session(session)

    async def reads(current: Session) -> None:
        current.set_metadata("seen", len(await store.list_sessions()))

    updated = await store.update_session_with(session.id, reads)

    assert updated is not None
    assert updated.get_metadata("seen") == 1


async def test_close_leaves_no_statestore_threads(db_path: Path) -> None:
    """After close(), the writer and reader threads are gone."""
    async with StateStore.open(db_path) as store:
        await store.save_session(make_session())
        await store.list_sessions()
        assert any(t.name.startswith("statestore-") for t in threading.enumerate())

    assert not [t.name for t in threading.enumerate() if t.name.startswith("statestore-")]


async def test_close_finishes_queued_saves(db_path: Path) -> None:
    """Saves already queued when close() is called are committed before it returns."""
    store = await StateStore.open(db_path)
    sessions = [make_session(f"u{i}") for i in range(30)]
    pending = [asyncio.ensure_future(store.save_session(s)) for s in sessions]
    await asyncio.sleep(0)
    await store.close()
    await asyncio.gather(*pending)

    async with StateStore.open(db_path) as reopened:
        assert len(await reopened.list_sessions()) == 30


async def test_in_memory_sqlite_is_refused() -> None:
    """An in-memory database cannot be shared by the store's threads: a clear error, for
    a host's own engine too (statestore's own refuses to make one)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from statestore import InvalidDataError

    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    try:
        with pytest.raises(InvalidDataError, match="in-memory"):
            StateStore(engine)
    finally:
        await engine.dispose()


async def test_wal_checkpoints_run_beside_the_writer_not_inside_commits(
    db_path: Path, traced: Traced
) -> None:
    """The writer's automatic checkpoints are off; another connection checkpoints instead."""
    checkpoint = "PRAGMA wal_checkpoint(PASSIVE)"
    async with StateStore.open(db_path) as store:
        for index in range(_runner.CHECKPOINT_EVERY + 5):
            await store.save_session(make_session(f"u{index}"))
        writer = traced.of(0)
        assert "PRAGMA wal_autocheckpoint = 0" in writer
        assert checkpoint not in writer

    others = [statements for _, statements in traced.connections[1:]]
    assert sum(statements.count(checkpoint) for statements in others) == 2  # and at close


async def test_stores_on_one_file_share_one_writer(db_path: Path) -> None:
    """Two stores on one file in a process write through one writer thread."""

    def writers() -> int:
        return sum(t.name == "statestore-writer" for t in threading.enumerate())

    async with StateStore.open(db_path) as first:
        async with StateStore.open(db_path) as second:
            await asyncio.gather(
                first.save_session(make_session("a")), second.save_session(make_session("b"))
            )
            assert writers() == 1
        await first.save_session(make_session("c"))  # the other store's close left it running
        assert len(await first.list_sessions()) == 3

    assert writers() == 0


async def test_fn_writing_through_another_store_on_the_file_is_refused(db_path: Path) -> None:
    """A write through a second store on the same file, from inside fn, is refused too."""
    async with StateStore.open(db_path) as first, StateStore.open(db_path) as second:
        session = make_session()
        await first.save_session(session)

        async def writes_elsewhere(current: Session) -> None:
            await second.save_session(make_session("nested"))

        with pytest.raises(StateStoreError, match="inside update_session_with"):
            await asyncio.wait_for(first.update_session_with(session.id, writes_elsewhere), 5)
