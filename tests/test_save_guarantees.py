"""An acknowledged save is never lost, mixed or reordered: the cases found, one test each.

Each test here failed on the store before saves captured their state at the call: a
pickled or copied session's record of what was stored, a save still queued when its
object changed, saves reordered behind a busy pool, a batch retried save by save behind a
stuck lock, and a cancelled ``close()``. ``test_acknowledged_saves.py`` explores the class
with random interleavings; these pin the cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import os
import pickle
import sqlite3
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import URL

from statestore import (
    DatabaseError,
    InvalidDataError,
    PruneConfig,
    Session,
    StateStore,
    UserMessage,
)

from .conftest import Traced, empty_tables, run_apart, server_dsn
from .test_delta import exchange, install_write_log, take_write_log
from .test_store import make_session

# -- the append-only path never trusts a record that travelled -----------------------------


def _edit_in_another_process(pickled: bytes) -> bytes:
    """Unpickle a session, edit a stored message in place, append one, pickle it back."""
    session = pickle.loads(pickled)
    session.user_messages[0].content = "edited in another process"
    session.add_user_message("appended in another process")
    return pickle.dumps(session)


async def test_a_session_edited_in_another_process_saves_the_edit(store: StateStore) -> None:
    """A loaded session pickled to a worker process, edited in place there, saves whole."""
    await store.save_session(make_session())
    [summary] = await store.list_sessions()
    loaded = await store.load_session(summary.id)
    assert loaded is not None

    with ProcessPoolExecutor(1) as pool:
        pickled = await asyncio.get_running_loop().run_in_executor(
            pool, _edit_in_another_process, pickle.dumps(loaded)
        )
    edited = pickle.loads(pickled)
    await store.save_session(edited)

    stored = await store.load_session(summary.id)
    assert stored == edited
    assert stored is not None
    assert stored.user_messages[0].content == "edited in another process"


def _deep(session: Session) -> Session:
    return copy.deepcopy(session)


def _pickled(session: Session) -> Session:
    copied: Session = pickle.loads(pickle.dumps(session))
    return copied


@pytest.mark.parametrize(
    "duplicate",
    [
        pytest.param(copy.copy, id="copy"),
        pytest.param(_deep, id="deepcopy"),
        pytest.param(lambda s: s.model_copy(), id="model_copy"),
        pytest.param(lambda s: s.model_copy(deep=True), id="model_copy-deep"),
        pytest.param(_pickled, id="pickle"),
    ],
)
async def test_an_edited_duplicate_of_a_loaded_session_saves_the_edit(
    store: StateStore, duplicate: Callable[[Session], Session]
) -> None:
    """A copy or an unpickled session of a loaded one, edited in place, saves whole."""
    await store.save_session(make_session())
    [summary] = await store.list_sessions()
    loaded = await store.load_session(summary.id)
    assert loaded is not None
    twin = duplicate(loaded)
    twin.user_messages[1] = UserMessage(content="replaced", timestamp=loaded.created_at)
    twin.agent_responses[0].content = "edited"

    await store.save_session(twin)

    assert await store.load_session(summary.id) == twin


async def test_an_unpickled_session_rewrites_whole_and_the_original_stays_a_delta(
    db_path: Path,
) -> None:
    """After a pickle round trip a save rewrites every row; the original still appends only."""
    async with StateStore.open(db_path) as store:
        original = make_session(messages=3)
        await store.save_session(original)
        install_write_log(db_path)

        travelled = pickle.loads(pickle.dumps(original))
        exchange(travelled, "after the trip")
        await store.save_session(travelled)
        rewritten = take_write_log(db_path)
        assert ("messages", "update", 0) in rewritten
        assert ("messages", "insert", 3) in rewritten

        exchange(original, "the original again")
        await store.save_session(original)
        assert await store.load_session(original.id) == original


# -- a save stores the state at its call ----------------------------------------------------


async def test_a_queued_save_stores_its_state_at_the_call(store: StateStore) -> None:
    """A save queued behind another copy's save stores its call-time state, not later edits."""
    await store.save_session(make_session())
    [summary] = await store.list_sessions()
    first = await store.load_session(summary.id)
    second = await store.load_session(summary.id)
    assert first is not None
    assert second is not None

    exchange(second, "from the other copy")
    other = asyncio.ensure_future(store.save_session(second))
    exchange(first, "from this copy")
    queued = asyncio.ensure_future(store.save_session(first))
    at_the_call = first.model_copy(deep=True)
    first.user_messages[0].content = "changed after the call"
    first.add_user_message("appended after the call")
    del first.agent_responses[0]

    await asyncio.gather(other, queued)

    assert await store.load_session(summary.id) == at_the_call


