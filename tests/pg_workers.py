"""Worker processes for the multi-process PostgreSQL tests (``python -m tests.pg_workers``).

Each command opens its own store on the URL given, does its share of the work, and prints
one JSON line with what it did.
"""

from __future__ import annotations

import asyncio
import json
import sys

from statestore import Session, StateStore


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


COMMANDS = {"increment": increment, "get_or_create": get_or_create, "append": append}


def main() -> None:
    command, url, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    print(json.dumps(asyncio.run(COMMANDS[command](url, **arguments))))


if __name__ == "__main__":
    main()
