"""statestore on SQLite against raw stdlib sqlite3 (the floor) and the old file store.

Every figure is measured in one run, on the same machine, and printed as a ratio: the
machine is shared and noisy, so absolute times mean little and ratios mean more.

Run:  python benchmarks/bench_sqlite.py            (about two minutes)
      python benchmarks/bench_sqlite.py --quick    (small sizes, seconds; a smoke test)

The raw baseline uses the same schema (created by statestore's migrations) and the same
PRAGMAs on a plain ``sqlite3`` connection in the calling thread, doing the same row writes
and reads: it is what hand-written SQL with no async stack, no models and no checks costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from filestore_model import FileStore
from statestore import AgentResponse, PruneConfig, Session, StateStore, UserMessage, migrate

SUMMARY_SQL = (
    "SELECT id, user_id, message_count, active_seed_id, project_id, created_at, updated_at "
    "FROM sessions ORDER BY updated_at DESC, id DESC"
)


@dataclass
class Figure:
    """One line of the report."""

    name: str
    value: str
    target: str
    met: bool | None


def stamp(moment: datetime) -> str:
    """Return a timestamp in statestore's SQLite storage format."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def raw_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    """Return a plain sqlite3 connection with statestore's PRAGMAs."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 30000")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    return connection


def session_columns(connection: sqlite3.Connection) -> list[str]:
    """Return the sessions table's column names (the schema may grow)."""
    return [row[1] for row in connection.execute("PRAGMA table_info(sessions)")]


def populate(path: Path, sessions: int, messages: int, *, now: datetime) -> list[str]:
    """Fill a migrated database quickly with raw inserts; return the session ids."""
    connection = raw_connection(path, "OFF")
    columns = session_columns(connection)
    placeholders = ", ".join(f":{c}" for c in columns)
    ids = []
    session_rows: list[dict[str, Any]] = []
    message_rows: list[tuple[Any, ...]] = []
    response_rows: list[tuple[Any, ...]] = []
    for index in range(sessions):
        session_id = str(uuid.uuid4())
        ids.append(session_id)
        updated = now - timedelta(seconds=index)
        row: dict[str, Any] = {
            "id": session_id,
            "user_id": f"user-{index % 100}",
            "active_seed_id": "seed-alpha",
            "active_persona_id": None,
            "project_id": f"proj-{index % 7}",
            "message_count": messages,
            "response_count": messages,
            "created_at": stamp(updated - timedelta(hours=1)),
            "updated_at": stamp(updated),
            "metadata": json.dumps({"project_ids": f"proj-{index % 7}"}),
            "extra": None,
            "version": 1,
            "state_token": index + 1,
        }
        session_rows.append({c: row.get(c) for c in columns})
        for position in range(messages):
            at = stamp(updated - timedelta(minutes=messages - position))
            message_rows.append((session_id, position, f"question {position}", at, None))
            response_rows.append(
                (
                    session_id,
                    position,
                    f"answer {position}",
                    None,
                    "seed-alpha",
                    "seed",
                    True,
                    at,
                    None,
                )
            )
    connection.execute("BEGIN")
    connection.executemany(
        f"INSERT INTO sessions ({', '.join(columns)}) VALUES ({placeholders})", session_rows
    )
    connection.executemany(
        "INSERT INTO messages (session_id, position, content, created_at, extra) "
        "VALUES (?, ?, ?, ?, ?)",
        message_rows,
    )
    connection.executemany(
        "INSERT INTO responses (session_id, position, content, reported_session_id, seed_id, "
        "phase_reached, evaluation_passed, created_at, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        response_rows,
    )
    connection.execute("COMMIT")
    connection.close()
    return ids


def quantile(samples: list[float], q: float) -> float:
    """Return the q-quantile of samples (q in 0..1)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Run a synchronous fn repeat times; return each duration in seconds."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


async def timed_async(fn: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    """Await fn repeat times; return each duration in seconds."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return samples


