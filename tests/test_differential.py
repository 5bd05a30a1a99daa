"""SQLite and PostgreSQL give the same answers to the same random sequence of operations.

Each example runs one sequence on a SQLite store and a PostgreSQL store side by side and
compares what every step returns or raises: loads, listings (filtered and paged too),
forks, searches (pages of hits with their snippets), prune counts, document listings, and
errors (type and message), so a difference the backends force (NUL characters, say) must
have been made the same clear error on both.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import URL

from statestore import (
    AgentResponse,
    PruneConfig,
    Session,
    StateStore,
    StateStoreError,
    UserMessage,
)
from statestore.models import format_timestamp
from tests.conftest import empty_tables, run_apart

pytestmark = pytest.mark.postgresql

T0 = datetime(2026, 3, 1, tzinfo=UTC)

SESSION_IDS = st.sampled_from(["a", "b", "c", "d%", "e_'"])
USERS = st.sampled_from(["u1", "u2", "ü 3"])
TEXT = st.text(st.characters(codec="utf-8"), max_size=20)  # NUL included: both must refuse
MOMENTS = st.integers(0, 10_000).map(lambda seconds: T0 + timedelta(seconds=seconds))
CATEGORIES = st.sampled_from(["notes", "memory/notes", "sessions"])
NAMES = st.sampled_from(["n1", "n2", "a%b"])
WORDS = st.sampled_from(["refund", "Refund", "policy", "order", "don't", "état", "42", "x_y"])
CONTENT = TEXT | st.lists(WORDS, min_size=1, max_size=5).map(" ".join)
QUERIES = st.lists(
    WORDS | st.sampled_from(["OR", "-policy", "ref*", '"refund policy"', "(", '"']),
    min_size=1,
    max_size=4,
).map(" ".join)
SEEDS = st.none() | st.sampled_from(["seed-1", "seed-2"])
TIERS = st.none() | st.sampled_from(["gold", 1, 1.0, True])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)

OPERATIONS = st.one_of(
    st.tuples(
        st.just("save"), SESSION_IDS, USERS, st.lists(CONTENT, max_size=3), MOMENTS, SEEDS, TIERS
    ),
    st.tuples(st.just("append"), SESSION_IDS, CONTENT, MOMENTS),
    st.tuples(
        st.just("fork"),
        SESSION_IDS,
        st.none() | st.integers(0, 3),
        st.sampled_from(["f1", "f2", "a"]),
        MOMENTS,
    ),
    st.tuples(
        st.just("search"),
        QUERIES,
        st.none() | USERS,
        st.none() | SESSION_IDS,
        st.integers(1, 4),
    ),
    st.tuples(
        st.just("list_filtered"),
        SEEDS,
        st.none() | st.sampled_from(["a", "b", "f1"]),
        st.none() | MOMENTS,
        st.none() | MOMENTS,
        st.none() | TIERS,
        st.none() | st.integers(1, 3),
    ),
    st.tuples(st.just("update_with"), SESSION_IDS, TEXT),
    st.tuples(st.just("get_or_create"), USERS, SESSION_IDS),
    st.tuples(st.just("load"), SESSION_IDS),
    st.tuples(st.just("list"), st.none() | USERS, st.none() | st.integers(1, 4)),
    st.tuples(st.just("delete"), SESSION_IDS),
    st.tuples(st.just("delete_user"), USERS),
    st.tuples(st.just("prune"), st.integers(0, 4)),
    st.tuples(st.just("save_markdown"), CATEGORIES, NAMES, TEXT),
    st.tuples(st.just("save_json"), st.sampled_from(["notes", "memory/notes"]), NAMES, JSON_VALUES),
    st.tuples(st.just("load_docs"), CATEGORIES, NAMES),
    st.tuples(st.just("list_category"), CATEGORIES),
    st.tuples(st.just("delete_file"), CATEGORIES, NAMES),
    st.tuples(st.just("stats")),
)


async def apply(store: StateStore, operation: tuple[Any, ...]) -> Any:
    """Run one operation and return what an observer sees of it."""
    kind, *args = operation
    if kind == "save":
        session_id, user_id, contents, moment, seed, tier = args
        session = Session(
            id=session_id,
            user_id=user_id,
            created_at=moment,
            updated_at=moment,
            active_seed_id=seed,
            metadata={} if tier is None else {"tier": tier},
        )
        for content in contents:
            session.user_messages.append(UserMessage(content=content, timestamp=moment))
            session.agent_responses.append(
                AgentResponse(content=content, seed_id=user_id, timestamp=moment)
            )
        await store.save_session(session)
        return None
    if kind == "append":
        session_id, content, moment = args
        loaded = await store.load_session(session_id)
        if loaded is None:
            return None
        loaded.user_messages.append(UserMessage(content=content, timestamp=moment))
        loaded.updated_at = max(loaded.updated_at, moment)
        await store.save_session(loaded)
        return len(loaded.user_messages)
    if kind == "fork":
        session_id, up_to, new_id, moment = args
        fork = await store.fork_session(session_id, up_to=up_to, new_id=new_id)
        # The fork is made now, which differs between the backends: give it a time both share.
        fork.updated_at = moment
        fork.forked_at = format_timestamp(moment)
        await store.save_session(fork)
        return fork
    if kind == "search":
        query, user_id, session_id, limit = args
        pages = []
        after = None
        for _ in range(3):
            hits = await store.search_messages(
                query, user_id=user_id, session_id=session_id, limit=limit, after=after
            )
            pages.append([hit.model_copy(update={"entry_id": 0}) for hit in hits])
            if len(hits) < limit:
                break
            after = hits[-1]
        return pages
    if kind == "list_filtered":
        seed, forks_of, created_after, updated_before, tier, limit = args
        return await store.list_sessions(
            active_seed_id=seed,
            forks_of=forks_of,
            created_after=created_after,
            updated_before=updated_before,
            metadata=None if tier is None else {"tier": tier},
            limit=limit,
        )
    if kind == "update_with":
        session_id, value = args
        updated = await store.update_session_with(
            session_id, lambda session: session.metadata.__setitem__("k", value)
        )
        return None if updated is None else updated.metadata
    if kind == "get_or_create":
        user_id, session_id = args
        session = await store.get_or_create_session(user_id, session_id)
        if session.created_at > T0 + timedelta(days=1):  # new: give it a time both share
            session.created_at = session.updated_at = T0
            await store.save_session(session)
        return session.id, session.user_id, len(session.user_messages)
    if kind == "load":
        return await store.load_session(args[0])
    if kind == "list":
        user_id, limit = args
        return await store.list_sessions(user_id=user_id, limit=limit)
    if kind == "delete":
        return await store.delete_session(args[0])
    if kind == "delete_user":
        return await store.delete_user(args[0])
    if kind == "prune":
        return await store.prune_sessions(PruneConfig(max_sessions=args[0], ttl_hours=0))
    if kind == "save_markdown":
        return await store.save_markdown(*args)
    if kind == "save_json":
        return await store.save_json(*args)
    if kind == "load_docs":
        category, name = args
        return await store.load_markdown(category, name), await store.load_json(category, name)
    if kind == "list_category":
        return await store.list_category(args[0])
    if kind == "delete_file":
        return await store.delete_file(*args)
    assert kind == "stats"
    stats = await store.stats(days=1)
    return stats.model_copy(update={"days": []})  # "today" differs from the data's days


async def observe(store: StateStore, operation: tuple[Any, ...]) -> Any:
    """Return an operation's outcome, or its error as (type, message)."""
    try:
        return await apply(store, operation)
    except (StateStoreError, ValueError) as exc:
        return type(exc).__name__, str(exc)