async def test_fire_and_forget_saves_of_one_object_land_in_call_order(store: StateStore) -> None:
    """Saves started as tasks without waiting store the last call's state."""
    session = make_session()
    tasks = []
    for turn in range(20):
        exchange(session, f"turn {turn}")
        tasks.append(asyncio.ensure_future(store.save_session(session)))
        if turn % 3 == 0:
            session.user_messages[-1].content = f"edited {turn}"
            tasks.append(asyncio.ensure_future(store.save_session(session)))
    await asyncio.gather(*tasks)

    assert await store.load_session(session.id) == session


async def test_saves_whose_callers_timed_out_commit_before_later_saves(
    store: StateStore, backend: str
) -> None:
    """Saves that time out while the database is busy commit in call order, or not at all."""
    session = make_session()
    await store.save_session(session)
    blockers = await _occupy(store, backend)
    try:
        for turn in range(12):
            exchange(session, f"turn {turn}")
            if turn % 4 == 0:
                session.user_messages[0].content = f"rewritten at {turn}"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store.save_session(session), 0.01)
    finally:
        await blockers()
    exchange(session, "acknowledged")
    await store.save_session(session)

    assert await store.load_session(session.id) == session


async def _occupy(store: StateStore, backend: str) -> Callable[[], Any]:
    """Make every write wait: hold SQLite's write lock, or every pooled PostgreSQL connection.

    Returns the coroutine function that frees them again.
    """
    if backend == "sqlite":
        database = store.engine.url.database
        assert database is not None
        holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")

        async def free_sqlite() -> None:
            await asyncio.sleep(0.2)
            holder.execute("ROLLBACK")
            holder.close()

        return free_sqlite
    held = [await store.engine.connect() for _ in range(store.engine.pool.size())]  # no overflow

    async def free_pool() -> None:
        await asyncio.sleep(0.2)
        for connection in held:
            await connection.close()

    return free_pool


async def test_a_failed_save_leaves_no_record_that_claims_it(db_path: Path) -> None:
    """After a save the database refused, the next save of the object rewrites it whole."""
    async with StateStore.open(db_path) as store:
        session = make_session(messages=2)
        await store.save_session(session)
        with sqlite3.connect(db_path) as connection:
            connection.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN new.content = 'refused' "
                "BEGIN SELECT RAISE(ABORT, 'refused message'); END"
            )
        session.add_user_message("refused")
        with pytest.raises(DatabaseError, match="refused message"):
            await store.save_session(session)
        session.user_messages[-1].content = "accepted"

        await store.save_session(session)

        assert await store.load_session(session.id) == session


# -- one stuck lock holder costs one busy timeout ----------------------------------------------


