"""PostgreSQL under faults and races: server connections killed under load, prunes racing saves.

Terminating every backend of the test's database (``pg_terminate_backend``) stands in for a
server restart, which would disturb everything else sharing the server.
"""

from __future__ import annotations

import asyncio
import json
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import URL

from statestore import AgentResponse, PruneConfig, Session, StateStore, UserMessage, migrate
from statestore.prune import PRUNE_BATCH

from .conftest import server_dsn

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.postgresql

LINE_TIMEOUT = 60.0
"""Seconds to wait for a worker's next line before calling it hung."""


# -- server connections killed under load -----------------------------------------------------

WORKERS = 4
COROUTINES = 6
KILLS = 3
"""Kills while the workers save (one more follows while they are idle)."""
KILL_EVERY = 0.8
"""Seconds between two kills (the first comes this long after every worker is saving)."""
AFTER_LAST_KILL = 1.5
"""Seconds the workers go on saving after the last kill."""


class Worker:
    """A ``tests.pg_fault_workers save`` process, its output read by threads."""

    def __init__(self, url: URL, worker: int) -> None:
        arguments = {"worker": worker, "coroutines": COROUTINES, "pause": 0.002}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-W",
                "error",
                "-m",
                "tests.pg_fault_workers",
                "save",
                url.render_as_string(hide_password=False),
                json.dumps(arguments),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True),
            threading.Thread(
                target=lambda stream: self.stderr.extend(stream),
                args=(self.process.stderr,),
                daemon=True,
            ),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self) -> str:
        """Return the worker's next line of output."""
        line = self.lines.get(timeout=LINE_TIMEOUT)
        assert line is not None, f"the worker exited: {''.join(self.stderr)}"
        return line

    def send(self, command: str) -> None:
        """Send the worker one command line."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def stop(self) -> dict[str, Any]:
        """Tell the worker to stop; return what it reports."""
        self.send("stop")
        report: dict[str, Any] = json.loads(self.next_line())
        assert self.process.wait(timeout=LINE_TIMEOUT) == 0, "".join(self.stderr)
        self.close()
        return report

    def close(self) -> None:
        """End the process if it is still running (after a failed test); close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=LINE_TIMEOUT)
        for reader in self._readers:
            reader.join(timeout=LINE_TIMEOUT)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None and not stream.closed:
                stream.close()


async def terminate_backends(database: str) -> int:
    """Terminate every server connection to ``database`` but this one; return how many.

    Each backend is waited for (up to 5 s) until it has exited: without the timeout,
    ``pg_terminate_backend`` returns as soon as it has signalled, and a backend still
    exiting after the kill's window could fail a save called after it.
    """
    connection = await asyncpg.connect(server_dsn())
    try:
        killed = await connection.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
            "FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await connection.close()
    return int(killed)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Collect started workers; kill any still running when the test ends."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.close()


