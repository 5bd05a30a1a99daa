"""A writer process killed with SIGKILL, again and again: nothing acknowledged is lost.

Also the durability setting: the ``synchronous`` level chosen is the one every connection
runs with (a crash only keeps what the level promises if the connections really use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from statestore import StateStore, _runner
from statestore._engine import Synchronous

from .conftest import Traced
from .fault_workers import CrashStates, crash_ids

ROOT = Path(__file__).resolve().parents[1]

LINE_TIMEOUT = 60.0
"""Seconds to wait for the next line from a worker before calling it hung."""


class Zygote:
    """A ``tests.fault_workers zygote`` process: forks one crash writer per run."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fault_workers", "zygote"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float = LINE_TIMEOUT) -> str:
        line = self.lines.get(timeout=timeout)
        assert line is not None, "the zygote exited"
        return line

    def start(self, db_path: Path, run: int, seed: int, synchronous: Synchronous) -> int:
        assert self.process.stdin is not None
        self.process.stdin.write(f"crash {db_path} {run} {seed} {synchronous}\n")
        self.process.stdin.flush()
        line = self.next_line()
        assert line.startswith("pid "), line
        return int(line.split()[1])

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=LINE_TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(timeout=LINE_TIMEOUT)
            assert self.process.stdout is not None
            self.process.stdout.close()


class Run:
    """The lines one crash writer printed: what it began to write, what was acknowledged."""

    def __init__(self) -> None:
        self.acked: dict[str, int] = {}
        self.begun: dict[str, int] = {}
        self.acks = 0
        self.exited = False

    def take(self, line: str, pid: int) -> None:
        word, *rest = line.split()
        if word == "begin":
            self.begun[rest[0]] = int(rest[1])
        elif word == "ack":
            assert self.begun[rest[0]] == int(rest[1])
            self.acked[rest[0]] = int(rest[1])
            self.acks += 1
        elif word == "exited":
            assert int(rest[0]) == pid
            # Killed by our SIGKILL, never an exit of its own (an error or a hang).
            assert os.WIFSIGNALED(int(rest[1])), line
            assert os.WTERMSIG(int(rest[1])) == signal.SIGKILL, line
            self.exited = True
        else:
            assert word == "open", line


def kill_at_random_point(
    zygote: Zygote, pid: int, run: Run, rng: random.Random, *, early: bool = False
) -> None:
    """SIGKILL the writer after a random delay or a random number of acknowledged saves."""
    if early or rng.random() < 0.3:
        deadline = time.monotonic() + rng.uniform(0, 0.3)  # may land in open or migration
        while (left := deadline - time.monotonic()) > 0:
            try:
                run.take(zygote.next_line(timeout=left), pid)
            except queue.Empty:
                break
    else:
        wanted = rng.randint(1, 60)
        while run.acks < wanted:
            run.take(zygote.next_line(), pid)
        time.sleep(rng.uniform(0, 0.005))
    os.kill(pid, signal.SIGKILL)
    while not run.exited:
        run.take(zygote.next_line(), pid)


def check_file(db_path: Path) -> None:
    """Assert the file opens and SQLite finds it sound, foreign keys and counter included."""
    with contextlib.closing(sqlite3.connect(db_path)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        if "statestore_counters" in tables:  # a kill during the first migration leaves none
            [(rows,)] = connection.execute("SELECT count(*) FROM sessions").fetchall()
            [(counted,)] = connection.execute(  # before revision 0004, one row 'sessions'
                "SELECT sum(value) FROM statestore_counters "
                "WHERE name = 'sessions' OR name LIKE 'sessions/%'"
            ).fetchall()
            assert counted == rows


async def check_sessions(
    db_path: Path, run: Run, stored: dict[str, int], states: CrashStates
) -> None:
    """Assert each session is exactly a state that was saved, at least the last acknowledged.

    ``stored`` holds the version each session had after the previous kill; it is updated.
    """
    async with StateStore.open(db_path) as store:
        for session_id in crash_ids():
            floor = run.acked.get(session_id, stored.get(session_id, 0))
            possible = {floor, run.begun.get(session_id, floor)}
            loaded = await store.load_session(session_id)
            if loaded is None:
                assert floor == 0, f"{session_id} acknowledged at {floor}, now missing"
                continue
            version = loaded.metadata["version"]
            assert version in possible, (session_id, version, possible)
            assert loaded.model_dump_json() == states.state(session_id, version), session_id
            stored[session_id] = version


@pytest.mark.parametrize(
    "kills",
    [pytest.param(24, id="24-kills"), pytest.param(300, id="300-kills", marks=pytest.mark.soak)],
)
async def test_sigkilled_writer_loses_no_acknowledged_save(db_path: Path, kills: int) -> None:
    """After each SIGKILL the file is sound, acked saves are there, no save is half-stored."""
    rng = random.Random(20260601 + kills)
    states = CrashStates()
    stored: dict[str, int] = {}
    zygote = Zygote()
    try:
        for number in range(kills):
            synchronous: Synchronous = "FULL" if number % 2 == 0 else "NORMAL"
            pid = zygote.start(db_path, number, rng.randrange(10**9), synchronous)
            run = Run()
            # The first kill comes early: likely during the first migration.
            kill_at_random_point(zygote, pid, run, rng, early=number == 0)

            check_file(db_path)
            await check_sessions(db_path, run, stored, states)
            check_file(db_path)
    finally:
        zygote.close()
    # Every session was stored at some point, so the checks above were not vacuous.
    assert len(stored) == len(crash_ids())


# -- the durability setting ---------------------------------------------------------------

SYNCHRONOUS_LEVELS = {"FULL": 2, "NORMAL": 1}


@pytest.mark.parametrize("level", ["FULL", "NORMAL"])
async def test_every_connection_runs_the_chosen_synchronous_level(
    db_path: Path, traced: Traced, monkeypatch: pytest.MonkeyPatch, level: Synchronous
) -> None:
    """Writer, readers, checkpointer and engine connections all run the chosen level."""
    monkeypatch.setattr(_runner, "CHECKPOINT_EVERY", 2)  # so the checkpointer connects
    async with StateStore.open(db_path, synchronous=level) as store:
        for index in range(6):
            await store.save_markdown("notes", f"n{index}", "text")
        await asyncio.gather(*(store.list_category("notes") for _ in range(8)))
        levels = [
            connection.execute("PRAGMA synchronous").fetchone()[0]
            for connection, _ in traced.connections
        ]
        async with store.engine.connect() as connection:
            engine_level = (await connection.exec_driver_sql("PRAGMA synchronous")).scalar()

    assert len(levels) >= 3  # the writer, a reader and the checkpointer at least
    assert set(levels) == {SYNCHRONOUS_LEVELS[level]}
    assert engine_level == SYNCHRONOUS_LEVELS[level]
