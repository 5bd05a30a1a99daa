"""PostgreSQL as a multi-writer server: migrations, types, and several processes at once.

The repository's behaviour on PostgreSQL is tested by every test that takes the ``store``
fixture; these tests are about what only a server shared by processes has.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection

from statestore import Session, StateStore, UserMessage, migrate
from statestore._schema import metadata

from .conftest import run_apart, server_dsn

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.postgresql


def url_text(url: URL) -> str:
    """Return a URL as text a subprocess can take."""
    return url.render_as_string(hide_password=False)


def run_workers(command: str, url: URL, arguments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one ``tests.pg_workers`` process per argument set, all at once; return their output."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.pg_workers", command, url_text(url), json.dumps(args)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in arguments
    ]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        results.append(json.loads(stdout))
    return results


async def columns(url: URL) -> dict[tuple[str, str], str]:
    """Return each statestore column's PostgreSQL type, by (table, column)."""
    connection = await asyncpg.connect(server_dsn(url.database))
    try:
        rows = await connection.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema()"
        )
    finally:
        await connection.close()
    return {(row["table_name"], row["column_name"]): row["data_type"] for row in rows}


# -- migrations -------------------------------------------------------------------------------


async def test_upgrade_creates_what_the_models_declare(fresh_postgresql: URL) -> None:
    """After upgrade, autogenerate finds nothing to change: same tables, indexes, constraints."""
    await migrate.upgrade(fresh_postgresql)
    async with (
        StateStore.open(fresh_postgresql, migrate=False) as store,
        store.engine.connect() as connection,
    ):
        differences = await connection.run_sync(_differences)
    assert differences == []


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={"include_object": migrate.include_object, "include_name": migrate.include_name},
    )
    return list(compare_metadata(context, metadata))


async def test_timestamps_are_timestamptz_and_views_exist(fresh_postgresql: URL) -> None:
    """Timestamps are ``timestamp with time zone``; the analytics views are created too."""
    await migrate.upgrade(fresh_postgresql)
    types = await columns(fresh_postgresql)
    for table, column in [
        ("sessions", "created_at"),
        ("sessions", "updated_at"),
        ("messages", "created_at"),
        ("responses", "created_at"),
        ("documents", "updated_at"),
    ]:
        assert types[table, column] == "timestamp with time zone", (table, column)
    assert types["session_overview", "duration_seconds"] == "double precision"
    assert types["session_exchanges", "evaluation_passed"] == "boolean"


async def test_every_revision_upgrades_and_downgrades(fresh_postgresql: URL) -> None:
    """Each revision goes up and down on PostgreSQL, keeping the rows stored."""
    revisions = [
        script.revision
        for script in reversed(list(ScriptDirectory(migrate.script_location()).walk_revisions()))
    ]
    for revision in revisions:
        await migrate.upgrade(fresh_postgresql, revision)
        assert await migrate.current_revision(fresh_postgresql) == revision
    async with StateStore.open(fresh_postgresql, migrate=False) as store:
        session = Session(user_id="u", user_messages=[UserMessage(content="kept")])
        await store.save_session(session)
    for revision in reversed(revisions[:-1]):
        await migrate.downgrade(fresh_postgresql, revision)
        assert await migrate.current_revision(fresh_postgresql) == revision
    await migrate.upgrade(fresh_postgresql)
    async with StateStore.open(fresh_postgresql, migrate=False) as store:
        assert await store.load_session(session.id) == session
    await migrate.downgrade(fresh_postgresql, "base")
    assert await migrate.current_revision(fresh_postgresql) is None


