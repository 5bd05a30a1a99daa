"""Callers cancelled at random points: whole saves or none, a free lock, nothing left over."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from statestore import AgentResponse, Session, StateStore

from .fault_workers import database_descriptors

ROOT = Path(__file__).resolve().parents[1]

LOCK_RELEASE_BOUND = 2.0
"""Seconds another write through the store may take after a cancellation.

The issue's bound is one second for the lock (``LOCK_TAKE_BOUND``, checked on a raw
connection); a write through the store also pays its own transaction and fsync on a noisy
two-core machine. A leaked lock is held until the busy timeout (30 s) or the garbage
collector, so the two cannot be confused.
"""

LOCK_TAKE_BOUND = 1.0
"""Seconds another connection may wait for SQLite's write lock after a cancellation."""


async def cancel_at_random_point(task: asyncio.Task[Any], rng: random.Random) -> None:
    """Cancel ``task`` before it starts, after a few loop turns, or a few milliseconds in."""
    choice = rng.random()
    if choice < 0.6:
        for _ in range(rng.randrange(6)):
            await asyncio.sleep(0)
    else:
        await asyncio.sleep(rng.uniform(0, 0.004))
    task.cancel()


def changed(session: Session, rng: random.Random, mark: int) -> Session:
    """Return a copy of ``session`` with a random change: appends, an edit, or a new list."""
    copy = session.model_copy(deep=True)
    kind = rng.randrange(3)
    if kind == 0 or not copy.user_messages:
        for turn in range(rng.randrange(1, 6)):
            copy.add_user_message(f"mark {mark} turn {turn}")
            copy.add_agent_response(AgentResponse(content=f"reply {mark} {turn}"))
    elif kind == 1:
        copy.user_messages[0].content = f"edited by {mark}"
        copy.agent_responses = copy.agent_responses[:1]
    else:
        copy.user_messages = [m for m in copy.user_messages if rng.random() < 0.5]
    copy.set_metadata("mark", mark)
    return copy


@contextlib.asynccontextmanager
async def settled(store: StateStore) -> AsyncIterator[StateStore]:
    """Close ``store`` (which finishes every write still running); yield one on its engine."""
    await store.close()
    reopened = StateStore(store.engine)
    try:
        yield reopened
    finally:
        await reopened.close()
        await store.engine.dispose()  # the reopened store leaves the engine's pool open


async def test_cancelled_saves_are_all_or_nothing(store: StateStore) -> None:
    """Each session ends as one state saved whole, though most saves were cancelled."""
    rng = random.Random(3)
    sessions = {}
    allowed: dict[str, set[str]] = {}
    for index in range(8):
        session = Session(id=f"s{index}", user_id="u")
        for turn in range(3):
            session.add_user_message(f"base {turn}")
            session.add_agent_response(AgentResponse(content=f"base reply {turn}"))
        await store.save_session(session)
        sessions[session.id] = session
        allowed[session.id] = {session.model_dump_json()}
    tasks = []
    for mark in range(150):
        session_id = rng.choice(list(sessions))
        if rng.random() < 0.3:  # appended to a loaded session: a delta save
            loaded = await store.load_session(session_id)
            assert loaded is not None
            loaded.add_user_message(f"appended by {mark}")
            loaded.set_metadata("mark", mark)
            session = loaded
        else:  # a copy changed in any way: a whole rewrite
            session = changed(sessions[session_id], rng, mark)
        allowed[session.id].add(session.model_dump_json())
        task = asyncio.create_task(store.save_session(session))
        tasks.append(task)
        if rng.random() < 0.7:
            await cancel_at_random_point(task, rng)
    await asyncio.gather(*tasks, return_exceptions=True)
    async with settled(store) as reopened:
        final = {i: await reopened.load_session(i) for i in sessions}

    assert sum(task.cancelled() for task in tasks) > 50
    for session_id, loaded in final.items():
        assert loaded is not None
        assert loaded.model_dump_json() in allowed[session_id]


async def test_loads_during_cancelled_saves_see_only_whole_states(
    store: StateStore,
) -> None:
    """A load running beside saves (most of them cancelled) returns one saved state whole."""
    rng = random.Random(10)
    short = Session(id="t", user_id="u", metadata={"messages": 1})
    short.add_user_message("only")
    long = short.model_copy(deep=True)
    for turn in range(29):
        long.add_user_message(f"turn {turn}")
    long.set_metadata("messages", 30)
    await store.save_session(short)
    allowed = {short.model_dump_json(), long.model_dump_json()}
    seen: list[str] = []

    async def save_alternately() -> None:
        for round_ in range(200):
            state = (long if round_ % 2 else short).model_copy(deep=True)
            task = asyncio.create_task(store.save_session(state))
            if round_ % 3:
                await cancel_at_random_point(task, rng)
            await asyncio.gather(task, return_exceptions=True)

    async def load_repeatedly() -> None:
        for _ in range(250):
            loaded = await store.load_session("t")
            assert loaded is not None
            seen.append(loaded.model_dump_json())

    await asyncio.gather(save_alternately(), load_repeatedly(), load_repeatedly())

    assert len(set(seen)) == 2  # the loads did meet both states
    assert [state for state in seen if state not in allowed] == []