async def test_a_stuck_lock_holder_fails_a_queue_of_saves_in_one_wait(
    db_path: Path, traced: Traced
) -> None:
    """Saves queued behind another process's lock all fail after one busy timeout, not one each."""
    async with StateStore.open(db_path, busy_timeout=0.3) as store:
        await store.save_session(make_session())
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        traced.clear()
        try:
            outcomes = await asyncio.gather(
                *(store.save_session(make_session(f"u{index}")) for index in range(40)),
                return_exceptions=True,
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # Each transaction the writer starts sets its lock wait to 0 and then polls.
        waits = [statement for statement in traced.of(0) if statement == "PRAGMA busy_timeout = 0"]

        assert all(isinstance(outcome, DatabaseError) for outcome in outcomes)
        assert "locked" in str(outcomes[0])
        # One wait per batch (the 40 saves may reach the writer in two or three runs),
        # never one per save.
        assert 1 <= len(waits) <= 3
        await store.save_session(make_session("after"))
        assert len(await store.list_sessions()) == 2


# -- close --------------------------------------------------------------------------------


async def test_a_cancelled_close_is_finished_by_the_next_close(
    target: Path | URL, route: str
) -> None:
    """Cancelling close() leaves it running; a second close() waits for it to release all.

    Behind PgBouncer the server connections are PgBouncer's to keep: none may be left
    working or in a transaction for the store.
    """
    store = await StateStore.open(target)
    await store.save_session(make_session())
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing

    await store.close()

    assert not [t for t in threading.enumerate() if t.name.startswith("statestore")]
    if isinstance(target, URL):
        assert await _server_connections(target, busy_only=route == "pgbouncer") == 0


async def _server_connections(url: URL, *, busy_only: bool = False) -> int:
    """Count the server connections to ``url``'s database other than this one (with
    ``busy_only``, those not idle)."""
    connection = await asyncpg.connect(server_dsn(url.database))
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
            " AND (state <> 'idle' OR NOT $2)",
            url.database,
            busy_only,
        )
    finally:
        await connection.close()
    return count


# -- every store of a process on one database keeps one order ------------------------------


async def test_saves_through_two_stores_of_one_process_keep_call_order(
    target: Path | URL,
) -> None:
    """A save through one store, then one through another, stores the second, even when busy."""
    async with StateStore.open(target) as first, StateStore.open(target) as second:
        busy = [make_session(f"busy-{index}") for index in range(20)]
        for round_ in range(10):
            session = make_session()
            session.metadata["call"] = 1
            pending = [asyncio.ensure_future(first.save_session(other)) for other in busy]
            earlier = asyncio.ensure_future(first.save_session(session))
            session.metadata["call"] = 2
            later = asyncio.ensure_future(second.save_session(session))
            await asyncio.gather(earlier, later, *pending)

            stored = await first.load_session(session.id)
            assert stored is not None
            assert stored.metadata["call"] == 2, f"round {round_}"


async def test_a_second_store_on_a_file_at_another_synchronous_level_is_refused(
    db_path: Path,
) -> None:
    """Stores on one file share one writer, so a second one at another level is refused."""
    async with StateStore.open(db_path, synchronous="FULL"):
        with pytest.raises(InvalidDataError, match="synchronous"):
            await StateStore.open(db_path, synchronous="NORMAL")
        async with StateStore.open(db_path, synchronous="FULL") as same:
            await same.save_session(make_session())
    async with StateStore.open(db_path, synchronous="NORMAL") as after_close:
        assert len(await after_close.list_sessions()) == 1


async def test_each_store_on_a_file_waits_for_a_lock_as_long_as_its_own_busy_timeout(
    db_path: Path,
) -> None:
    """Behind a held lock, a store with a short busy timeout fails; a patient one waits."""
    async with (
        StateStore.open(db_path, busy_timeout=0.1) as hasty,
        StateStore.open(db_path, busy_timeout=10) as patient,
    ):
        holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        hasty_save = asyncio.ensure_future(hasty.save_session(make_session("hasty")))
        patient_save = asyncio.ensure_future(patient.save_session(make_session("patient")))
        with pytest.raises(DatabaseError, match="locked"):
            await hasty_save
        holder.execute("ROLLBACK")
        holder.close()

        await patient_save

        assert [summary.user_id for summary in await patient.list_sessions()] == ["patient"]


