"""Two processes saving to one SQLite file at once: does either wait long for the lock?

SQLite lets one connection write at a time. A connection that finds the lock held waits in
SQLite's busy handler, which sleeps 1, 2, 5, 10 ... then 100 ms between tries. A process
that commits back to back frees the lock for microseconds between its transactions, so a
peer trying every 100 ms rarely finds it free: it waits, possibly past its busy timeout,
while the first process commits thousands of times. statestore's writer therefore tries
``BEGIN IMMEDIATE`` itself every millisecond (``statestore._runner._LOCK_POLL``).

Each participant runs in two processes at once on one new file, each process with several
coroutines appending exchanges to sessions of their own for a few seconds:

- **statestore**: ``StateStore.open(path)`` at its defaults; each coroutine appends one
  exchange to its session in hand and awaits ``save_session``.
- **statestore, SQLite's busy handler**: the same, with the writer waiting in SQLite's busy
  handler as it did before it polled (``_runner._begin_immediate`` replaced in the child
  processes): the before figure, measured in the same run.
- **openai-agents** ``SQLiteSession`` (synchronous=FULL, as in ``bench_peers.py``), one
  object per session, ``add_items`` of one exchange. It waits in the busy handler too
  (Python's default five-second timeout). Shown when the ``bench`` extra is installed.

For each: appends per second (both processes), the share of the process that made fewer,
the p99 and the longest wait of one append, and the longest time one process went without
committing. Then the two ways of waiting again in one process alone, with 1 coroutine and
with 64, where nobody else holds the lock: what polling costs when there is no contention.
Each participant runs ``--rounds`` times, in turn; the tables show the medians. The machine
is shared and noisy: read the ratios.

Run:  python benchmarks/bench_lock_fairness.py           (3 rounds of 3 s each)
      python benchmarks/bench_lock_fairness.py --quick   (1 round of 1 s)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from statestore import AgentResponse, Session, StateStore, _runner

try:
    from bench_peers import DurableSQLiteSession, agents_exchange
except ImportError:  # the bench extra is not installed: no peer column
    DurableSQLiteSession = None

QUESTION = "How do I keep an agent's conversation state when the service restarts? " * 2
ANSWER = "Persist each exchange as it happens, and load the session on the next request. " * 4
STATESTORE = "statestore"
BUSY_HANDLER = "statestore, SQLite's busy handler"
AGENTS = "openai-agents"

Measured = dict[str, list[dict[str, float]]]
"""Each participant's figures, round by round."""


def sqlite_busy_handler_begin(connection: Any, deadline: float) -> None:
    """Take the write lock as the writer did before it polled: in SQLite's busy handler."""
    left = max(0, int((deadline - time.monotonic()) * 1000))
    connection.execute(f"PRAGMA busy_timeout = {left}")
    connection.execute("BEGIN IMMEDIATE")


@dataclass
class Log:
    """What one process saw: each append's wait, and when each finished."""

    waits: list[float]
    finished: list[float]
    errors: list[str]
    started: float


@dataclass(frozen=True)
class Workload:
    """How many processes append at once, with how many coroutines each, and who runs it."""

    processes: int
    coroutines: int
    names: tuple[str, ...]


async def appending(
    appends: list[Callable[[], Awaitable[object]]], seconds: float, barrier: Barrier
) -> Log:
    """Once every process is ready, call each of ``appends`` over and over, each from a
    coroutine of its own, until the time is up; log every call."""
    log = Log([], [], [], 0.0)

    async def repeatedly(append: Callable[[], Awaitable[object]]) -> None:
        while time.monotonic() < deadline:
            began = time.monotonic()
            try:
                await append()
            except Exception as error:
                log.errors.append(f"{type(error).__name__}: {error}")
            now = time.monotonic()
            log.waits.append(now - began)
            log.finished.append(now)

    barrier.wait()
    log.started = time.monotonic()
    deadline = log.started + seconds
    await asyncio.gather(*(repeatedly(append) for append in appends))
    return log


async def save_exchange(store: StateStore, session: Session) -> None:
    """Append one exchange to the session in hand and save it."""
    session.add_user_message(QUESTION)
    session.add_agent_response(AgentResponse(content=ANSWER))
    await store.save_session(session)


async def statestore_appends(
    path: Path, worker: int, coroutines: int, seconds: float, barrier: Barrier
) -> Log:
    """Append exchanges to ``coroutines`` sessions at once, through one store."""
    async with StateStore.open(path, migrate=False) as store:
        sessions = [Session(id=f"p{worker}-{i}", user_id="bench") for i in range(coroutines)]
        appends = [functools.partial(save_exchange, store, session) for session in sessions]
        return await appending(appends, seconds, barrier)