async def test_cancelled_update_is_all_or_nothing_and_frees_the_lock(store: StateStore) -> None:
    """An update_session_with cancelled anywhere applies whole or not at all; others get in."""
    rng = random.Random(4)
    session = Session(id="counter", user_id="u")
    await store.save_session(session)

    def update(round_: int) -> Callable[[Session], Awaitable[None]]:
        async def apply(current: Session) -> None:
            current.add_user_message(f"round {round_}")
            await asyncio.sleep(rng.uniform(0, 0.004))
            current.set_metadata(f"r{round_}", round_)

        return apply

    cancelled = 0
    for round_ in range(0, 120, 2):
        task = asyncio.create_task(store.update_session_with("counter", update(round_)))
        await cancel_at_random_point(task, rng)
        outcome = (await asyncio.gather(task, return_exceptions=True))[0]
        cancelled += isinstance(outcome, asyncio.CancelledError)
        other = await asyncio.wait_for(
            store.update_session_with("counter", update(round_ + 1)), LOCK_RELEASE_BOUND
        )
        assert other is not None
        await asyncio.wait_for(
            store.save_markdown("notes", "after", f"round {round_}"), LOCK_RELEASE_BOUND
        )
    async with settled(store) as reopened:
        final = await reopened.load_session("counter")

    assert cancelled > 20
    assert final is not None
    contents = [m.content for m in final.user_messages]
    assert len(contents) == len(set(contents))
    for round_ in range(120):
        applied = f"round {round_}" in contents
        assert applied == (final.metadata.get(f"r{round_}") == round_), round_
        if round_ % 2:
            assert applied  # the updates that were not cancelled all landed


def take_write_lock(db_path: Path) -> None:
    """Take and give back SQLite's write lock on its own connection, as another process would."""
    connection = sqlite3.connect(db_path, timeout=LOCK_TAKE_BOUND, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    finally:
        connection.close()


async def test_cancelled_writes_leave_the_file_free_for_another_connection(db_path: Path) -> None:
    """After each cancelled save or update, another connection takes the write lock at once."""
    rng = random.Random(9)
    async with StateStore.open(db_path) as store:
        session = Session(id="s", user_id="u")
        await store.save_session(session)
        for round_ in range(30):
            if round_ % 2:

                async def slow(current: Session, round_: int = round_) -> None:
                    current.set_metadata("round", round_)
                    await asyncio.sleep(rng.uniform(0, 0.004))

                task = asyncio.create_task(store.update_session_with("s", slow))
            else:
                task = asyncio.create_task(store.save_session(changed(session, rng, round_)))
            await cancel_at_random_point(task, rng)
            # In a thread: the cancelled update's fn may still need this loop to finish.
            await asyncio.to_thread(take_write_lock, db_path)
            await asyncio.gather(task, return_exceptions=True)


async def test_close_after_cancellations_leaves_no_threads_or_checked_out_connections(
    store: StateStore,
) -> None:
    """After cancelled saves and updates, close() returns every connection and stops threads."""
    rng = random.Random(5)
    wrapped = StateStore(store.engine)  # closing it leaves the engine's pool to inspect
    session = Session(id="s", user_id="u")
    await wrapped.save_session(session)
    tasks: list[asyncio.Task[Any]] = []
    for round_ in range(60):
        if round_ % 2:
            task = asyncio.create_task(
                wrapped.update_session_with("s", lambda s, r=round_: s.set_metadata("r", r))
            )
        else:
            task = asyncio.create_task(wrapped.save_session(changed(session, rng, round_)))
        tasks.append(task)
        await cancel_at_random_point(task, rng)
    await wrapped.close()  # without waiting for the cancelled callers first
    await asyncio.gather(*tasks, return_exceptions=True)
    assert store.engine.pool.checkedout() == 0
    await store.close()

    assert not [t.name for t in threading.enumerate() if t.name.startswith("statestore-")]


async def test_close_after_cancellations_closes_every_database_file(db_path: Path) -> None:
    """No file descriptor on the database, its WAL or -shm stays open after close()."""
    rng = random.Random(6)
    store = await StateStore.open(db_path)
    session = Session(id="s", user_id="u")
    await store.save_session(session)
    tasks = [asyncio.create_task(store.save_session(changed(session, rng, i))) for i in range(40)]
    for task in tasks[::2]:
        await cancel_at_random_point(task, rng)
    assert database_descriptors(db_path)
    await store.close()
    await asyncio.gather(*tasks, return_exceptions=True)

    assert database_descriptors(db_path) == []


@pytest.mark.parametrize("seed", [7])
def test_process_exits_after_cancellations_and_close(db_path: Path, seed: int) -> None:
    """A process that cancels saves and updates, then closes, exits with nothing left open."""
    finished = subprocess.run(
        [sys.executable, "-m", "tests.fault_workers", "cancel", str(db_path), str(seed)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,  # a hang at exit would never end; a normal run takes ~2 s
        check=False,
    )

    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout) == {"threads": [], "descriptors": []}
