"""Worker processes for the multi-process PostgreSQL tests (``python -m tests.pg_workers``).

Each command opens its own store on the URL given, does its share of the work, and prints
one JSON line with what it did.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from datetime import UTC, datetime, timedelta

from statestore import AgentResponse, PruneConfig, Session, StateStore, StateStoreError


async def increment(url: str, session_ids: list[str], rounds: int) -> dict[str, int]:
    """Add one to each session's ``metadata["count"]``, ``rounds`` times, concurrently."""
    async with StateStore.open(url, migrate=False) as store:

        def bump(session: Session) -> None:
            session.metadata["count"] = session.metadata.get("count", 0) + 1

        async def one(session_id: str) -> None:
            for _ in range(rounds):
                assert await store.update_session_with(session_id, bump) is not None

        await asyncio.gather(*(one(session_id) for session_id in session_ids * 4))
    return {"updates": len(session_ids) * 4 * rounds}


async def get_or_create(url: str, session_id: str, tries: int) -> dict[str, list[str]]:
    """Call get_or_create_session ``tries`` times at once; return the users it got back."""
    async with StateStore.open(url, migrate=False) as store:
        sessions = await asyncio.gather(
            *(store.get_or_create_session(f"user-{index}", session_id) for index in range(tries))
        )
    return {"users": sorted({session.user_id for session in sessions})}


async def append(url: str, session_id: str, rounds: int, worker: str) -> dict[str, int]:
    """Load the session and append one message, ``rounds`` times (each a stale-prone save)."""
    async with StateStore.open(url, migrate=False) as store:
        for round_ in range(rounds):
            session = await store.load_session(session_id)
            assert session is not None
            session.add_user_message(f"{worker}-{round_}")
            await store.save_session(session)
    return {"saves": rounds}


async def prune_race(url: str, worker: int, rounds: int) -> dict[str, list[str]]:
    """Re-save and delete own sessions (half stale) while pruning; return every error."""
    rng = random.Random(worker)
    errors: list[str] = []
    stale = datetime.now(UTC) - timedelta(days=30)
    async with StateStore.open(url, migrate=False) as store:

        async def resave() -> None:
            for turn in range(rounds):
                session = Session(id=f"w{worker}-s{rng.randrange(8)}", user_id="u")
                session.add_user_message("hello")
                session.updated_at = stale if rng.random() < 0.5 else datetime.now(UTC)
                try:
                    if turn % 9 == 0:
                        await store.delete_session(session.id)
                    else:
                        await store.save_session(session)
                except StateStoreError as error:
                    errors.append(f"save: {error}")

        async def prune() -> None:
            for _ in range(rounds // 3):
                try:
                    await store.prune_sessions(PruneConfig(max_sessions=12, ttl_hours=24))
                except StateStoreError as error:
                    errors.append(f"prune: {error}")

        await asyncio.gather(*[resave() for _ in range(4)], *[prune() for _ in range(4)])
    return {"errors": errors}


async def overlapping_saves(url: str, worker: int, rounds: int) -> dict[str, list[str]]:
    """Save one shared set of sessions from 16 coroutines, in a random order each round.

    Every process's batches lock some of the same rows; each session alternates between a
    whole rewrite (a new object) and an append to the copy loaded here.
    """
    rng = random.Random(worker)
    errors: list[str] = []
    ids = [f"shared-{index}" for index in range(24)]
    async with StateStore.open(url, migrate=False) as store:

        async def saver(lane: int) -> None:
            for turn in range(rounds):
                session_id = rng.choice(ids)
                try:
                    loaded = await store.load_session(session_id)
                    if loaded is None or turn % 2:
                        session = Session(id=session_id, user_id=f"w{worker}")
                        session.add_user_message(f"w{worker}-{lane}-{turn}")
                    else:
                        session = loaded
                        session.add_user_message(f"w{worker}-{lane}-{turn}")
                        session.add_agent_response(AgentResponse(content=f"r{turn}"))
                    await store.save_session(session)
                except StateStoreError as error:
                    errors.append(f"{type(error).__name__}: {error}")

        await asyncio.gather(*(saver(lane) for lane in range(16)))
    return {"errors": errors}


COMMANDS = {
    "overlapping_saves": overlapping_saves,
    "increment": increment,
    "get_or_create": get_or_create,
    "append": append,
    "prune_race": prune_race,
}


def main() -> None:
    command, url, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    print(json.dumps(asyncio.run(COMMANDS[command](url, **arguments))))


if __name__ == "__main__":
    main()