async def agents_appends(
    path: Path, worker: int, coroutines: int, seconds: float, barrier: Barrier
) -> Log:
    """The same with openai-agents' SQLiteSession objects, one per session."""
    assert DurableSQLiteSession is not None
    sessions = [DurableSQLiteSession(f"p{worker}-{i}", path) for i in range(coroutines)]
    try:
        appends = [lambda s=session: s.add_items(agents_exchange()) for session in sessions]
        return await appending(appends, seconds, barrier)
    finally:
        for session in sessions:
            session.close()


def child(
    name: str, path: Path, worker: int, coroutines: int, seconds: float, barrier: Barrier, out: Any
) -> None:
    """One process of a participant: run its appends, send back its log."""
    if name == BUSY_HANDLER:
        _runner._begin_immediate = sqlite_busy_handler_begin  # type: ignore[assignment]
    appends = agents_appends if name == AGENTS else statestore_appends
    out.put(asyncio.run(appends(path, worker, coroutines, seconds, barrier)))


async def prepare(name: str, path: Path) -> None:
    """Make the participant's tables before its processes start."""
    if name == AGENTS:
        assert DurableSQLiteSession is not None
        probe = DurableSQLiteSession("probe", path)
        await probe.add_items(agents_exchange())
        probe.close()
    else:
        async with StateStore.open(path):
            pass


def quantile(samples: list[float], q: float) -> float:
    """The ``q`` quantile of ``samples``."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def longest_pause(log: Log) -> float:
    """The longest time the process went without an append finishing."""
    marks = [log.started, *sorted(log.finished)]
    return max(later - earlier for earlier, later in itertools.pairwise(marks))


def one_round(
    name: str, workload: Workload, workdir: Path, seconds: float
) -> tuple[dict[str, float], list[str]]:
    """Run the participant's processes once; return the round's figures and errors."""
    path = Path(tempfile.mkdtemp(dir=workdir)) / "state.db"
    asyncio.run(prepare(name, path))
    context = multiprocessing.get_context("fork")
    barrier, out = context.Barrier(workload.processes), context.Queue()
    arguments = (workload.coroutines, seconds, barrier, out)
    processes = [
        context.Process(target=child, args=(name, path, worker, *arguments))
        for worker in range(workload.processes)
    ]
    for process in processes:
        process.start()
    logs: list[Log] = [out.get(timeout=seconds + 120) for _ in processes]
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise SystemExit(f"{name}: a process exited with {process.exitcode}")
    counts = [len(log.waits) for log in logs]
    waits = [wait for log in logs for wait in log.waits]
    return {
        "appends/s": sum(counts) / seconds,
        "share": min(counts) / max(counts),
        "p99 ms": quantile(waits, 0.99) * 1000,
        "longest wait ms": max(waits) * 1000,
        "longest pause ms": max(longest_pause(log) for log in logs) * 1000,
        "errors": sum(len(log.errors) for log in logs),
    }, [error for log in logs for error in log.errors]


def report(workload: Workload, rounds: int, seconds: float, measured: Measured) -> None:
    """Print the workload's medians, then statestore's ratio to each other participant."""
    figures = list(measured[STATESTORE][0])
    median = {
        name: {figure: statistics.median(r[figure] for r in runs) for figure in figures}
        for name, runs in measured.items()
    }
    print(
        f"{workload.processes} process(es) x {workload.coroutines} coroutine(s) appending to "
        f"one file, {rounds} round(s) of {seconds:g} s, medians (appends/s and share: higher "
        "is better; waits and pauses: lower is better)\n"
    )
    print("| participant | " + " | ".join(figures) + " |")
    print("|---|" + "---:|" * len(figures))
    for name in workload.names:
        cells = [f"{median[name][figure]:,.2f}" for figure in figures]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("| statestore against | " + " | ".join(figures[:-1]) + " |")
    print("|---|" + "---:|" * (len(figures) - 1))
    for name in workload.names[1:]:
        ratio: Callable[[str], str] = lambda f, n=name: (  # noqa: E731
            f"{median[STATESTORE][f] / median[n][f]:.2f}x" if median[n][f] else "—"
        )
        print(f"| {name} | " + " | ".join(ratio(figure) for figure in figures[:-1]) + " |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of one second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    rounds, seconds = (1, 1.0) if args.quick else (args.rounds, args.seconds)
    peers = (AGENTS,) if DurableSQLiteSession else ()
    workloads = [
        Workload(2, 6, (STATESTORE, BUSY_HANDLER, *peers)),
        Workload(1, 1, (STATESTORE, BUSY_HANDLER)),
        Workload(1, 64, (STATESTORE, BUSY_HANDLER)),
    ]
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as workdir:
        for workload in workloads:
            measured: Measured = {name: [] for name in workload.names}
            for _ in range(rounds):
                for name in workload.names:
                    figures, failed = one_round(name, workload, Path(workdir), seconds)
                    measured[name].append(figures)
                    errors += [f"{name}: {error}" for error in failed if name != AGENTS]
            report(workload, rounds, seconds, measured)
    if errors:
        raise SystemExit(f"{len(errors)} statestore appends failed, first: {errors[0]}")


if __name__ == "__main__":
    main()
