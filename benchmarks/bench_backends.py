"""The main operations on SQLite and on PostgreSQL, side by side, measured in one run.

Both backends run with their durable defaults: SQLite with ``synchronous=FULL`` in WAL
mode, PostgreSQL (local server, over TCP) with ``synchronous_commit=on``. Each figure is
a median of many calls (or a rate), and the last column is PostgreSQL's time over
SQLite's. The machine is shared and noisy: read the ratios, not the absolute times.

Run:  python benchmarks/bench_backends.py                 (about two minutes)
      python benchmarks/bench_backends.py --quick         (a smoke run)
      python benchmarks/bench_backends.py --postgresql URL   (default: a new database on
      postgresql+asyncpg://postgres@127.0.0.1:5432/test's server, dropped afterwards)
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import URL, make_url

from statestore import AgentResponse, PruneConfig, Session, StateStore, UserMessage

SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def exchange(session: Session, index: int) -> None:
    """Append one user message and one agent response."""
    at = T0 + timedelta(seconds=index)
    session.user_messages.append(UserMessage(content=f"question {index}", timestamp=at))
    session.agent_responses.append(
        AgentResponse(content=f"answer {index}", seed_id="seed-1", timestamp=at)
    )
    session.updated_at = at


async def median_us(call: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """Return the median microseconds of ``repeat`` awaited calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


async def measure(store: StateStore, quick: bool) -> dict[str, float]:
    """Run every figure on one store; return them by name."""
    repeat = 30 if quick else 300
    sessions = 200 if quick else 2_000
    figures: dict[str, float] = {}

    live = Session(id="live", user_id="u")
    await store.save_session(live)
    counter = iter(range(10**9))

    async def append() -> None:
        exchange(live, next(counter))
        await store.save_session(live)

    figures["append one exchange (median µs)"] = await median_us(append, repeat)

    writers, each = (16, 5) if quick else (64, 20)
    crowd = [Session(id=f"crowd-{index}", user_id="u") for index in range(writers)]

    async def writer(session: Session) -> None:
        for index in range(each):
            exchange(session, index)
            await store.save_session(session)

    started = time.perf_counter()
    await asyncio.gather(*(writer(session) for session in crowd))
    figures[f"appends/s, {writers} coroutines"] = writers * each / (time.perf_counter() - started)

    big = Session(id="big", user_id="u")
    for index in range(40 if quick else 400):
        exchange(big, index)
    await store.save_session(big)
    figures[
        f"load {len(big.user_messages)}+{len(big.agent_responses)} (median µs)"
    ] = await median_us(lambda: store.load_session("big"), repeat)

    filler = [
        Session(id=f"s{index:05d}", user_id=f"user-{index % 50}") for index in range(sessions)
    ]
    for index, session in enumerate(filler):
        exchange(session, index)

    async def fill(part: list[Session]) -> None:
        for session in part:
            await store.save_session(session)

    await asyncio.gather(*(fill(filler[start::32]) for start in range(32)))
    figures[f"list newest 50 of {sessions} (median µs)"] = await median_us(
        lambda: store.list_sessions(limit=50), repeat
    )
    figures["list one user's sessions (median µs)"] = await median_us(
        lambda: store.list_sessions(user_id="user-7"), repeat
    )

    def bump(session: Session) -> None:
        session.metadata["n"] = session.metadata.get("n", 0) + 1

    figures["update_session_with (median µs)"] = await median_us(
        lambda: store.update_session_with("live", bump), repeat
    )
    figures["get_or_create, existing (median µs)"] = await median_us(
        lambda: store.get_or_create_session("u", "live"), repeat
    )
    figures["save + load a markdown document (median µs)"] = await median_us(
        lambda: _document_round_trip(store), repeat
    )
    figures["prune with nothing to do (median µs)"] = await median_us(
        lambda: store.prune_sessions(PruneConfig(max_sessions=10**6, ttl_hours=0)), repeat
    )
    return figures


async def _document_round_trip(store: StateStore) -> None:
    await store.save_markdown("notes", "n", "some text")
    await store.load_markdown("notes", "n")


async def on_sqlite(quick: bool) -> dict[str, float]:
    """Measure on a new SQLite file."""
    folder = Path(tempfile.mkdtemp(prefix="statestore-bench-"))
    try:
        async with StateStore.open(folder / "bench.db") as store:
            return await measure(store, quick)
    finally:
        shutil.rmtree(folder)


async def on_postgresql(server: URL, quick: bool) -> dict[str, float]:
    """Measure on a new database of the server, dropped afterwards."""
    name = f"statestore_bench_{secrets.token_hex(4)}"
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(admin)
    await connection.execute(f'CREATE DATABASE "{name}"')
    try:
        async with StateStore.open(server.set(database=name)) as store:
            return await measure(store, quick)
    finally:
        await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--postgresql", default=SERVER, help="the server to make a database on")
    options = parser.parse_args()
    sqlite = asyncio.run(on_sqlite(options.quick))
    postgresql = asyncio.run(on_postgresql(make_url(options.postgresql), options.quick))
    print("| operation | SQLite | PostgreSQL | PostgreSQL time / SQLite time |")
    print("|---|---|---|---|")
    for name, value in sqlite.items():
        other = postgresql[name]
        ratio = value / other if name.startswith("appends/s") else other / value
        print(f"| {name} | {value:,.0f} | {other:,.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
