"""Workloads that the load, crash, cancellation and damaged-storage tests run in other processes.

Run as ``python -m tests.fault_workers <mode> ...`` from the repository root:

* ``load DB PROCESSES COROUTINES SECONDS SEED OUTDIR`` -- forks ``PROCESSES`` children, each
  running many coroutines that save, update, load, list and prune on one file; each writes
  what was acknowledged to ``OUTDIR/load-N.json``.
* ``zygote`` -- imports statestore once, then for each ``crash DB RUN SEED SYNCHRONOUS``
  line on stdin forks a child that runs the crash workload (printing ``begin`` and ``ack``
  lines around every write) until it is killed; prints ``pid N`` and, once the child is
  gone, ``exited N STATUS``. Forking skips the second of import time per kill.
* ``cancel DB SEED`` -- saves and updates cancelled at random points, then ``close()``;
  prints a JSON report of the threads and database file descriptors still open after the
  event loop is gone.
* ``full DB LIMIT`` -- writes past ``RLIMIT_FSIZE`` (a full disk), printing a JSON report.

The crash workload's states are deterministic (:class:`CrashStates`), so the test can tell
whether a stored session is exactly one of the states that was saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from statestore import AgentResponse, PruneConfig, Session, StateStore, UserMessage
from statestore._engine import Synchronous

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# -- load -------------------------------------------------------------------------------

SHARED_SESSIONS = 4
"""Sessions every process and coroutine appends to through update_session_with."""

STALE = datetime(2001, 1, 1, tzinfo=UTC)
"""updated_at of the sessions saved only for prunes to delete."""

LOAD_PRUNE = PruneConfig(max_sessions=1_000_000, ttl_hours=24 * 365)
"""Deletes the stale sessions only; the count rule runs but never has work."""

OPERATIONS = {
    "new": 3,
    "append": 6,
    "rewrite": 1,
    "update_shared": 3,
    "update_own": 2,
    "load": 4,
    "list": 2,
    "prune": 1,
    "stale": 1,
    "document": 2,
    "get_or_create": 1,
}


class LoadResult:
    """What one load process saw acknowledged, and every error it met."""

    def __init__(self) -> None:
        self.sessions: dict[str, str] = {}  # id -> JSON of its last acknowledged state
        self.stale: dict[str, str] = {}
        self.created: dict[str, str] = {}  # get_or_create id -> its user_id
        self.documents: dict[str, Any] = {}  # "category/name" -> last acknowledged value
        self.tokens: dict[str, list[str]] = {f"shared-{k}": [] for k in range(SHARED_SESSIONS)}
        self.errors: list[str] = []
        self.operations: Counter[str] = Counter()

    def as_json(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "stale": self.stale,
            "created": self.created,
            "documents": self.documents,
            "tokens": self.tokens,
            "errors": self.errors,
            "operations": dict(self.operations),
        }


async def _load_coroutine(
    store: StateStore, result: LoadResult, worker: int, index: int, deadline: float, seed: int
) -> None:
    rng = random.Random(f"{seed}-{worker}-{index}")
    user = f"w{worker}-c{index}"
    own: Session | None = None
    mine: set[str] = set()
    names, weights = list(OPERATIONS), list(OPERATIONS.values())
    step = 0
    while time.monotonic() < deadline:
        step += 1
        operation = rng.choices(names, weights)[0]
        if own is None and operation in ("append", "rewrite", "update_own", "load"):
            operation = "new"
        try:
            if operation == "new":
                own = Session(id=f"{user}-{step}", user_id=user)
                for turn in range(rng.randrange(4)):
                    own.add_user_message(f"{user} question {turn} ' % _ \" ;--")
                    own.add_agent_response(AgentResponse(content=f"answer {turn}", seed_id="s"))
                await store.save_session(own)
                result.sessions[own.id] = own.model_dump_json()
                mine.add(own.id)
            elif operation == "append":
                assert own is not None
                own.add_user_message(f"{user} more {step}")
                own.add_agent_response(AgentResponse(content=f"reply {step}"))
                await store.save_session(own)
                result.sessions[own.id] = own.model_dump_json()
            elif operation == "rewrite":
                assert own is not None
                own.set_metadata("rewritten", step)
                if own.user_messages:
                    own.user_messages[0].content = f"edited at {step}"
                await store.save_session(own)
                result.sessions[own.id] = own.model_dump_json()
            elif operation == "update_shared":
                shared = f"shared-{rng.randrange(SHARED_SESSIONS)}"
                token = f"{user}-{step}"
                updated = await store.update_session_with(
                    shared, lambda s, token=token: s.add_user_message(token)
                )
                if updated is None:
                    raise AssertionError(f"{shared} is missing")
                result.tokens[shared].append(token)
            elif operation == "update_own":
                assert own is not None

                async def mark(session: Session, step: int = step) -> None:
                    session.set_metadata("updated", step)
                    await asyncio.sleep(0)
                    session.add_user_message(f"updated {step}")

                updated = await store.update_session_with(own.id, mark)
                if updated is None:
                    raise AssertionError(f"{own.id} is missing")
                own = updated
                result.sessions[own.id] = own.model_dump_json()
            elif operation == "load":
                assert own is not None
                loaded = await store.load_session(own.id)
                if loaded is None or loaded.model_dump_json() != result.sessions[own.id]:
                    raise AssertionError(f"{own.id} does not load as last saved")
            elif operation == "list":
                listed = {s.id for s in await store.list_sessions(user_id=user)}
                if listed != mine:
                    raise AssertionError(f"listing {user} gave {sorted(listed ^ mine)} wrong")
                await store.list_sessions(limit=rng.randrange(1, 50))
            elif operation == "prune":
                await store.prune_sessions(LOAD_PRUNE)
            elif operation == "stale":
                stale = Session(id=f"stale-{user}-{step}", user_id="stale", created_at=STALE)
                stale.user_messages.append(UserMessage(content="old", timestamp=STALE))
                await store.save_session(stale)
                result.stale[stale.id] = stale.model_dump_json()
            elif operation == "document":
                value = {"step": step, "text": f"{user} % _ '"}
                await store.save_json(f"load/{user}", "doc", value)
                result.documents[f"load/{user}"] = value
            elif operation == "get_or_create":
                session_id = f"goc-{user}-{rng.randrange(3)}"
                got = await store.get_or_create_session(user, session_id)
                if got.id != session_id or got.user_id != user:
                    raise AssertionError(f"get_or_create gave {got.id} of {got.user_id}")
                result.created[session_id] = user
                mine.add(session_id)
            result.operations[operation] += 1
        except Exception as error:
            result.errors.append(f"{operation}: {type(error).__name__}: {error}")


async def run_load(
    db: str, worker: int, coroutines: int, seconds: float, seed: int
) -> dict[str, Any]:
    """Run the load workload and return its :class:`LoadResult` as JSON."""
    result = LoadResult()
    async with StateStore.open(db) as store:
        for k in range(SHARED_SESSIONS):
            await store.get_or_create_session("shared", f"shared-{k}")
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(
                _load_coroutine(store, result, worker, index, deadline, seed)
                for index in range(coroutines)
            )
        )
    return result.as_json()


# -- crash ------------------------------------------------------------------------------

CRASH_COROUTINES = 8
CRASH_IDS_PER_COROUTINE = 3
CRASH_USER = "crash"


def crash_ids() -> list[str]:
    """Return the ids of every session the crash workload writes."""
    return [
        f"c{index}-k{k}"
        for index in range(CRASH_COROUTINES)
        for k in range(CRASH_IDS_PER_COROUTINE)
    ]


def crash_step(session: Session, version: int) -> None:
    """Turn ``session`` from state ``version - 1`` into state ``version`` (in place).

    Every fifth version edits every stored message (a whole rewrite); the others append
    one message and one response (a delta save).
    """
    if version % 5 == 0:
        for message in session.user_messages:
            message.content = f"{session.id} {message.content.split(' ')[1]} rewritten {version}"
    else:
        position = len(session.user_messages)
        moment = T0 + timedelta(seconds=version)
        session.user_messages.append(
            UserMessage(content=f"{session.id} m{position} v{version}", timestamp=moment)
        )
        session.agent_responses.append(
            AgentResponse(content=f"r{position} v{version} " + "x" * version, timestamp=moment)
        )
    session.metadata["version"] = version
    session.updated_at = T0 + timedelta(seconds=version)


def crash_start(session_id: str) -> Session:
    """Return state 0 of a crash session (never saved: the first save is version 1)."""
    return Session(id=session_id, user_id=CRASH_USER, created_at=T0)


class CrashStates:
    """The states of the crash workload's sessions, computed by replaying the steps."""

    def __init__(self) -> None:
        self._latest: dict[str, tuple[int, Session]] = {}

    def state(self, session_id: str, version: int) -> str:
        """Return the JSON of ``session_id`` at ``version``."""
        known, session = self._latest.get(session_id, (0, crash_start(session_id)))
        if known > version:
            known, session = 0, crash_start(session_id)
        session = session.model_copy(deep=True)
        for step in range(known + 1, version + 1):
            crash_step(session, step)
        self._latest[session_id] = (version, session)
        return session.model_dump_json()