def reset(sqlite_path: Path, postgresql: URL) -> None:
    """Empty both databases."""
    with sqlite3.connect(sqlite_path) as connection:
        connection.executescript(
            "PRAGMA foreign_keys = ON; DELETE FROM sessions; DELETE FROM documents; "
            "UPDATE statestore_counters SET value = 0;"
        )
    run_apart(empty_tables(postgresql))


async def _open_both(sqlite_path: Path, postgresql: URL) -> tuple[StateStore, StateStore]:
    return await StateStore.open(sqlite_path), await StateStore.open(postgresql)


def side_by_side(
    sqlite_path: Path,
    postgresql: URL,
    operations: list[tuple[Any, ...]],
    check: Callable[[int, tuple[Any, ...], Any], None] = lambda step, operation, seen: None,
) -> None:
    """Run ``operations`` on empty SQLite and PostgreSQL stores, step by step; each step
    must give the same outcome on both, and ``check`` accepts SQLite's."""
    with asyncio.Runner() as runner:
        on_sqlite, on_postgresql = runner.run(_open_both(sqlite_path, postgresql))
        try:
            reset(sqlite_path, postgresql)
            for step, operation in enumerate(operations):
                expected = runner.run(observe(on_sqlite, operation))
                check(step, operation, expected)
                got = runner.run(observe(on_postgresql, operation))
                assert got == expected, (step, operation)
        finally:
            runner.run(on_sqlite.close())
            runner.run(on_postgresql.close())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=st.lists(OPERATIONS, min_size=1, max_size=25))
