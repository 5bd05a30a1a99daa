"""Pruning beyond the basics: large batched prunes, ordering, the session counter, no-op cost."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestore import AgentResponse, PruneConfig, Session, StateStore, UserMessage
from statestore.prune import PRUNE_BATCH

from .conftest import Traced
from .test_store import make_session


async def open_store(path: Path) -> StateStore:
    """Open a store (a coroutine, for asyncio.Runner.run)."""
    return await StateStore.open(path)


async def save_all(store: StateStore, sessions: list[Session]) -> None:
    """Save every session, concurrently (the store group-commits them)."""
    await asyncio.gather(*(store.save_session(session) for session in sessions))


def newest_ids(sessions: list[Session], count: int | None = None) -> list[str]:
    """Return the ids of the ``count`` newest sessions by (updated_at, id), newest first."""
    ordered = sorted(sessions, key=lambda s: (s.updated_at, s.id), reverse=True)
    return [session.id for session in ordered[:count]]


def stored_ids(db_path: Path) -> set[str]:
    """Return the ids of every stored session, read with the stdlib driver."""
    with sqlite3.connect(db_path) as connection:
        return {row[0] for row in connection.execute("SELECT id FROM sessions")}


def counter_and_count(db_path: Path) -> tuple[int, int]:
    """Return the session counter (its shards' sum) and the real number of session rows."""
    with sqlite3.connect(db_path) as connection:
        [(counter,)] = connection.execute(
            "SELECT sum(value) FROM statestore_counters WHERE name LIKE 'sessions/%'"
        ).fetchall()
        [(count,)] = connection.execute("SELECT count(*) FROM sessions").fetchall()
    return counter, count


def timed_sessions(count: int, newest: datetime, prefix: str, seed: int) -> list[Session]:
    """Return ``count`` sessions updated up to ``newest``, four per instant, ids shuffled.

    Shuffled ids make ties on updated_at break by id, not by save order.
    """
    names = [f"{prefix}-{index:05d}" for index in range(count)]
    random.Random(seed).shuffle(names)
    sessions = []
    for index, name in enumerate(names):
        session = Session(id=name, user_id="u", created_at=newest - timedelta(days=30))
        session.updated_at = newest - timedelta(seconds=index // 4)
        sessions.append(session)
    return sessions


# -- large prunes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stale", "fresh", "max_sessions"),
    [
        pytest.param(PRUNE_BATCH * 2 + 37, 25, 0, id="ttl"),
        pytest.param(PRUNE_BATCH * 2, 25, 0, id="ttl-whole-batches"),
        pytest.param(PRUNE_BATCH + 37, PRUNE_BATCH + 100, PRUNE_BATCH, id="ttl-then-count"),
    ],
)
async def test_large_ttl_prune_removes_exactly_the_stale_sessions(
    store: StateStore, db_path: Path, stale: int, fresh: int, max_sessions: int
) -> None:
    """A TTL prune over several batches deletes every stale session and only those."""
    now = datetime.now(UTC)
    stale_sessions = timed_sessions(stale, now - timedelta(hours=48), "stale", seed=1)
    fresh_sessions = timed_sessions(fresh, now - timedelta(hours=1), "fresh", seed=2)
    await save_all(store, stale_sessions + fresh_sessions)
    kept = newest_ids(fresh_sessions, max_sessions or None)

    deleted = await store.prune_sessions(PruneConfig(max_sessions=max_sessions, ttl_hours=24))

    assert deleted == stale + fresh - len(kept)
    assert stored_ids(db_path) == set(kept)


@pytest.mark.parametrize(
    ("total", "max_sessions"),
    [
        pytest.param(PRUNE_BATCH * 2 + 37 + 25, 25, id="two-batches-and-some"),
        pytest.param(PRUNE_BATCH * 2 + 1, 1, id="whole-batches"),
    ],
)
async def test_large_count_prune_keeps_exactly_the_newest(
    store: StateStore, total: int, max_sessions: int
) -> None:
    """A count prune over several batches keeps exactly the max_sessions newest sessions."""
    sessions = timed_sessions(total, datetime.now(UTC), "s", seed=3)
    await save_all(store, sessions)

    deleted = await store.prune_sessions(PruneConfig(max_sessions=max_sessions, ttl_hours=0))

    assert deleted == total - max_sessions
    assert [s.id for s in await store.list_sessions()] == newest_ids(sessions, max_sessions)


async def test_second_prune_finds_nothing_left(store: StateStore) -> None:
    """Right after a large prune, the same prune deletes nothing more."""
    now = datetime.now(UTC)
    await save_all(store, timed_sessions(PRUNE_BATCH + 10, now - timedelta(hours=1), "s", seed=4))
    config = PruneConfig(max_sessions=5, ttl_hours=24)
    await store.prune_sessions(config)

    assert await store.prune_sessions(config) == 0
    assert len(await store.list_sessions()) == 5


# -- ordering property ------------------------------------------------------------------


@st.composite
def prune_plans(draw: st.DrawFn) -> tuple[list[tuple[str, int]], int, int]:
    """Sessions as (id, hours old) with many ties, a max_sessions and a ttl_hours (0: off)."""
    names = draw(
        st.lists(st.text(alphabet="abc", min_size=1, max_size=3), max_size=15, unique=True)
    )
    ages = [draw(st.integers(0, 6)) for _ in names]
    max_sessions = draw(st.integers(0, 16))
    ttl_hours = draw(st.integers(0, 7))
    return list(zip(names, ages, strict=True)), max_sessions, ttl_hours


def test_prune_never_deletes_a_session_newer_than_one_it_keeps(db_path: Path) -> None:
    """For any sessions (ties included) and rules, the kept sessions are the newest ones."""
    with asyncio.Runner() as runner:
        store = runner.run(open_store(db_path))
        try:

            @settings(max_examples=30, deadline=None)
            @given(plan=prune_plans())
            def check(plan: tuple[list[tuple[str, int]], int, int]) -> None:
                aged, max_sessions, ttl_hours = plan
                now = datetime.now(UTC)
                sessions = []
                for name, age in aged:
                    # Half an hour off the hour: no session sits on the TTL cutoff.
                    session = Session(id=name, user_id="u", created_at=now - timedelta(days=1))
                    session.updated_at = now - timedelta(hours=age, minutes=30)
                    sessions.append(session)

                async def prune() -> tuple[int, list[str]]:
                    for summary in await store.list_sessions():
                        await store.delete_session(summary.id)
                    await save_all(store, sessions)
                    config = PruneConfig(max_sessions=max_sessions, ttl_hours=ttl_hours)
                    deleted = await store.prune_sessions(config)
                    return deleted, [s.id for s in await store.list_sessions()]

                deleted, kept_ids = runner.run(prune())

                by_id = {session.id: session for session in sessions}
                kept = [by_id[name] for name in kept_ids]
                dropped = [s for s in sessions if s.id not in set(kept_ids)]
                assert all(
                    (gone.updated_at, gone.id) < (stays.updated_at, stays.id)
                    for gone in dropped
                    for stays in kept
                )
                fresh = [
                    s
                    for s, (_, age) in zip(sessions, aged, strict=True)
                    if not ttl_hours or age < ttl_hours
                ]
                assert kept_ids == newest_ids(fresh, max_sessions or None)
                assert deleted == len(sessions) - len(kept)

            check()
        finally:
            runner.run(store.close())


# -- the session counter ----------------------------------------------------------------


async def test_session_counter_matches_row_count_through_every_operation(
    store: StateStore, db_path: Path
) -> None:
    """The 'sessions' counter equals count(*) after creates, re-saves, deletes and prunes."""
    now = datetime.now(UTC)
    sessions = [
        make_session(f"u{index}", updated_at=now - timedelta(minutes=index)) for index in range(8)
    ]
    checkpoints: list[tuple[str, tuple[int, int]]] = []

    def checkpoint(step: str) -> None:
        checkpoints.append((step, counter_and_count(db_path)))

    await save_all(store, sessions)
    checkpoint("create")
    await store.save_session(sessions[0])
    loaded = await store.load_session(sessions[1].id)
    assert loaded is not None
    loaded.add_user_message("appended")
    await store.save_session(loaded)
    sessions[2].user_messages.clear()
    await store.save_session(sessions[2])
    checkpoint("re-save")
    await store.delete_session(sessions[3].id)
    await store.delete_session("never-saved")
    checkpoint("delete")
    await store.get_or_create_session("u0", sessions[0].id)
    await store.get_or_create_session("new-user", "created-by-get-or-create")
    await store.get_or_create_session("new-user")
    checkpoint("get-or-create")
    await store.delete_file("sessions", sessions[4].id)
    await store.delete_file("sessions", "never-saved")
    checkpoint("delete-file")
    await store.save_json("sessions", "from-json", {"user_id": "json-user"})
    await store.update_session_with(sessions[5].id, lambda s: s.set_metadata("k", 1))
    checkpoint("save-json-and-update")
    await store.prune_sessions(PruneConfig(max_sessions=4, ttl_hours=0))
    checkpoint("prune-count")
    await store.save_session(make_session("old", updated_at=now - timedelta(days=3)))
    await store.prune_sessions(PruneConfig(max_sessions=0, ttl_hours=1))
    checkpoint("prune-ttl")

    assert [(step, counter) for step, (counter, _) in checkpoints] == [
        (step, count) for step, (_, count) in checkpoints
    ]


# -- a prune with nothing to do -----------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        PruneConfig(max_sessions=0, ttl_hours=24),
        PruneConfig(max_sessions=10, ttl_hours=0),
        PruneConfig(max_sessions=3, ttl_hours=24),
        PruneConfig(max_sessions=0, ttl_hours=0),
    ],
    ids=["ttl", "count-at-limit", "both", "both-off"],
)
async def test_prune_with_nothing_to_do_runs_no_write_transaction(
    db_path: Path, traced: Traced, config: PruneConfig
) -> None:
    """A prune that deletes nothing only reads: no BEGIN IMMEDIATE is traced."""
    now = datetime.now(UTC)
    async with StateStore.open(db_path) as store:
        await save_all(store, [make_session(updated_at=now - timedelta(hours=h)) for h in range(3)])
        traced.clear()

        assert await store.prune_sessions(config) == 0

    assert "BEGIN IMMEDIATE" not in traced.statements()
    assert "BEGIN" in traced.statements()


