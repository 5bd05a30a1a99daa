"""Every acknowledged save lands whole, whatever its callers, copies, cancels and prunes do.

Worker processes (``tests/ack_workers.py``) drive seeded random saves, copies, pickles,
in-place edits, fire-and-forget and cancelled saves, deletes, ``update_session_with`` and
prunes by TTL on one database at once, logging every write with the state it captured at
its call; a trigger makes the database reject some of the writes. The check then holds
each stored session to that log: the state of its last acknowledged write or a later one,
whole; missing only where a write deleted it or a stale state let a prune take it; and,
when no write failed but the rejected ones, exactly the state of its last write. Loads
while the workers run are held to the log too, and the rows to what a whole save leaves.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import URL, text

from statestore import StateStore

from .ack_workers import (
    COPIES,
    EDITS,
    HOW,
    OPERATIONS,
    POISON_CLEANUP,
    POISON_TRIGGERS,
    PRUNE,
    is_stale,
    judge,
)
from .conftest import run_worker_module, server_dsn

ROW_CHECKS = {
    "session counts that are not its rows": """
        SELECT id FROM sessions s
        WHERE message_count <> (SELECT count(*) FROM messages m WHERE m.session_id = s.id)
           OR response_count <> (SELECT count(*) FROM responses r WHERE r.session_id = s.id)
    """,
    "message positions with gaps": """
        SELECT session_id FROM messages GROUP BY session_id
        HAVING min(position) <> 0 OR max(position) <> count(*) - 1
    """,
    "response positions with gaps": """
        SELECT session_id FROM responses GROUP BY session_id
        HAVING min(position) <> 0 OR max(position) <> count(*) - 1
    """,
    "messages of no session": """
        SELECT DISTINCT session_id FROM messages
        WHERE session_id NOT IN (SELECT id FROM sessions)
    """,
    "responses of no session": """
        SELECT DISTINCT session_id FROM responses
        WHERE session_id NOT IN (SELECT id FROM sessions)
    """,
    "a session counter that is not the row count": """
        SELECT 1 WHERE (SELECT sum(value) FROM statestore_counters WHERE name LIKE 'sessions/%')
            <> (SELECT count(*) FROM sessions)
    """,
}


@pytest.fixture
async def database(target: Path | URL) -> AsyncIterator[Path | URL]:
    """Yield the test's migrated database, rejecting poisoned sessions while the test runs."""
    async with StateStore.open(target):
        pass
    if isinstance(target, Path):
        with contextlib.closing(sqlite3.connect(target)) as connection:
            for statement in POISON_TRIGGERS["sqlite"]:
                connection.execute(statement)
            connection.commit()
        yield target
        return
    # The test run's shared database: the trigger goes again after the test.
    connection = await asyncpg.connect(server_dsn(target.database))
    try:
        for statement in POISON_TRIGGERS["postgresql"]:
            await connection.execute(statement)
        yield target
    finally:
        await connection.execute(POISON_CLEANUP)
        await connection.close()


def run_workers(
    database: Path | URL,
    workers: int,
    coroutines: int,
    seconds: float,
    seed: int,
    out: Path,
    stores: int = 1,
) -> list[dict[str, Any]]:
    """Run ``workers`` worker processes at once on ``database``; return their logs.

    Each process sends its operations through ``stores`` stores open on the database.
    """
    where = str(database) if isinstance(database, Path) else database.render_as_string(False)
    arguments = [where, str(workers), str(coroutines), str(seconds), str(seed), str(out)]
    run_worker_module("ack_workers", *arguments, str(stores), timeout=seconds + 120)
    return [json.loads((out / f"ack-{worker}.json").read_text()) for worker in range(workers)]


def check_sqlite_file(db_path: Path) -> list[str]:
    """Return what SQLite finds wrong with the file."""
    with contextlib.closing(sqlite3.connect(db_path)) as connection:
        integrity = connection.execute("PRAGMA integrity_check").fetchall()
        foreign_keys = connection.execute("PRAGMA foreign_key_check").fetchall()
    problems = [] if integrity == [("ok",)] else [f"integrity_check: {integrity}"]
    return problems + ([f"foreign_key_check: {foreign_keys}"] if foreign_keys else [])


async def check_rows(store: StateStore) -> list[str]:
    """Return rows that no whole save leaves behind, on either backend."""
    problems = []
    async with store.engine.connect() as connection:
        for problem, query in ROW_CHECKS.items():
            rows = (await connection.execute(text(query))).all()
            if rows:
                problems.append(f"{problem}: {[tuple(row) for row in rows[:10]]}")
    return problems