def _say(line: str) -> None:
    # One write() per line on an inherited pipe: lines from the forked children and the
    # zygote never interleave, and what was written survives the writer's SIGKILL.
    os.write(1, (line + "\n").encode())


async def _crash_coroutine(store: StateStore, index: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + index)
    sessions: dict[str, Session | None] = {}
    for k in range(CRASH_IDS_PER_COROUTINE):
        session_id = f"c{index}-k{k}"
        sessions[session_id] = await store.load_session(session_id)
    while True:
        session_id = rng.choice(list(sessions))
        session = sessions[session_id]
        version = 1 if session is None else session.metadata["version"] + 1
        _say(f"begin {session_id} {version}")
        if session is not None and rng.random() < 0.3:
            saved = await store.update_session_with(
                session_id, lambda s, version=version: crash_step(s, version)
            )
            if saved is None:
                raise AssertionError(f"{session_id} vanished")
            sessions[session_id] = saved
        else:
            session = session or crash_start(session_id)
            crash_step(session, version)
            await store.save_session(session)
            sessions[session_id] = session
        _say(f"ack {session_id} {version}")


async def run_crash(db: str, seed: int, synchronous: Synchronous) -> None:
    """Write crash sessions from many coroutines until killed (or 60 s have passed)."""
    async with StateStore.open(db, synchronous=synchronous) as store:
        _say("open")
        await asyncio.wait_for(
            asyncio.gather(*(_crash_coroutine(store, i, seed) for i in range(CRASH_COROUTINES))),
            timeout=60,
        )