def test_saves_survive_terminated_backends(fresh_postgresql: URL, workers: list[Worker]) -> None:
    """Backends killed under load fail saves typed, lose no acknowledged save, and heal."""
    asyncio.run(migrate.upgrade(fresh_postgresql))
    database = fresh_postgresql.database
    assert database is not None
    workers.extend(Worker(fresh_postgresql, index) for index in range(WORKERS))
    for worker in workers:
        assert worker.next_line() == "ready"
    kills: list[tuple[float, float]] = []  # (before, after) each pg_terminate_backend round
    killed: list[int] = []

    def kill() -> None:
        before = time.time()
        killed.append(asyncio.run(terminate_backends(database)))
        kills.append((before, time.time()))

    for _ in range(KILLS):
        time.sleep(KILL_EVERY)
        kill()
    # Once more with every worker idle, its pool full of connections the server has
    # closed, as after a server restart: the next saves must not fail for it.
    for worker in workers:
        worker.send("pause")
    for worker in workers:
        assert worker.next_line() == "paused"
    kill()
    for worker in workers:
        worker.send("resume")
    last_kill = kills[-1][1]
    time.sleep(AFTER_LAST_KILL)
    reports = [worker.stop() for worker in workers]

    # Every kill under load met connections of every worker; the idle one met pooled ones.
    assert all(count >= WORKERS for count in killed[:KILLS]), killed
    assert killed[KILLS] >= 1, killed
    log = [entry for report in reports for entry in report["log"]]
    failures = [entry for entry in log if entry["error"] is not None]
    # A save whose connection was cut before its commit is run again on a new connection;
    # one cut while committing fails, and as a StateStoreError, not as a raw asyncpg,
    # OSError or SQLAlchemy error.
    untyped = {(e["error"], e["cause"]) for e in failures if not e["statestore_error"]}
    assert untyped == set()
    # Only a save committing during a kill fails: one called after it gets a live connection.
    unexplained = [
        entry
        for entry in failures
        if not any(entry["called"] <= after and entry["done"] >= before for before, after in kills)
    ]
    assert unexplained == [], "; ".join(
        f"{e['session']} called {e['called'] - last_kill:+.3f} s from the last kill failed: "
        f"{e['error']} from {e['cause']}"
        for e in unexplained[:5]
    )
    for index, report in enumerate(reports):
        # The same store, never reopened, saves again after the last kill.
        after = [entry for entry in report["log"] if entry["called"] > last_kill]
        assert sum(entry["error"] is None for entry in after) >= COROUTINES, index
    for worker in workers:
        assert worker.stderr == [], "".join(worker.stderr)

    async def stored() -> dict[str, Any]:
        async with StateStore.open(fresh_postgresql, migrate=False) as store:
            sessions: dict[str, Any] = {}
            for report in reports:
                for session_id in report["states"]:
                    loaded = await store.load_session(session_id)
                    dumped = None if loaded is None else loaded.model_dump(mode="json")
                    sessions[session_id] = dumped
            return sessions

    # Each session is stored as its last acknowledged save left it, or as a later save that
    # failed after all (one whose commit went through but whose answer was lost).
    stored_states = asyncio.run(stored())
    wrong = [
        session_id
        for report in reports
        for session_id, states in report["states"].items()
        if stored_states[session_id] not in [states["acknowledged"], *states["later"]]
    ]
    assert wrong == []


# -- prunes racing saves (READ COMMITTED) ------------------------------------------------------

OLD = timedelta(days=30)
"""How long ago the sessions a prune may take were last updated."""
ROUNDS = 4
ROUND_SESSIONS = PRUNE_BATCH
"""Old sessions per round: one prune batch, so that every refresh is of a session it picks."""
REFRESHERS = 12
"""Coroutines saving sessions fresh while a prune runs (the pool has 15 connections)."""
UNDER_WAY = 2 * REFRESHERS
"""Refreshes acknowledged before a round's prune starts: the refreshers are all busy."""
MAX_PRUNES = 50
"""At most this many prunes a round."""


def write_old_sessions(directory: Path, user_id: str, count: int) -> dict[str, datetime]:
    """Write a file store of ``count`` sessions updated 30 days ago, 1 ms apart.

    Return each session's id and ``updated_at``. Importing it is much faster than saving
    the sessions one by one, and importing it again after a prune brings them all back.
    """
    start = datetime.now(UTC) - OLD
    written = {f"{user_id}-{n:05d}": start + timedelta(milliseconds=n) for n in range(count)}
    (directory / "sessions").mkdir(parents=True)
    for session_id, moment in written.items():
        session = Session(
            id=session_id,
            user_id=user_id,
            created_at=moment,
            updated_at=moment,
            # Rows for the delete to cascade to, so that it takes a little longer.
            user_messages=[UserMessage(content=f"q{k}", timestamp=moment) for k in range(2)],
            agent_responses=[AgentResponse(content=f"a{k}", timestamp=moment) for k in range(2)],
        )
        (directory / "sessions" / f"{session_id}.json").write_text(session.model_dump_json())
    return written