async def test_prune_that_deletes_runs_a_write_transaction(db_path: Path, traced: Traced) -> None:
    """A prune that deletes is traced taking the write lock (the trace above sees writes)."""
    now = datetime.now(UTC)
    async with StateStore.open(db_path) as store:
        await save_all(store, [make_session(updated_at=now - timedelta(hours=h)) for h in range(3)])
        traced.clear()

        assert await store.prune_sessions(PruneConfig(max_sessions=2, ttl_hours=0)) == 1

    assert "BEGIN IMMEDIATE" in traced.statements()


# -- children -----------------------------------------------------------------------------


def conversation(index: int, updated_at: datetime) -> Session:
    """Return a session with index + 1 messages and index responses."""
    session = Session(id=f"talk-{index}", user_id="u", created_at=updated_at)
    for position in range(index + 1):
        session.user_messages.append(UserMessage(content=f"m{position}", timestamp=updated_at))
    for position in range(index):
        session.agent_responses.append(AgentResponse(content=f"r{position}", timestamp=updated_at))
    session.updated_at = updated_at
    return session


@pytest.mark.parametrize(
    "config",
    [PruneConfig(max_sessions=0, ttl_hours=24), PruneConfig(max_sessions=2, ttl_hours=0)],
    ids=["ttl", "count"],
)
async def test_pruned_sessions_leave_no_children(
    store: StateStore, db_path: Path, config: PruneConfig
) -> None:
    """Messages and responses of pruned sessions are gone; foreign keys stay consistent."""
    now = datetime.now(UTC)
    sessions = [conversation(index, now - timedelta(hours=index * 20)) for index in range(6)]
    await save_all(store, sessions)

    await store.prune_sessions(config)

    kept = [s for s in sessions if s.id in stored_ids(db_path)]
    assert [s.id for s in kept] == ["talk-0", "talk-1"]
    with sqlite3.connect(db_path) as connection:
        messages = connection.execute("SELECT session_id, count(*) FROM messages GROUP BY 1")
        responses = connection.execute("SELECT session_id, count(*) FROM responses GROUP BY 1")
        assert dict(messages.fetchall()) == {s.id: len(s.user_messages) for s in kept}
        assert dict(responses.fetchall()) == {
            s.id: len(s.agent_responses) for s in kept if s.agent_responses
        }
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []


