"""Parallel session creates from several processes: the session count in one row or in shards.

Revision 0004 keeps the number of sessions in 16 rows of ``statestore_counters`` (the
trigger updates the row of its server backend) instead of one row every create updated.
This script measures what that is worth: N processes x 16 coroutines, each saving new
sessions through its own store, on two fresh databases at head -- one as migrated, one
with the trigger put back to updating a single row (as before 0004) -- alternating, and
prints creates per second for each and their ratio.

Run:  python benchmarks/bench_counter_shards.py               (about half a minute)
      python benchmarks/bench_counter_shards.py --quick       (a smoke run)
      python benchmarks/bench_counter_shards.py --postgresql URL --processes N
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from multiprocessing.synchronize import Barrier

import asyncpg
from sqlalchemy import URL, make_url

from bench_postgresql import dsn_of, new_database
from statestore import Session, StateStore, migrate

SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
WRITERS = 16
"""Coroutines per process."""

ONE_ROW_TRIGGER = """
CREATE OR REPLACE FUNCTION statestore_count_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE statestore_counters SET value = value + 1 WHERE name = 'sessions/0';
    ELSE
        UPDATE statestore_counters SET value = value - 1 WHERE name = 'sessions/0';
    END IF;
    RETURN NULL;
END $$
"""
"""The counting of revision 0003: every create and delete updates one row."""


def create_sessions(
    url: str, creates: int, barrier: Barrier, results: multiprocessing.Queue
) -> None:
    """One process: wait for the others, then create sessions from 16 coroutines; report
    the seconds taken."""

    async def run() -> None:
        async with StateStore.open(url, migrate=False) as store:
            await asyncio.gather(
                *(store.save_session(Session(user_id="warm")) for _ in range(WRITERS))
            )
            lanes = [[Session(user_id="u") for _ in range(creates)] for _ in range(WRITERS)]
            barrier.wait()
            started = time.perf_counter()

            async def create(sessions: list[Session]) -> None:
                for session in sessions:
                    await store.save_session(session)

            await asyncio.gather(*(create(sessions) for sessions in lanes))
            results.put(time.perf_counter() - started)

    asyncio.run(run())


def creates_per_second(url: URL, processes: int, creates: int) -> float:
    """All processes at once; the rate over the slowest one's time."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    text = url.render_as_string(hide_password=False)
    workers = [
        context.Process(target=create_sessions, args=(text, creates, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    seconds = max(results.get(timeout=300) for _ in workers)
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"a worker exited with {worker.exitcode}")
    return processes * WRITERS * creates / seconds


async def prepare(url: URL, *, one_row: bool) -> None:
    """Migrate a new database to head; with ``one_row``, count sessions in one row again."""
    await migrate.upgrade(url)
    if one_row:
        connection = await asyncpg.connect(dsn_of(url))
        await connection.execute(ONE_ROW_TRIGGER)
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--postgresql", default=SERVER, help="the server (a database URL)")
    parser.add_argument("--processes", type=int, default=4)
    options = parser.parse_args()
    server = make_url(options.postgresql)
    creates, rounds = (5, 1) if options.quick else (40, 2)
    print(
        f"{options.processes} processes x {WRITERS} coroutines x {creates} new sessions, "
        f"{rounds} round(s) each, alternating"
    )
    rates: dict[str, list[float]] = {"one row (before 0004)": [], "16 shards (0004)": []}
    for _ in range(rounds):
        for label, one_row in zip(rates, (True, False), strict=True):
            with new_database(server) as (url, _):
                asyncio.run(prepare(url, one_row=one_row))
                rates[label].append(creates_per_second(url, options.processes, creates))
    print("| session count kept in | creates/s (best round) |")
    print("|---|---|")
    for label, measured in rates.items():
        print(f"| {label} | {max(measured):,.0f} |")
    before, after = (max(measured) for measured in rates.values())
    print(f"shards / one row: {after / before:.2f}x")


if __name__ == "__main__":
    main()
