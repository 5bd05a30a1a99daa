"""SyncStateStore: the store's contract through blocking calls, from plain threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL

from statestore import (
    AgentResponse,
    InvalidDataError,
    InvalidNameError,
    PruneConfig,
    ReentrantWriteError,
    Session,
    SessionNotFoundError,
    StateStore,
    StoreClosedError,
    SyncStateStore,
    UserMessage,
)

from .conftest import SAMPLE_DIR
from .test_store import make_session


class Blocking:
    """A SyncStateStore seen through ``asyncio.to_thread``: the contract tests below await
    every call, so they run unchanged on the async store and on the sync one."""

    def __init__(self, store: SyncStateStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call


@pytest.fixture(params=["async", "sync"])
async def face(request: pytest.FixtureRequest, target: Path | URL) -> AsyncIterator[Any]:
    """The store under test, opened as the async StateStore or as a SyncStateStore."""
    if request.param == "async":
        async with StateStore.open(target) as store:
            yield store
        return
    sync = await asyncio.to_thread(SyncStateStore.open, target)
    try:
        yield Blocking(sync)
    finally:
        await asyncio.to_thread(sync.close)


# -- the contract, on both faces ------------------------------------------------------------


async def test_save_then_load_returns_the_same_session(face: Any) -> None:
    session = make_session(messages=5)
    await face.save_session(session)
    assert await face.load_session(session.id) == session
    assert await face.load_session("absent") is None


async def test_appends_deltas_and_whole_rewrites_all_land(face: Any) -> None:
    session = make_session(messages=2)
    await face.save_session(session)
    loaded = await face.load_session(session.id)
    loaded.add_user_message("one more")
    await face.save_session(loaded)
    del loaded.user_messages[0]
    await face.update_session(loaded)
    assert await face.load_session(session.id) == loaded


async def test_append_to_session_needs_no_load(face: Any) -> None:
    session = make_session(messages=3)
    await face.save_session(session)
    await face.append_to_session(
        session.id,
        user_messages=[UserMessage(content="q")],
        agent_responses=[AgentResponse(content="a")],
    )
    tail = await face.load_tail(session.id, 1)
    assert (tail.user_messages[-1].content, tail.agent_responses[-1].content) == ("q", "a")
    with pytest.raises(SessionNotFoundError):
        await face.append_to_session("absent", user_messages=[UserMessage(content="q")])


async def test_listing_paging_and_iterating(face: Any) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for index in range(7):
        session = make_session(messages=1)
        session.user_id = f"user-{index % 2}"
        session.updated_at = start + timedelta(minutes=index)
        await face.save_session(session)
    listed = await face.list_sessions()
    assert [s.updated_at for s in listed] == sorted((s.updated_at for s in listed), reverse=True)
    first = await face.list_sessions(limit=3)
    rest = await face.list_sessions(after=first[-1])
    assert [s.id for s in first + rest] == [s.id for s in listed]
    assert len(await face.list_sessions(user_id="user-0")) == 4
    if isinstance(face, Blocking):  # a plain iterator, consumed in a thread of its own

        def iterate() -> list[str]:
            return [s.id for s in face.store.iter_sessions(page_size=2)]

        ids = await asyncio.to_thread(iterate)
    else:
        ids = [s.id async for s in face.iter_sessions(page_size=2)]
    assert ids == [s.id for s in listed]


async def test_get_or_create_update_with_and_deletes(face: Any) -> None:
    created = await face.get_or_create_session("u", "fixed-id")
    assert (await face.get_or_create_session("other", "fixed-id")).user_id == "u"

    def add(session: Session) -> None:
        session.add_user_message("inside the transaction")

    updated = await face.update_session_with(created.id, add)
    assert updated.user_messages[-1].content == "inside the transaction"
    assert await face.update_session_with("absent", add) is None
    await face.save_session(make_session(messages=1))
    assert await face.delete_session(created.id) is True
    assert await face.delete_session(created.id) is False
    assert await face.delete_user("user-1") == 1
    assert await face.list_sessions() == []


async def test_prunes(face: Any) -> None:
    for _ in range(5):
        await face.save_session(make_session(messages=1))
    config = PruneConfig(max_sessions=2, ttl_hours=0)
    assert len(await face.prunable_sessions(config)) == 3
    assert await face.prune_sessions(config) == 3
    await face.save_session_with_prune(
        make_session(messages=1), PruneConfig(max_sessions=1, ttl_hours=0)
    )
    for _ in range(200):  # the prune runs in the background after the save
        if len(await face.list_sessions()) == 1:
            break
        await asyncio.sleep(0.01)
    assert len(await face.list_sessions()) == 1


async def test_documents(face: Any) -> None:
    await face.save_markdown("notes", "a", "# hello")
    await face.save_json("notes", "b", {"k": [1, 2]})
    assert await face.load_markdown("notes", "a") == "# hello"
    assert await face.load_json("notes", "b") == {"k": [1, 2]}
    assert await face.list_category("notes") == ["a", "b"]
    assert await face.list_categories() == ["notes"]
    assert await face.delete_file("notes", "b") is True
    assert await face.load_json("notes", "b") is None


async def test_import_export_and_stats(face: Any, tmp_path: Path) -> None:
    report = await face.import_directory(SAMPLE_DIR)
    assert report.sessions_added == 40
    exported = await face.export_directory(tmp_path / "out")
    assert exported.sessions == 40
    assert (await face.stats(days=3650)).sessions == 40


async def test_bad_input_raises_the_same_typed_errors(face: Any) -> None:
    with pytest.raises(InvalidNameError):
        await face.load_session("../escape")
    bad = make_session(messages=1)
    bad.user_messages[0].content = "nul \x00 inside"
    with pytest.raises(InvalidDataError, match=r"user_messages\[0\]\.content"):
        await face.save_session(bad)
    assert await face.list_sessions() == []


# -- what only the sync face has ---------------------------------------------------------------


@pytest.fixture
def sync_store(target: Path | URL) -> Iterator[SyncStateStore]:
    with SyncStateStore.open(target) as store:
        yield store


def test_many_threads_share_one_store_and_lose_nothing(sync_store: SyncStateStore) -> None:
    """16 threads: each saves its own session 20 times and appends to one shared session;
    every save is stored, and the shared session holds every append."""
    shared = sync_store.get_or_create_session("u", "shared")

    def worker(index: int) -> None:
        own = make_session(messages=0)
        own.id = f"own-{index}"
        for turn in range(20):
            own.add_user_message(f"{index}/{turn}")
            sync_store.save_session(own)
            sync_store.append_to_session(shared.id, user_messages=[UserMessage(content="x")])

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(worker, range(16)))

    for index in range(16):
        own = sync_store.load_session(f"own-{index}")
        assert own is not None
        assert [m.content for m in own.user_messages] == [f"{index}/{t}" for t in range(20)]
    stored = sync_store.load_session("shared")
    assert stored is not None
    assert len(stored.user_messages) == 16 * 20


def test_close_stops_the_thread_and_later_calls_are_refused(target: Path | URL) -> None:
    before = {thread.name for thread in threading.enumerate()}
    store = SyncStateStore.open(target)
    store.save_session(make_session(messages=1))
    store.close()
    store.close()  # idempotent
    assert {thread.name for thread in threading.enumerate()} <= before | {"MainThread"}
    with pytest.raises(StoreClosedError):
        store.list_sessions()


def test_a_call_from_inside_update_fn_is_refused_not_a_deadlock(
    sync_store: SyncStateStore,
) -> None:
    sync_store.save_session(make_session(messages=1))
    [summary] = sync_store.list_sessions()

    def reentrant(session: Session) -> None:
        sync_store.load_session(session.id)

    with pytest.raises(ReentrantWriteError, match="its own thread"):
        sync_store.update_session_with(summary.id, reentrant)
    assert sync_store.load_session(summary.id) is not None


def test_an_open_that_fails_leaves_no_thread(tmp_path: Path) -> None:
    before = threading.active_count()
    with pytest.raises(InvalidDataError):
        SyncStateStore.open("mysql://host/db")
    assert threading.active_count() == before


def test_usable_with_no_event_loop_in_the_calling_thread(target: Path | URL) -> None:
    """A plain thread (no loop, as in a WSGI worker) opens, saves, loads and closes."""
    results: list[Any] = []

    def plain_thread() -> None:
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()
        with SyncStateStore.open(target) as store:
            session = make_session(messages=2)
            store.save_session(session)
            results.append(store.load_session(session.id) == session)

    thread = threading.Thread(target=plain_thread)
    thread.start()
    thread.join()
    assert results == [True]


def test_a_call_still_waiting_when_the_store_closes_is_told_so(target: Path | URL) -> None:
    """A call the closing leaves unfinished raises StoreClosedError instead of hanging,
    and a second close() returns once the first has finished."""
    store = SyncStateStore.open(target)
    outcome: list[BaseException] = []
    started = threading.Event()

    async def never_done() -> None:
        started.set()
        await asyncio.sleep(3600)

    def waiting() -> None:
        try:
            store._run(never_done)
        except BaseException as error:
            outcome.append(error)

    caller = threading.Thread(target=waiting)
    caller.start()
    assert started.wait(10)
    closers = [threading.Thread(target=store.close) for _ in range(2)]
    for closer in closers:
        closer.start()
    for thread in (*closers, caller):
        thread.join(30)
        assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], StoreClosedError)


def test_every_public_method_has_a_blocking_twin_with_the_same_parameters() -> None:
    """A method added to StateStore without its SyncStateStore twin fails here."""
    import inspect

    for name, method in inspect.getmembers(StateStore, inspect.isfunction):
        if name.startswith("_"):
            continue
        twin = getattr(SyncStateStore, name, None)
        assert twin is not None, f"SyncStateStore has no {name}"
        assert list(inspect.signature(twin).parameters) == list(
            inspect.signature(method).parameters
        ), name


def test_close_from_inside_update_fn_is_refused_not_a_deadlock(sync_store: SyncStateStore) -> None:
    sync_store.save_session(make_session(messages=1))
    [summary] = sync_store.list_sessions()
    with pytest.raises(ReentrantWriteError, match="closed from its own thread"):
        sync_store.update_session_with(summary.id, lambda session: sync_store.close())
    assert sync_store.load_session(summary.id) is not None


def test_exit_with_an_unfinished_iterator_and_no_close_does_not_hang(tmp_path: Path) -> None:
    """A script that stops iterating half-way and never closes still exits."""
    probe = f"""
from statestore import Session, SyncStateStore
store = SyncStateStore.open({str(tmp_path / "state.db")!r})
for index in range(5):
    store.save_session(Session(user_id="u"))
pages = store.iter_sessions(page_size=2)
next(pages)
print("done")
"""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