HAMMER = """
import pathlib, sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA busy_timeout = 10000")
connection.execute("CREATE TABLE IF NOT EXISTS hammer (n INTEGER)")
print("committing", flush=True)
stop = pathlib.Path(sys.argv[2])
while not stop.exists():
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("INSERT INTO hammer VALUES (1)")
    time.sleep(0.002)
    connection.execute("COMMIT")
"""
"""A process that holds SQLite's write lock 2 ms a transaction (as a slow disk's fsync
would, whatever the disk under the test) and takes it again the moment it commits."""


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2,
    reason="the peer frees the lock only while it runs: a writer must run on another CPU",
)
async def test_a_process_committing_back_to_back_does_not_starve_a_store(
    db_path: Path, tmp_path: Path
) -> None:
    """Saves get the lock from a peer that commits back to back, well inside their timeout.

    SQLite's busy handler backs off to one try per 100 ms, and such a peer leaves the lock
    free for microseconds between transactions: saves waited seconds and timed out.
    """

    def hammered() -> int:
        with contextlib.closing(sqlite3.connect(db_path)) as reader:
            return int(reader.execute("SELECT count(*) FROM hammer").fetchone()[0])

    async with StateStore.open(db_path, busy_timeout=5) as store:
        stop = tmp_path / "stop"
        hammer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HAMMER, str(db_path), str(stop), stdout=asyncio.subprocess.PIPE
        )
        try:
            assert hammer.stdout is not None
            assert await hammer.stdout.readline() == b"committing\n"
            before = hammered()
            for index in range(10):
                await store.save_session(make_session(f"u{index}"))
            during = hammered() - before
        finally:
            stop.touch()
            await asyncio.wait_for(hammer.wait(), 30)
        assert hammer.returncode == 0
        assert during > 0  # the peer kept committing while the saves went in
        assert len(await store.list_sessions()) == 10


async def test_a_save_with_prune_cancelled_before_it_starts_still_saves(
    store: StateStore,
) -> None:
    """Cancelling save_session_with_prune before it runs leaves its save queued, warning nothing."""
    session = make_session()
    task = asyncio.ensure_future(
        store.save_session_with_prune(session, PruneConfig(max_sessions=0, ttl_hours=0))
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gc.collect()  # an abandoned coroutine would warn here (warnings are errors)
    # A write of the same session is queued after the save and runs after its commit (on
    # PostgreSQL saves of other sessions may commit first, on other connections).
    assert await store.update_session_with(session.id, lambda stored: None) == session

    assert await store.load_session(session.id) == session


async def test_a_session_saved_many_times_copies_deeply_and_saves_whole(db_path: Path) -> None:
    """A deep copy of a much-saved session leaves its record behind, then saves whole."""
    async with StateStore.open(db_path, synchronous="NORMAL") as store:
        session = make_session(messages=0)
        for turn in range(1200):  # a record whose rows chain 1,200 saves
            session.add_user_message(f"turn {turn}")
            await store.save_session(session)

        twin = copy.deepcopy(session)
        assert twin == session
        assert twin._stored is None  # the record stays with the object it describes
        twin.user_messages[0].content = "edited in the copy"
        await store.save_session(twin)

        assert await store.load_session(session.id) == twin


@pytest.mark.postgresql
async def test_one_session_saved_to_sqlite_then_postgresql_then_back_stores_whole(
    db_path: Path, postgresql_url: URL
) -> None:
    """A session's record of rows in one backend's form never feeds another backend's save."""
    run_apart(empty_tables(postgresql_url))
    async with StateStore.open(db_path) as on_sqlite, StateStore.open(postgresql_url) as on_pg:
        first = make_session(messages=3)
        await on_sqlite.save_session(first)
        session = await on_sqlite.load_session(first.id)  # its record: rows in SQLite's form
        assert session is not None
        for store in (on_pg, on_sqlite, on_pg):
            exchange(session, f"a turn for {store.engine.dialect.name}")
            await store.save_session(session)
            assert await store.load_session(session.id) == session