async def check_stored(
    database: Path | URL, results: list[dict[str, Any]], *, strict: bool
) -> tuple[list[str], Counter[str]]:
    """Hold every session to its log; then a prune must take exactly the stale ones."""
    problems: list[str] = []
    seen: Counter[str] = Counter()
    logs = {sid: ops for result in results for sid, ops in result["sessions"].items()}
    async with StateStore.open(database, migrate=False) as store:
        stored: dict[str, dict[str, Any] | None] = {}
        for session_id, ops in logs.items():
            loaded = await store.load_session(session_id)
            stored[session_id] = None if loaded is None else loaded.model_dump(mode="json")
            problem = judge(ops, stored[session_id], strict=strict)
            if problem:
                problems.append(f"{session_id}: {problem}")
        problems += await check_rows(store)
        listed = {summary.id for summary in await store.list_sessions()}
        if listed - logs.keys():
            problems.append(f"sessions nobody saved: {sorted(listed - logs.keys())}")
        await store.prune_sessions(PRUNE)
        for session_id, state in stored.items():
            kept = await store.load_session(session_id) is not None
            if state is None:
                seen["missing"] += 1
            elif is_stale(state):
                seen["stale"] += 1
                if kept:
                    problems.append(f"{session_id}: a prune kept it, stored stale")
            else:
                seen["fresh"] += 1
                if not kept:
                    problems.append(f"{session_id}: a prune deleted it, stored fresh")
    return problems, seen


@pytest.mark.parametrize(
    ("workers", "coroutines", "seconds", "seed", "stores"),
    [
        pytest.param(2, 6, 4, 1, 1, id="2x6x4s"),
        pytest.param(2, 6, 3, 3, 2, id="2x6x3s-two-stores-each"),
        pytest.param(4, 12, 120, 2, 1, id="4x12x120s", marks=pytest.mark.soak),
        pytest.param(4, 12, 60, 4, 3, id="4x12x60s-three-stores", marks=pytest.mark.soak),
    ],
)
async def test_acknowledged_saves_land_whole_in_call_order(
    database: Path | URL,
    backend: str,
    tmp_path: Path,
    workers: int,
    coroutines: int,
    seconds: float,
    seed: int,
    stores: int,
) -> None:
    """Writes from processes at once leave each session its last acknowledged state or later."""
    results = run_workers(database, workers, coroutines, seconds, seed, tmp_path, stores)

    errors = [error for result in results for error in result["errors"]]
    failed = [failure for result in results for failure in result["failed_writes"]]
    report = {
        "seen wrong while running": [v for result in results for v in result["violations"]],
        "errors": errors,
        "writes that failed": failed,
    }
    report["stored wrong"], seen = await check_stored(
        database, results, strict=not errors and not failed
    )
    if backend == "sqlite":
        assert isinstance(database, Path)
        report["SQLite file"] = check_sqlite_file(database)
    wrong = {what: found for what, found in report.items() if found}
    assert not wrong, f"seed {seed}:\n" + "\n".join(
        f"{what} ({len(found)}):\n  " + "\n  ".join(found[:8]) for what, found in wrong.items()
    )

    # The run was the one meant: every kind of operation, every way of treating a write,
    # every edit and copy ran, and saves appended, failed whole and were refused.
    counts: Counter[str] = Counter()
    for result in results:
        counts.update(result["counts"])
    assert {name for name in OPERATIONS if counts[name]} == set(OPERATIONS), counts
    for kind in ("save", "update", "delete"):
        assert {how for how in HOW if counts[f"{kind}:{how}"]} == set(HOW), counts
    assert {name for name in EDITS if counts[f"edit:{name}"]} == set(EDITS), counts
    for what in ("save:may append only", "pruned", "save:refused by the call"):
        assert counts[what], (what, counts)
    for what in ("save:poisoned, failed", "write failed: poisoned"):
        assert counts[what], (what, counts)
    ops = [op for result in results for log in result["sessions"].values() for op in log]
    copied = Counter(op.get("source") for op in ops)
    assert all(copied[method] for method in COPIES), copied
    acked = Counter((op["kind"], op["acked"]) for op in ops)
    assert all(acked[kind, flag] for kind in ("save", "update") for flag in (True, False)), acked
    assert seen["fresh"], seen
