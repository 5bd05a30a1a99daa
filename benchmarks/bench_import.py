"""Importing a file store's directory, against the file store merely reading it.

Writes N session files of 20 messages each (10 user messages, 10 agent responses) as the
file store wrote them, then measures, in one run:

* the file store's floor: read every file and parse its JSON (``json.loads``);
* the file store's own read: read and validate every file into a ``Session``, as its
  listing did;
* ``statestore import`` into a new SQLite database (default settings, synchronous=FULL),
  files read in a thread of the process (``workers=0``, the API's default), then again into
  another new database with worker processes reading (``--workers``, by default as many as
  the CLI uses, at least one; the quick run has fewer files than the 2,000 from which an
  import uses them, so there both rows read in a thread);
* the same import again, which finds everything unchanged;
* ``statestore export`` of the database back to files.

Figures are files per second and ratios to the floor and to the file store's own read
(the target: an import within 2x of read + validate); the machine is noisy, ratios more
so than absolute rates.

Run:  python benchmarks/bench_import.py            (10,000 sessions, about a minute)
      python benchmarks/bench_import.py --quick    (500 sessions; a smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from statestore import AgentResponse, Session, StateStore, UserMessage
from statestore.filestore import session_file_text


def write_files(root: Path, count: int) -> None:
    """Write ``count`` session files of 20 messages under ``root/sessions``."""
    folder = root / "sessions"
    folder.mkdir(parents=True)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for index in range(count):
        moment = start + timedelta(minutes=index)
        session = Session(
            id=f"session-{index:06d}",
            user_id=f"user-{index % 97}",
            created_at=moment,
            metadata={"project_ids": f"proj-{index % 7}", "tags": ["a", "b"]},
        )
        for turn in range(10):
            at = moment + timedelta(seconds=turn * 10)
            session.user_messages.append(
                UserMessage(content=f"question {turn} of session {index} " * 4, timestamp=at)
            )
            session.agent_responses.append(
                AgentResponse(
                    content=f"answer {turn} " * 20,
                    session_id=session.id,
                    seed_id=f"seed-{turn % 3}",
                    phase_reached="execute",
                    evaluation_passed=turn % 2 == 0,
                    timestamp=at + timedelta(seconds=5),
                )
            )
        session.updated_at = moment + timedelta(seconds=100)
        (folder / f"{session.id}.json").write_text(session_file_text(session), encoding="utf-8")


def timed(work: object) -> float:
    """Return the seconds ``work()`` took."""
    started = time.perf_counter()
    work()  # type: ignore[operator]
    return time.perf_counter() - started


def read_and_parse(root: Path) -> None:
    """The file store's floor: read and parse every session file."""
    for path in (root / "sessions").glob("*.json"):
        json.loads(path.read_bytes())


def read_and_validate(root: Path) -> None:
    """The file store's own read: every file into a Session."""
    for path in (root / "sessions").glob("*.json"):
        Session.model_validate_json(path.read_bytes())


async def import_and_export(root: Path, work: Path, workers: int) -> tuple[float, ...]:
    """Return seconds for a first import read in a thread, one read by worker processes,
    a second import (everything unchanged) and an export."""
    seconds: list[float] = []
    for name, count in (("thread", 0), ("workers", workers)):
        async with StateStore.open(work / f"{name}.db") as store:
            started = time.perf_counter()
            first = await store.import_directory(root, workers=count)
            seconds.append(time.perf_counter() - started)
            if not first.complete or first.sessions_added == 0:
                raise SystemExit(f"the import did not store every file: {first}")
    async with StateStore.open(work / "workers.db") as store:
        started = time.perf_counter()
        again = await store.import_directory(root, workers=workers)
        seconds.append(time.perf_counter() - started)
        if again.sessions_unchanged != first.sessions_added:
            raise SystemExit(f"the second import changed something: {again}")
        started = time.perf_counter()
        await store.export_directory(work / "exported")
        seconds.append(time.perf_counter() - started)
    return tuple(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 sessions: a smoke test")
    parser.add_argument(
        "--workers",
        type=int,
        default=max(1, min(4, (os.cpu_count() or 1) - 1)),
        help="worker processes for the parallel import (default: the CLI's, at least 1)",
    )
    arguments = parser.parse_args()
    count = 500 if arguments.quick else 10_000
    workers = arguments.workers
    work = Path(tempfile.mkdtemp(prefix="statestore-import-"))
    try:
        root = work / "files"
        write_files(root, count)
        parse = timed(lambda: read_and_parse(root))
        validate = timed(lambda: read_and_validate(root))
        threaded, parallel, again, export = asyncio.run(import_and_export(root, work, workers))
    finally:
        shutil.rmtree(work)

    def row(name: str, seconds: float) -> str:
        return (
            f"| {name} | {count / seconds:,.0f} | {seconds / parse:.2f}x "
            f"| {seconds / validate:.2f}x |"
        )

    print(f"{count:,} session files of 20 messages each; {os.cpu_count()} CPUs\n")
    print("| operation | files/s | time vs read+parse | time vs read+validate |")
    print("|---|---|---|---|")
    print(row("file store floor: read + json.loads", parse))
    print(row("file store read: read + validate into Session", validate))
    print(row("statestore import (new database), read in a thread", threaded))
    print(row(f"statestore import (new database), {workers} worker process(es)", parallel))
    print(row("statestore import again (all unchanged)", again))
    print(row("statestore export", export))


if __name__ == "__main__":
    main()