def new_database(workdir: Path, name: str) -> Path:
    """Return the path of a new database at statestore's newest schema."""
    path = workdir / f"{name}.db"
    asyncio.run(migrate.upgrade(path))
    return path


# -- appends -----------------------------------------------------------------------------


def raw_append_fn(
    connection: sqlite3.Connection, session_id: str, start: int
) -> Callable[[], None]:
    """Return a function appending one exchange per call with raw SQL, as statestore writes it."""
    position = [start]

    def append() -> None:
        now = stamp(datetime.now(UTC))
        at = position[0]
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "UPDATE sessions SET updated_at = ?, message_count = ?, response_count = ?, "
            "version = version + 1 WHERE id = ?",
            (now, at + 1, at + 1, session_id),
        )
        connection.execute(
            "INSERT INTO messages (session_id, position, content, created_at) VALUES (?, ?, ?, ?)",
            (session_id, at, "question", now),
        )
        connection.execute(
            "INSERT INTO responses (session_id, position, content, seed_id, phase_reached, "
            "evaluation_passed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (session_id, at, "answer", "seed-alpha", "seed", True, now),
        )
        connection.execute("COMMIT")
        position[0] += 1

    return append


def exchange(session: Session) -> None:
    """Add one user message and one agent response to a session."""
    session.add_user_message("question")
    session.add_agent_response(
        AgentResponse(
            content="answer", seed_id="seed-alpha", phase_reached="seed", evaluation_passed=True
        )
    )


def history(messages: int) -> Session:
    """Return a new session with ``messages`` exchanges."""
    session = Session(user_id="bench")
    now = datetime.now(UTC)
    session.user_messages = [UserMessage(content=f"q{i}", timestamp=now) for i in range(messages)]
    session.agent_responses = [
        AgentResponse(content=f"a{i}", timestamp=now) for i in range(messages)
    ]
    return session


async def store_append_samples(
    path: Path, messages: int, repeat: int, synchronous: str
) -> list[float]:
    """Append ``repeat`` exchanges to a session of ``messages`` exchanges; return durations."""
    async with StateStore.open(path, synchronous=synchronous) as store:  # type: ignore[arg-type]
        session = history(messages)
        await store.save_session(session)
        loaded = await store.load_session(session.id)
        assert loaded is not None

        async def append() -> None:
            exchange(loaded)
            await store.save_session(loaded)

        await timed_async(append, 20)  # warm up
        return await timed_async(append, repeat)


def raw_append_samples(path: Path, messages: int, repeat: int, synchronous: str) -> list[float]:
    """The raw floor for the same appends."""
    session = history(messages)

    async def seed() -> None:
        async with StateStore.open(path) as store:
            await store.save_session(session)

    asyncio.run(seed())
    connection = raw_connection(path, synchronous)
    append = raw_append_fn(connection, session.id, messages)
    timed(append, 20)
    samples = timed(append, repeat)
    connection.close()
    return samples


async def store_throughput(
    path: Path, writers: int, appends: int, synchronous: str
) -> tuple[float, float]:
    """``writers`` coroutines each append ``appends`` exchanges to its own session.

    Returns (saves per second, p99 latency in seconds).
    """
    async with StateStore.open(path, synchronous=synchronous) as store:  # type: ignore[arg-type]
        sessions = [history(2) for _ in range(writers)]
        for session in sessions:
            await store.save_session(session)

        async def warm_up(session: Session) -> None:
            exchange(session)
            await store.save_session(session)

        # One untimed round: the first appends grow the WAL file, and on this machine's
        # ext4 an fsync that must also commit a file-size change can stall for ~80 ms.
        await asyncio.gather(*(warm_up(s) for s in sessions))
        latencies: list[float] = []

        async def writer(session: Session) -> None:
            for _ in range(appends):
                exchange(session)
                start = time.perf_counter()
                await store.save_session(session)
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(writer(s) for s in sessions))
        elapsed = time.perf_counter() - start
    return writers * appends / elapsed, quantile(latencies, 0.99)


