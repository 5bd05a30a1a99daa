"""How many pages each SQLite write puts in the WAL, and which tables and indexes they are.

At ``synchronous=FULL`` a commit fsyncs every page it wrote, so the pages a write dirties
are its cost on disk (and what a later checkpoint copies). For each operation this script
checkpoints the WAL to empty, runs the operation once through a :class:`StateStore`, then
reads the WAL's frame headers and names the b-tree each page belongs to (SQLite's
``dbstat`` table). Figures are averages over many runs of the operation and do not depend
on the machine's speed.

Two databases at head, in one run: one as migrated, and one with the full-text search
index's triggers dropped (revision 0006), so that the pages the search index adds to each
write show beside the rest. Two kinds of save: an append that keeps the session's own
fields (the row is updated without them), and an append that also changes
``active_seed_id``, which rewrites the whole row.

Run:  python benchmarks/bench_wal_pages.py           (100 runs of each operation)
      python benchmarks/bench_wal_pages.py --quick   (10 runs)
      python benchmarks/bench_wal_pages.py --json    (the counts as JSON, per b-tree)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import struct
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from statestore import AgentResponse, Session, StateStore, UserMessage, migrate

QUESTION = "How do I keep an agent's conversation state when the service restarts? " * 2
ANSWER = "Persist each exchange as it happens, and load the session on the next request. " * 4
SEEDED = 400
HISTORY = 10
SCHEMAS = ("without search", "head")
SEARCH_TRIGGERS = [
    f"{table}_search_{event}"
    for table in ("messages", "responses")
    for event in ("insert", "delete", "update")
]


def exchange(at: datetime) -> tuple[UserMessage, AgentResponse]:
    """One user message and one agent response at ``at``."""
    return (
        UserMessage(content=QUESTION, timestamp=at),
        AgentResponse(
            content=ANSWER,
            seed_id="seed-1",
            phase_reached="execute",
            evaluation_passed=True,
            timestamp=at,
        ),
    )


def conversation(index: int, start: datetime) -> Session:
    """The index-th seeded session: 10 exchanges, a second apart, interleaved in time with
    the other sessions' (as concurrent conversations are)."""
    session = Session(
        id=f"s{index:05d}",
        user_id=f"user-{index % 10}",
        active_seed_id="seed-1",
        created_at=start,
    )
    for turn in range(HISTORY):
        message, response = exchange(start + timedelta(seconds=turn, microseconds=index))
        session.user_messages.append(message)
        session.agent_responses.append(response)
    return session


def wal_pages(path: Path) -> list[int]:
    """The page number of every frame in ``path``'s WAL, in order."""
    data = Path(f"{path}-wal").read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    return [
        struct.unpack(">I", data[offset : offset + 4])[0]
        for offset in range(32, len(data) - 23, 24 + page_size)
    ]


def page_owners(path: Path) -> dict[int, str]:
    """Which table or index each page of the database belongs to."""
    with sqlite3.connect(path) as connection:
        return dict(connection.execute("SELECT pageno, name FROM dbstat"))


def checkpoint(path: Path) -> None:
    """Copy the WAL into the database and empty it."""
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def measure(
    store: StateStore, path: Path, runs: int, operation: Callable[[int], Awaitable[object]]
) -> Counter[str]:
    """Run ``operation(i)`` for i in range(runs), each alone in the WAL; count its pages."""
    written: Counter[str] = Counter()
    for index in range(runs):
        checkpoint(path)
        await operation(index)
        owners = page_owners(path)
        written.update(owners.get(page, "(freed)") for page in wal_pages(path))
    return written


async def operations(folder: Path, schema: str, runs: int) -> dict[str, Counter[str]]:
    """Seed a database with ``schema`` and count the pages of each operation on it."""
    path = folder / f"{schema}.db"
    await migrate.upgrade(path)
    if schema != "head":
        with sqlite3.connect(path) as connection:
            for trigger in SEARCH_TRIGGERS:
                connection.execute(f"DROP TRIGGER {trigger}")
    start = datetime(2026, 3, 1, tzinfo=UTC)
    async with StateStore.open(path) as store:
        for first in range(0, SEEDED, 100):
            await asyncio.gather(
                *(store.save_session(conversation(i, start)) for i in range(first, first + 100))
            )
        kept = [await store.load_session(f"s{i:05d}") for i in range(runs)]
        changed = [await store.load_session(f"s{i:05d}") for i in range(runs, 2 * runs)]
        now = datetime.now(UTC)

        def appending(
            sessions: list[Session | None], seed: str | None
        ) -> Callable[[int], Awaitable[None]]:
            """Append one exchange to the index-th session and save it (with a new seed)."""

            async def append(index: int) -> None:
                session = sessions[index]
                assert session is not None
                message, response = exchange(now)
                session.user_messages.append(message)
                session.agent_responses.append(response)
                if seed is not None:
                    session.active_seed_id = seed
                session.updated_at = now
                await store.save_session(session)

            return append

        append, append_changing_seed = appending(kept, None), appending(changed, "seed-2")

        async def append_by_id(index: int) -> None:
            message, response = exchange(now)
            await store.append_to_session(
                f"s{2 * runs + index:05d}", user_messages=[message], agent_responses=[response]
            )

        async def create(index: int) -> None:
            session = Session(id=f"new{index}", user_id="user-new")
            await store.save_session(session)

        async def delete(index: int) -> None:
            assert await store.delete_session(f"s{3 * runs + index:05d}")

        return {
            "append (save_session)": await measure(store, path, runs, append),
            "append changing the seed": await measure(store, path, runs, append_changing_seed),
            "append_to_session": await measure(store, path, runs, append_by_id),
            "create an empty session": await measure(store, path, runs, create),
            f"delete a session of {HISTORY} exchanges": await measure(store, path, runs, delete),
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 runs of each operation")
    parser.add_argument("--json", action="store_true", help="print per-b-tree counts as JSON")
    arguments = parser.parse_args()
    runs = 10 if arguments.quick else 100
    with tempfile.TemporaryDirectory() as folder:
        measured = {schema: await operations(Path(folder), schema, runs) for schema in SCHEMAS}
    if arguments.json:
        print(
            json.dumps({r: {op: dict(c) for op, c in ops.items()} for r, ops in measured.items()})
        )
        return
    print(f"WAL pages per operation, average of {runs} runs ({SEEDED} sessions stored)\n")
    print("| operation | without search | head | head / without | b-trees written at head |")
    print("|---|---|---|---|---|")
    for name, at_head in measured["head"].items():
        before = sum(measured["without search"][name].values()) / runs
        after = sum(at_head.values()) / runs
        btrees = ", ".join(f"{tree} {count / runs:.1f}" for tree, count in sorted(at_head.items()))
        print(f"| {name} | {before:.1f} | {after:.1f} | {after / before:.2f}x | {btrees} |")


if __name__ == "__main__":
    asyncio.run(main())