def test_both_backends_answer_alike(
    operations: list[tuple[Any, ...]], tmp_path: Path, postgresql_url: URL
) -> None:
    """Every step of a random sequence returns (or raises) the same on SQLite and PostgreSQL."""
    side_by_side(tmp_path / "differential.db", postgresql_url, operations)


def test_nul_characters_are_the_same_error_on_both(tmp_path: Path, postgresql_url: URL) -> None:
    """A NUL character, which PostgreSQL cannot store, is refused alike on both backends."""
    operations: list[tuple[Any, ...]] = [
        ("save_markdown", "notes", "n1", "a\x00b"),
        ("save", "a", "u1", ["x\x00"], T0, None, None),
        ("save_json", "notes", "n1", {"k": "\x00"}),
    ]

    def refused(step: int, operation: tuple[Any, ...], seen: Any) -> None:
        assert seen[0] == "InvalidDataError", seen
        assert "NUL" in seen[1]

    side_by_side(tmp_path / "nul.db", postgresql_url, operations, refused)


def test_searches_forks_and_filters_answer_alike(tmp_path: Path, postgresql_url: URL) -> None:
    """A scripted sequence whose searches, forks and filtered listings find something gives
    the same (non-empty) answers on both backends."""
    operations: list[tuple[Any, ...]] = [
        ("save", "a", "u1", ["refund policy", "don't order", "état 42"], T0, "seed-1", "gold"),
        ("save", "b", "u2", ["Refund x_y", "policy"], T0 + timedelta(1), "seed-2", 1),
        ("fork", "a", 2, "f1", T0 + timedelta(2)),
        ("append", "f1", "refund again", T0 + timedelta(3)),
        ("search", "refund", None, None, 2),
        ("search", '"refund policy" OR état -order', "u1", None, 3),
        ("search", "ref* OR 42", None, "a", 1),
        ("list_filtered", "seed-1", None, None, None, None, None),
        ("list_filtered", None, "a", None, None, "gold", 1),
        ("list_filtered", None, None, T0 - timedelta(1), T0 + timedelta(5), 1.0, None),
        ("delete", "a"),
        ("search", "refund", None, None, 4),
        ("list_filtered", None, "a", None, None, None, None),
    ]

    def found_something(step: int, operation: tuple[Any, ...], seen: Any) -> None:
        if operation[0] in ("search", "list_filtered", "fork"):
            assert seen, (step, operation)
            assert seen != [[]], (step, operation)

    side_by_side(tmp_path / "features.db", postgresql_url, operations, found_something)