def test_prune_config_cutoff_is_ttl_hours_ago_or_none() -> None:
    """The TTL cutoff is now minus ttl_hours, and None when the TTL rule is off."""
    before = datetime.now(UTC)
    cutoff = PruneConfig(ttl_hours=5).cutoff()
    after = datetime.now(UTC)
    assert cutoff is not None
    assert before - timedelta(hours=5) <= cutoff <= after - timedelta(hours=5)
    assert PruneConfig(ttl_hours=0).cutoff() is None


@pytest.mark.parametrize(
    ("max_sessions", "ttl_hours"),
    [(0, 0), (5, 0), (0, 30), (5, 30), (50, 30), (1, 1)],
    ids=["off", "count", "ttl", "both", "ttl-only-bites", "tight"],
)
async def test_prunable_sessions_are_what_the_prune_then_deletes(
    store: StateStore, max_sessions: int, ttl_hours: int
) -> None:
    """prunable_sessions lists, oldest first, exactly the sessions prune_sessions deletes."""
    now = datetime.now(UTC)
    rng = random.Random(7)
    sessions = [
        make_session(f"u{index}", updated_at=now - timedelta(hours=rng.uniform(0, 60)))
        for index in range(20)
    ]
    await save_all(store, sessions)
    config = PruneConfig(max_sessions=max_sessions, ttl_hours=ttl_hours)

    listed = await store.prunable_sessions(config)
    assert len(await store.list_sessions()) == 20  # the dry run deletes nothing
    deleted = await store.prune_sessions(config)

    kept = {summary.id for summary in await store.list_sessions()}
    assert {summary.id for summary in listed} == {s.id for s in sessions} - kept
    assert len(listed) == deleted
    assert [s.updated_at for s in listed] == sorted(s.updated_at for s in listed)