def raw_throughput(path: Path, count: int, synchronous: str) -> tuple[float, float]:
    """The raw floor: sequential appends, one transaction each.

    Returns (appends per second, p99 latency of one append in seconds).
    """
    samples = raw_append_samples(path, 2, count, synchronous)
    return count / sum(samples), quantile(samples, 0.99)


# -- reads -------------------------------------------------------------------------------


async def store_read_samples(
    path: Path, call: Callable[[StateStore], Awaitable[Any]], repeat: int
) -> list[float]:
    """Time an awaited store call on an opened store."""
    async with StateStore.open(path) as store:
        await timed_async(lambda: call(store), 5)
        return await timed_async(lambda: call(store), repeat)


async def paired_samples(
    paths: list[Path],
    calls: list[Callable[[StateStore], Awaitable[Any]]],
    raw: list[Callable[[], Any]],
    repeat: int,
) -> tuple[list[list[float]], list[list[float]]]:
    """Time store calls and raw calls in turn, round after round, in one process.

    Alternating puts both under the same background load at the same moments, which a
    shared, noisy machine otherwise distributes unevenly between two separate runs.
    Returns (store samples per call, raw samples per raw function).
    """
    stores = [await StateStore.open(path) for path in paths]
    ours: list[list[float]] = [[] for _ in calls]
    floors: list[list[float]] = [[] for _ in raw]
    try:
        for round_number in range(repeat + 5):
            for index, (store, call) in enumerate(zip(stores, calls, strict=True)):
                start = time.perf_counter()
                await call(store)
                if round_number >= 5:  # the first rounds warm caches and threads
                    ours[index].append(time.perf_counter() - start)
            for index, fn in enumerate(raw):
                start = time.perf_counter()
                fn()
                if round_number >= 5:
                    floors[index].append(time.perf_counter() - start)
    finally:
        for store in stores:
            await store.close()
    return ours, floors


async def list_newest(store: StateStore, count: int) -> Any:
    """The newest ``count`` summaries, through whatever API the store has."""
    try:
        return await store.list_sessions(limit=count)  # type: ignore[call-arg]
    except TypeError:
        return (await store.list_sessions())[:count]


def raw_load_fn(connection: sqlite3.Connection, session_id: str) -> Callable[[], Any]:
    """Return a function reading one session's rows with raw SQL."""

    def load() -> Any:
        session = connection.execute(
            "SELECT * FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        messages = connection.execute(
            "SELECT content, created_at, extra FROM messages WHERE session_id = ? "
            "ORDER BY position",
            (session_id,),
        ).fetchall()
        responses = connection.execute(
            "SELECT content, reported_session_id, seed_id, phase_reached, evaluation_passed, "
            "created_at, extra FROM responses WHERE session_id = ? ORDER BY position",
            (session_id,),
        ).fetchall()
        return session, messages, responses

    return load


def us(seconds: float) -> str:
    """Format a duration in microseconds."""
    return f"{seconds * 1e6:,.0f} µs"


def ratio(ours: float, floor: float) -> str:
    """Format ours/floor."""
    return f"{ours / floor:.2f}x"


def report(figures: list[Figure]) -> None:
    """Print the figures as a markdown table."""
    print("| figure | result | target | met |")
    print("|---|---|---|---|")
    for figure in figures:
        met = "" if figure.met is None else ("yes" if figure.met else "NO")
        print(f"| {figure.name} | {figure.value} | {figure.target} | {met} |")