def run_zygote() -> None:
    """Fork one crash child per command line on stdin, report its pid and its end."""
    for line in sys.stdin:
        command, db, _run, seed, synchronous = line.split()
        assert command == "crash"
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.run(run_crash(db, int(seed), synchronous))  # type: ignore[arg-type]
            except BaseException as error:
                _say(f"error {type(error).__name__}: {error}")
                os._exit(1)
            os._exit(0)
        _say(f"pid {pid}")
        _, status = os.waitpid(pid, 0)
        _say(f"exited {pid} {status}")


# -- cancellation -----------------------------------------------------------------------


def database_descriptors(db: str | os.PathLike[str]) -> list[str]:
    """Return this process's open file descriptors on the database, its WAL or its -shm."""
    found = []
    path = os.path.realpath(db)
    names = {path, path + "-wal", path + "-shm"}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") in names:
                found.append(fd)
    return found


async def run_cancel(db: str, seed: int) -> None:
    """Cancel saves and updates at random points, then close without awaiting them."""
    rng = random.Random(seed)
    store = await StateStore.open(db)
    base = [Session(id=f"s{i}", user_id="u") for i in range(8)]
    for session in base:
        await store.save_session(session)
    pending: list[asyncio.Task[Any]] = []
    for round_ in range(200):
        session = rng.choice(base).model_copy(deep=True)
        session.add_user_message(f"round {round_}")

        async def change(current: Session, round_: int = round_) -> None:
            current.set_metadata("round", round_)
            await asyncio.sleep(rng.uniform(0, 0.002))

        if rng.random() < 0.5:
            task = asyncio.create_task(store.save_session(session))
        else:
            task = asyncio.create_task(store.update_session_with(session.id, change))
        pending.append(task)
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        task.cancel()
    # Cancelled callers are not awaited before close(): close() must still finish their
    # writes and stop every thread.
    await store.close()
    await asyncio.gather(*pending, return_exceptions=True)