async def restore_old_sessions(
    store: StateStore, directory: Path, user_id: str, count: int = ROUND_SESSIONS
) -> None:
    """Delete the user's sessions, then import the ``count`` old ones again."""
    await store.delete_user(user_id)
    report = await store.import_directory(directory)
    assert report.skipped == []
    assert report.sessions_added == count


class Refreshes:
    """Coroutines that load old sessions, set ``updated_at`` to now, and save them.

    Each session is tried once, in random order. No save is called after :meth:`stop`.
    """

    def __init__(self, store: StateStore, session_ids: list[str], seed: int) -> None:
        self.store = store
        self.candidates = list(session_ids)
        self.rng = random.Random(seed)
        self.stopped = False
        self.called: dict[str, datetime] = {}
        """The ``updated_at`` of each refresh called (acknowledged or not yet)."""
        self.acknowledged: dict[str, datetime] = {}
        """The ``updated_at`` of each acknowledged refresh."""
        self.states: dict[str, dict[str, Any]] = {}
        """The state (``model_dump(mode="json")`` at the call) of each acknowledged refresh."""
        self._under_way = asyncio.Event()
        self.tasks = [asyncio.create_task(self._refresh()) for _ in range(REFRESHERS)]

    async def _refresh(self) -> None:
        while self.candidates and not self.stopped:
            session_id = self.candidates.pop(self.rng.randrange(len(self.candidates)))
            session = await self.store.load_session(session_id)
            if session is None or self.stopped:
                continue  # pruned already
            session.updated_at = datetime.now(UTC)
            state = session.model_dump(mode="json")
            self.called[session_id] = session.updated_at
            await self.store.save_session(session)
            self.acknowledged[session_id] = session.updated_at
            self.states[session_id] = state
            if len(self.acknowledged) >= UNDER_WAY:
                self._under_way.set()
        self._under_way.set()

    async def under_way(self) -> None:
        """Wait until the refreshers are all busy (or have run out of sessions)."""
        await asyncio.wait_for(self._under_way.wait(), timeout=LINE_TIMEOUT)

    def stop(self) -> None:
        """Call no more saves from now on."""
        self.stopped = True

    async def finish(self) -> None:
        """Stop, and wait for the saves in flight (re-raising any refresher's error)."""
        self.stop()
        await asyncio.gather(*self.tasks)


async def test_ttl_prune_never_deletes_a_session_a_racing_save_made_fresh(
    store: StateStore, tmp_path: Path
) -> None:
    """TTL prunes racing saves never delete a session after a save made it fresh."""
    config = PruneConfig(max_sessions=0, ttl_hours=24)
    old = write_old_sessions(tmp_path, "ttl", ROUND_SESSIONS)
    for round_ in range(ROUNDS):
        await restore_old_sessions(store, tmp_path, "ttl")
        refreshes = Refreshes(store, list(old), seed=round_)
        await refreshes.under_way()
        for _ in range(MAX_PRUNES):  # until every session still old is gone
            if not await store.prune_sessions(config):
                break
        await refreshes.finish()
        await store.prune_sessions(config)  # alone now
        kept = {summary.id for summary in await store.list_sessions(user_id="ttl")}
        lost = sorted(refreshes.acknowledged.keys() - kept)
        assert lost == [], (
            f"round {round_}: {len(lost)} of {len(refreshes.acknowledged)} sessions "
            f"pruned after a save made them fresh, such as {lost[:3]}"
        )
        assert kept == refreshes.acknowledged.keys()  # and every session still old went
        for session_id, state in refreshes.states.items():
            loaded = await store.load_session(session_id)
            assert loaded is not None
            assert loaded.model_dump(mode="json") == state