def main() -> None:
    """Run every figure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = parser.parse_args()
    quick = args.quick
    repeat = 30 if quick else 300
    small, large = (300, 1_000) if quick else (10_000, 100_000)
    long_history = 200 if quick else 2_000
    writers, appends = (8, 5) if quick else (64, 20)
    prune_total, prune_keep, prune_messages = (2_000, 100, 5) if quick else (100_000, 1_000, 20)

    figures: list[Figure] = []
    workdir = Path(tempfile.mkdtemp(prefix="statestore-bench-"))
    now = datetime.now(UTC)
    try:
        # 1. append one exchange, one coroutine
        ours = asyncio.run(store_append_samples(new_database(workdir, "a1"), 10, repeat, "NORMAL"))
        floor = raw_append_samples(new_database(workdir, "a2"), 10, repeat, "NORMAL")
        figures.append(
            Figure(
                "append one exchange, median (p95), NORMAL",
                f"{ratio(statistics.median(ours), statistics.median(floor))} "
                f"({ratio(quantile(ours, 0.95), quantile(floor, 0.95))}); "
                f"{us(statistics.median(ours))} vs raw {us(statistics.median(floor))}",
                "<= 6x",
                statistics.median(ours) <= 6 * statistics.median(floor),
            )
        )
        # 2 and 3. throughput with many writers
        for synchronous in ("NORMAL", "FULL"):
            os.sync()  # start each from clean page cache, so no run pays for another's writes
            rate, p99 = asyncio.run(
                store_throughput(
                    new_database(workdir, f"t-{synchronous}"), writers, appends, synchronous
                )
            )
            os.sync()
            raw_rate, raw_p99 = raw_throughput(
                new_database(workdir, f"tr-{synchronous}"), writers * appends, synchronous
            )
            figures.append(
                Figure(
                    f"append throughput, {writers} coroutines, {synchronous}",
                    f"{rate:,.0f}/s vs raw sequential {raw_rate:,.0f}/s = {rate / raw_rate:.2f}x; "
                    f"p99 {p99 * 1e3:.1f} ms (one raw append's p99: {raw_p99 * 1e3:.1f} ms)",
                    ">= 1x, p99 <= 20 ms",
                    rate >= raw_rate and p99 <= 0.020,
                )
            )
        # 4. append cost with a long history
        at_long = asyncio.run(
            store_append_samples(new_database(workdir, "h2"), long_history, repeat, "NORMAL")
        )
        at_short = asyncio.run(
            store_append_samples(new_database(workdir, "h1"), 10, repeat, "NORMAL")
        )
        growth = statistics.median(at_long) / statistics.median(at_short)
        figures.append(
            Figure(
                f"append at {long_history} messages vs at 10, median",
                f"{growth:.2f}x",
                "<= 1.2x",
                growth <= 1.2,
            )
        )
        # 5 and 6. listing
        paths = {}
        connections = {}
        for size in (small, large):
            paths[size] = workdir / f"list-{size}.db"
            asyncio.run(migrate.upgrade(paths[size]))
            populate(paths[size], size, 0, now=now)
            connections[size] = raw_connection(paths[size], "NORMAL")
        (ours50_small_s, ours50_large_s), (raw50_small_s, raw50_large_s) = asyncio.run(
            paired_samples(
                [paths[small], paths[large]],
                [lambda s: list_newest(s, 50)] * 2,
                [
                    lambda c=connections[size]: c.execute(SUMMARY_SQL + " LIMIT 50").fetchall()
                    for size in (small, large)
                ],
                repeat,
            )
        )
        (ours_all,), (raw_all,) = asyncio.run(
            paired_samples(
                [paths[small]],
                [lambda s: s.list_sessions()],
                [lambda c=connections[small]: c.execute(SUMMARY_SQL).fetchall()],
                max(10, repeat // 10),
            )
        )
        for connection in connections.values():
            connection.close()
        files_root = workdir / "files"
        file_store = FileStore(files_root)
        for _ in range(small):
            file_store.save_session(history(2))
        file_list = timed(lambda: file_store.list_sessions()[:50], 3)
        ours50_small = statistics.median(ours50_small_s)
        raw50_small = statistics.median(raw50_small_s)
        figures.append(
            Figure(
                f"list newest 50 of {small:,} sessions, median",
                f"{ratio(ours50_small, raw50_small)} raw ({us(ours50_small)} vs "
                f"{us(raw50_small)}); file store "
                f"{statistics.median(file_list) / ours50_small:,.0f}x slower",
                "<= 25x raw, >= 100x faster than files",
                ours50_small <= 25 * raw50_small
                and statistics.median(file_list) >= 100 * ours50_small,
            )
        )
        scale = statistics.median(ours50_large_s) / ours50_small
        raw_scale = statistics.median(raw50_large_s) / raw50_small
        figures.append(
            Figure(
                f"list newest 50 of {large:,} vs of {small:,}",
                f"{scale:.2f}x (raw sqlite3: {raw_scale:.2f}x)",
                "<= 1.3x",
                scale <= 1.3,
            )
        )
        figures.append(
            Figure(
                f"list all {small:,} summaries, median",
                ratio(statistics.median(ours_all), statistics.median(raw_all)),
                "<= 3x",
                statistics.median(ours_all) <= 3 * statistics.median(raw_all),
            )
        )
        # 7. load a 400-message session
        path = new_database(workdir, "load")
        [session_id] = populate(path, 1, 400, now=now)
        connection = raw_connection(path, "NORMAL")
        (ours_load,), (raw_load,) = asyncio.run(
            paired_samples(
                [path],
                [lambda s: s.load_session(session_id)],
                [raw_load_fn(connection, session_id)],
                repeat,
            )
        )
        connection.close()
        figures.append(
            Figure(
                "load a session of 400 messages and 400 responses, median",
                f"{ratio(statistics.median(ours_load), statistics.median(raw_load))} "
                f"({us(statistics.median(ours_load))} vs {us(statistics.median(raw_load))})",
                "<= 2.5x",
                statistics.median(ours_load) <= 2.5 * statistics.median(raw_load),
            )
        )
        # 8. prune with nothing to prune
        path = workdir / f"list-{large}.db"
        nothing = PruneConfig(max_sessions=2 * large, ttl_hours=24 * 365)
        ours_prune = asyncio.run(
            store_read_samples(path, lambda s: s.prune_sessions(nothing), repeat)
        )
        empty = Session(user_id="empty")

        async def save_empty() -> None:
            async with StateStore.open(path) as store:
                await store.save_session(empty)

        asyncio.run(save_empty())
        ours_empty = asyncio.run(
            store_read_samples(path, lambda s: s.load_session(empty.id), repeat)
        )
        figures.append(
            Figure(
                f"prune with nothing to prune, {large:,} sessions, median",
                f"{ratio(statistics.median(ours_prune), statistics.median(ours_empty))} a load "
                f"of an empty session ({us(statistics.median(ours_prune))})",
                "<= 3x",
                statistics.median(ours_prune) <= 3 * statistics.median(ours_empty),
            )
        )
        # 9. prune many
        template = new_database(workdir, "prune")
        populate(template, prune_total, prune_messages, now=now)
        raw_copy = workdir / "prune-raw.db"
        shutil.copy(template, raw_copy)
        connection = raw_connection(raw_copy, "NORMAL")
        start = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "DELETE FROM sessions WHERE id NOT IN "
            "(SELECT id FROM sessions ORDER BY updated_at DESC, id DESC LIMIT ?)",
            (prune_keep,),
        )
        connection.execute("COMMIT")
        raw_prune = time.perf_counter() - start
        connection.close()

        async def prune_many() -> tuple[float, int]:
            async with StateStore.open(template, synchronous="NORMAL") as store:
                begin = time.perf_counter()
                deleted = await store.prune_sessions(
                    PruneConfig(max_sessions=prune_keep, ttl_hours=0)
                )
                return time.perf_counter() - begin, deleted

        ours_prune_many, deleted = asyncio.run(prune_many())
        assert deleted == prune_total - prune_keep, deleted
        figures.append(
            Figure(
                f"prune {prune_total:,} -> {prune_keep:,} sessions, {prune_messages} messages each",
                f"{ratio(ours_prune_many, raw_prune)} "
                f"({ours_prune_many:.2f} s vs {raw_prune:.2f} s)",
                "<= 3x",
                ours_prune_many <= 3 * raw_prune,
            )
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"statestore benchmark, {'quick' if quick else 'full'} run, "
        f"Python {sys.version.split()[0]}, "
        f"SQLite {sqlite3.sqlite_version}"
    )
    report(figures)


if __name__ == "__main__":
    main()