def report_leftovers(db: str) -> None:
    """Print the threads and database file descriptors this process still holds (JSON)."""
    report = {
        "threads": [t.name for t in threading.enumerate() if t is not threading.main_thread()],
        "descriptors": database_descriptors(db),
    }
    print(json.dumps(report), flush=True)


# -- full disk --------------------------------------------------------------------------


async def run_full(db: str, limit: int) -> None:
    """Fill the file-size limit with saves; report what failed and what still reads."""
    report: dict[str, Any] = {"errors": [], "saved": []}
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
    async with StateStore.open(db) as store:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        for index in range(8):
            session = Session(id=f"big-{index}", user_id="big")
            session.add_user_message("y" * 200_000)
            try:
                await asyncio.wait_for(store.save_session(session), timeout=60)
                report["saved"].append(session.id)
            except Exception as error:
                report["errors"].append(_describe(error))
            try:
                await asyncio.wait_for(
                    store.save_markdown("big", f"doc-{index}", "z" * 200_000), timeout=60
                )
                report["saved"].append(f"doc-{index}")
            except Exception as error:
                report["errors"].append(_describe(error))
        kept = await store.load_session("s0")
        report["kept"] = None if kept is None else kept.model_dump_json()
        report["kept_document"] = await store.load_markdown("notes", "kept")
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        await store.save_markdown("notes", "after", "space again")
        report["after"] = await store.load_markdown("notes", "after")
    print(json.dumps(report), flush=True)


def _describe(error: BaseException) -> dict[str, Any]:
    return {
        "type": type(error).__name__,
        "mro": [cls.__name__ for cls in type(error).__mro__],
        "message": str(error),
    }


def fork_workers(count: int, work: Callable[[int], Any], result_file: Callable[[int], Path]) -> int:
    """Fork ``count`` children (statestore imported once), each writing ``work(n)`` as JSON
    to ``result_file(n)``; return 1 if any child failed (its traceback is on stderr)."""
    children = []
    for worker in range(count):
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                result_file(worker).write_text(json.dumps(work(worker)))
            except BaseException:
                traceback.print_exc()
                status = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        children.append(pid)
    worst = 0
    for pid in children:
        _, status = os.waitpid(pid, 0)
        worst = max(worst, int(os.waitstatus_to_exitcode(status) != 0))
    return worst


def run_load_processes(
    db: str, processes: int, coroutines: int, seconds: float, seed: int, out_dir: str
) -> int:
    """Fork ``processes`` load workers (statestore imported once); return the worst status."""
    return fork_workers(
        processes,
        lambda worker: asyncio.run(run_load(db, worker, coroutines, seconds, seed)),
        lambda worker: Path(out_dir, f"load-{worker}.json"),
    )


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "load":
        db, processes, coroutines, seconds, seed, out_dir = args
        sys.exit(
            run_load_processes(
                db, int(processes), int(coroutines), float(seconds), int(seed), out_dir
            )
        )
    elif mode == "zygote":
        run_zygote()
    elif mode == "cancel":
        db, seed = args
        asyncio.run(run_cancel(db, int(seed)))
        report_leftovers(db)  # after asyncio.run, which stops the loop's own executor
    elif mode == "full":
        db, limit = args
        asyncio.run(run_full(db, int(limit)))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