async def test_count_prune_racing_saves_never_deletes_a_session_newer_than_one_it_keeps(
    store: StateStore, tmp_path: Path
) -> None:
    """A count prune racing saves deletes no session newer than one it keeps."""
    keep = ROUND_SESSIONS // 5
    config = PruneConfig(max_sessions=keep, ttl_hours=0)
    old = write_old_sessions(tmp_path, "count", ROUND_SESSIONS)
    oldest_first = list(old)
    for round_ in range(ROUNDS):
        await restore_old_sessions(store, tmp_path, "count")
        # Refresh only sessions the prune would delete (the oldest beyond ``keep``).
        refreshes = Refreshes(store, oldest_first[: ROUND_SESSIONS - keep], seed=round_)
        await refreshes.under_way()
        await store.prune_sessions(config)
        refreshes.stop()
        # Each session's updated_at as of the prune's end: for a deleted one, its last
        # acknowledged save's; for a kept one, its newest save's called by then (one still
        # in flight may have committed before the prune looked).
        acknowledged, called = dict(refreshes.acknowledged), dict(refreshes.called)
        await refreshes.finish()
        kept = {summary.id for summary in await store.list_sessions(user_id="count")}
        deleted = old.keys() - kept
        assert deleted, "the prune deleted nothing: the test proves nothing"
        oldest_kept = min(called.get(session_id, old[session_id]) for session_id in kept)
        newer = sorted(
            session_id
            for session_id in deleted
            if acknowledged.get(session_id, old[session_id]) > oldest_kept
        )
        assert newer == [], (
            f"round {round_}: {len(newer)} deleted sessions were saved more recently than a "
            f"kept one (last updated {oldest_kept.isoformat()}), such as {newer[:3]}"
        )


# -- a prune that a racing save makes skip one session ------------------------------------------


async def wait_for_lock_waits(connection: asyncpg.Connection, database: str, count: int) -> None:
    """Wait until ``count`` connections to ``database`` wait for a lock."""
    for _ in range(1000):
        # A transaction sees one snapshot of the activity statistics unless it clears it.
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        waiting = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            database,
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} connections did not come to wait for a lock")


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(PruneConfig(max_sessions=0, ttl_hours=24), id="ttl"),
        pytest.param(PruneConfig(max_sessions=100, ttl_hours=0), id="count"),
    ],
)
async def test_prune_that_skips_a_session_saved_meanwhile_still_deletes_the_others(
    store: StateStore, postgresql_url: URL, tmp_path: Path, config: PruneConfig
) -> None:
    """A prune whose first batch skips a session saved fresh meanwhile deletes all it should."""
    count = PRUNE_BATCH + 500
    old = write_old_sessions(tmp_path, "skip", count)
    await restore_old_sessions(store, tmp_path, "skip", count)
    refreshed = await store.load_session(list(old)[10])  # in the prune's first batch
    assert refreshed is not None
    refreshed.updated_at = datetime.now(UTC)
    database = postgresql_url.database
    assert database is not None
    blocker = await asyncpg.connect(server_dsn(database))
    racing: list[asyncio.Future[Any]] = []
    try:
        # Hold the session's row so that the save, then the prune's first delete, queue on it.
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", refreshed.id)
        racing.append(asyncio.ensure_future(store.save_session(refreshed)))
        await wait_for_lock_waits(blocker, database, 1)
        racing.append(asyncio.ensure_future(store.prune_sessions(config)))
        await wait_for_lock_waits(blocker, database, 2)
        await transaction.rollback()
    finally:
        await blocker.close()  # lets the save and the prune go on, if the test failed
        outcomes = await asyncio.wait_for(asyncio.gather(*racing), timeout=LINE_TIMEOUT)
    deleted = outcomes[1]
    kept = {summary.id for summary in await store.list_sessions()}
    assert refreshed.id in kept  # the save made it fresh, so the prune kept it ...
    # ... and deleted every other session it should have: all the rest for the TTL, all
    # but the newest for the count.
    assert len(kept) == max(1, config.max_sessions), f"{deleted} deleted, {len(kept)} kept"
