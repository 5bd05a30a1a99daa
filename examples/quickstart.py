"""Keep one conversation in the embedded SQLite default and read it back.

Run: python examples/quickstart.py [DATABASE_PATH]   (default: ./statestore.db)
"""

from __future__ import annotations

import asyncio
import sys

from statestore import AgentResponse, PruneConfig, StateStore


async def main(path: str) -> None:
    async with StateStore.open(path) as store:
        session = await store.get_or_create_session("user-1")
        session.add_user_message("Can you refactor the parser?")
        session.add_agent_response(
            AgentResponse(content="Here is a plan.", seed_id="seed-alpha", phase_reached="seed")
        )
        await store.save_session_with_prune(session, PruneConfig(max_sessions=100, ttl_hours=168))
        await store.save_markdown("seeds", "seed-alpha", "# Seed alpha\n\nGoal: build a parser.\n")

        print(f"database: {path}")
        for summary in await store.list_sessions():
            print(
                f"{summary.id}  user={summary.user_id}  messages={summary.message_count}"
                f"  updated={summary.updated_at:%Y-%m-%d %H:%M:%S}Z"
            )
        print("seeds:", ", ".join(await store.list_category("seeds")))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "statestore.db"))