def test_alembic_command_line_upgrades_postgresql(fresh_postgresql: URL) -> None:
    """``alembic -x db=postgresql+asyncpg://... upgrade head`` from the checkout works."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "alembic",
            "-x",
            f"db={url_text(fresh_postgresql)}",
            "upgrade",
            "head",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert asyncio.run(migrate.current_revision(fresh_postgresql)) == migrate.head_revision()


def test_processes_starting_together_migrate_once(fresh_postgresql: URL) -> None:
    """Six processes opening a new database at once all succeed: the advisory lock queues them."""
    script = (
        "import asyncio, sys\n"
        "from statestore import StateStore\n"
        "async def main():\n"
        "    async with StateStore.open(sys.argv[1]) as store:\n"
        "        await store.get_or_create_session('u', 'shared')\n"
        "asyncio.run(main())\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, url_text(fresh_postgresql)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    assert asyncio.run(migrate.current_revision(fresh_postgresql)) == migrate.head_revision()


# -- several processes on one server ----------------------------------------------------------


def test_update_session_with_loses_no_update_across_processes(target: Any) -> None:
    """Four processes incrementing the same sessions through update_session_with lose nothing."""
    session_ids = ["a", "b", "c"]

    async def create() -> None:
        async with StateStore.open(target) as store:
            for session_id in session_ids:
                await store.save_session(Session(id=session_id, user_id="u"))

    asyncio.run(create())
    results = run_workers("increment", target, [{"session_ids": session_ids, "rounds": 5}] * 4)

    async def counts() -> list[int]:
        async with StateStore.open(target) as store:
            loaded = [await store.load_session(session_id) for session_id in session_ids]
        return [session.metadata["count"] for session in loaded if session is not None]

    assert sum(result["updates"] for result in results) == 4 * 3 * 4 * 5
    assert asyncio.run(counts()) == [4 * 4 * 5] * 3


def test_get_or_create_racing_processes_create_one_session(target: Any) -> None:
    """Four processes, each racing eight calls, create exactly one session and all get it."""
    results = run_workers("get_or_create", target, [{"session_id": "raced", "tries": 8}] * 4)
    users = {user for result in results for user in result["users"]}
    assert len(users) == 1

    async def listed() -> list[str]:
        async with StateStore.open(target) as store:
            return [summary.user_id for summary in await store.list_sessions()]

    assert asyncio.run(listed()) == sorted(users)


def test_racing_saves_of_stale_copies_fail_nothing_and_keep_a_whole_state(target: Any) -> None:
    """Processes loading, appending and saving one session all succeed; the last save wins whole."""

    async def create() -> None:
        async with StateStore.open(target) as store:
            await store.save_session(Session(id="hot", user_id="u"))

    asyncio.run(create())
    run_workers(
        "append",
        target,
        [{"session_id": "hot", "rounds": 15, "worker": f"w{index}"} for index in range(4)],
    )

    async def stored() -> Session | None:
        async with StateStore.open(target) as store:
            return await store.load_session("hot")

    session = asyncio.run(stored())
    assert session is not None
    contents = [message.content for message in session.user_messages]
    # Whatever interleaving won, the stored history is one save's: each worker's messages
    # in its own order, and no position holding two.
    assert contents
    for worker in range(4):
        mine = [content for content in contents if content.startswith(f"w{worker}-")]
        assert mine == sorted(mine, key=lambda content: int(content.split("-")[1]))


async def test_saves_of_different_sessions_do_not_wait_for_each_other(
    store: StateStore, postgresql_url: URL
) -> None:
    """While one session's row is locked by another transaction, another session saves."""
    await store.save_session(Session(id="locked", user_id="u"))
    blocker = await asyncpg.connect(server_dsn(postgresql_url.database))
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT 1 FROM sessions WHERE id = 'locked' FOR UPDATE")
        waiting = asyncio.create_task(store.save_session(Session(id="locked", user_id="v")))
        await asyncio.wait_for(store.save_session(Session(id="free", user_id="u")), timeout=30)
        assert not waiting.done()  # the locked session's save is still waiting
        await transaction.rollback()
        await asyncio.wait_for(waiting, timeout=30)
    finally:
        await blocker.close()
    locked = await store.load_session("locked")
    assert locked is not None
    assert locked.user_id == "v"


@pytest.mark.postgresql
def test_prunes_deletes_and_saves_from_several_processes_never_deadlock(
    fresh_postgresql: URL,
) -> None:
    """Four processes prune, delete and re-save their sessions at once, with no deadlock."""
    run_apart(migrate.upgrade(fresh_postgresql))
    results = run_workers(
        "prune_race", fresh_postgresql, [{"worker": index, "rounds": 150} for index in range(4)]
    )
    assert [result["errors"] for result in results] == [[], [], [], []]
