"""Many processes and coroutines on one SQLite file: nothing fails, nothing is lost."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from statestore import StateStore

from .conftest import run_worker_module
from .fault_workers import LOAD_PRUNE, OPERATIONS, SHARED_SESSIONS


def run_load(
    db_path: Path, processes: int, coroutines: int, seconds: float
) -> list[dict[str, Any]]:
    """Run ``processes`` load workers at once on ``db_path``; return their results."""
    arguments = [str(processes), str(coroutines), str(seconds), "6", str(db_path.parent)]
    # Generous: a worker stuck on a lock would run into busy_timeout (30 s) and beyond.
    run_worker_module("fault_workers", "load", str(db_path), *arguments, timeout=seconds + 120)
    return [
        json.loads(db_path.with_name(f"load-{worker}.json").read_text())
        for worker in range(processes)
    ]


def check_integrity(db_path: Path) -> None:
    """Assert SQLite finds the file sound and the session counter matches the rows."""
    with contextlib.closing(sqlite3.connect(db_path)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        [(rows,)] = connection.execute("SELECT count(*) FROM sessions").fetchall()
        [(counted,)] = connection.execute(
            "SELECT sum(value) FROM statestore_counters WHERE name LIKE 'sessions/%'"
        ).fetchall()
        assert counted == rows


async def check_everything_acknowledged_is_stored(
    db_path: Path, results: list[dict[str, Any]]
) -> None:
    """Assert every acknowledged write is stored exactly, and nothing else is."""
    async with StateStore.open(db_path) as store:
        expected_ids: set[str] = {f"shared-{k}" for k in range(SHARED_SESSIONS)}
        for result in results:
            for session_id, saved in result["sessions"].items():
                loaded = await store.load_session(session_id)
                assert loaded is not None, session_id
                assert loaded.model_dump_json() == saved
            for session_id, user_id in result["created"].items():
                loaded = await store.load_session(session_id)
                assert loaded is not None, session_id
                assert loaded.user_id == user_id
            for category, value in result["documents"].items():
                assert await store.load_json(category, "doc") == value
            expected_ids |= result["sessions"].keys() | result["created"].keys()
        for k in range(SHARED_SESSIONS):
            shared = await store.load_session(f"shared-{k}")
            assert shared is not None
            appended = Counter(m.content for m in shared.user_messages)
            assert appended == Counter(t for r in results for t in r["tokens"][f"shared-{k}"])
        assert await store.prune_sessions(LOAD_PRUNE) >= 0
        for result in results:
            for session_id in result["stale"]:
                assert await store.load_session(session_id) is None  # a prune took each one
        assert {s.id for s in await store.list_sessions()} == expected_ids


@pytest.mark.parametrize(
    ("processes", "coroutines", "seconds"),
    [
        pytest.param(4, 16, 10, id="4x16x10s"),
        pytest.param(8, 32, 180, id="8x32x180s", marks=pytest.mark.soak),
    ],
)
async def test_concurrent_processes_lose_nothing_and_never_lock(
    db_path: Path, processes: int, coroutines: int, seconds: float
) -> None:
    """Processes x coroutines writing one file for a while: no error, every ack stored."""
    results = run_load(db_path, processes, coroutines, seconds)

    errors = [error for result in results for error in result["errors"]]
    assert not [e for e in errors if "locked" in e], "database is locked"
    assert errors == []
    operations: Counter[str] = Counter()
    for result in results:
        operations.update(result["operations"])
    # Every kind of operation ran, in every coroutine on average more than once.
    assert set(operations) == set(OPERATIONS)
    assert operations.total() > processes * coroutines
    check_integrity(db_path)
    await check_everything_acknowledged_is_stored(db_path, results)
    check_integrity(db_path)
