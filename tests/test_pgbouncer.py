"""The ``pgbouncer`` backend really pools by transaction, and the store works behind it.

In transaction pooling mode a client connection holds a server connection only while a
transaction runs. A named prepared statement left on a server connection is then seen by
whichever client runs there next, and a statement prepared by one transaction is missing
from the server connection the next transaction gets: the ways a driver's prepared
statements break behind PgBouncer. The store contract tests run on this backend too; these
tests show that they ran through PgBouncer and that many clients sharing its few server
connections read back every save.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import asyncpg
import pytest
from sqlalchemy import URL

from statestore import Session, StateStore

from .conftest import empty_tables, server_dsn
from .pgbouncer import SERVER_POOL_SIZE
from .test_delta import exchange
from .test_store import make_session

pytestmark = pytest.mark.pgbouncer

BACKEND_PID = "SELECT pg_backend_pid()"


def client_dsn(url: URL) -> str:
    """Return an asyncpg DSN for ``url`` (the store's URL query is not asyncpg's)."""
    return url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)


async def test_client_connections_take_turns_on_a_server_connection(pgbouncer_url: URL) -> None:
    """Two open clients run on one server backend; a transaction keeps its backend to itself."""
    first, second = [
        await asyncpg.connect(client_dsn(pgbouncer_url), statement_cache_size=0) for _ in range(2)
    ]
    try:
        shared = await first.fetchval(BACKEND_PID)
        served_next = await second.fetchval(BACKEND_PID)
        async with first.transaction():
            held = await first.fetchval(BACKEND_PID)
            served_meanwhile = await second.fetchval(BACKEND_PID)
            held_still = await first.fetchval(BACKEND_PID)
    finally:
        await first.close()
        await second.close()

    assert served_next == shared  # no session pooling: the server connection was free again
    assert held_still == held != served_meanwhile  # pooled by transaction, not by statement


async def test_saves_from_more_clients_than_server_connections_all_read_back(
    postgresql_url: URL, pgbouncer_url: URL
) -> None:
    """Saves and loads through stores outnumbering PgBouncer's server connections read back."""
    await empty_tables(postgresql_url)
    async with AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(StateStore.open(pgbouncer_url))
            for _ in range(3 * SERVER_POOL_SIZE)
        ]

        async def converse(index: int) -> Session:
            """Save a growing session and a document through one store, loading each back."""
            store = stores[index % len(stores)]
            session = make_session(f"user-{index}", messages=index % 3)
            for turn in range(3):
                exchange(session, f"turn {turn} of {index}")
                await store.save_session(session)
                assert await store.load_session(session.id) == session
                await store.save_json("notes", f"{index}", {"turn": turn})
                assert await store.load_json("notes", f"{index}") == {"turn": turn}
            return session

        saved = await asyncio.gather(*(converse(index) for index in range(4 * len(stores))))
        servers = await server_backends(postgresql_url)
        read_back = [await stores[-1].load_session(session.id) for session in saved]

    assert read_back == saved
    assert servers <= SERVER_POOL_SIZE < len(stores)


async def server_backends(url: URL) -> int:
    """Count the server backends on ``url``'s database other than the one counting."""
    connection = await asyncpg.connect(server_dsn(url.database))
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            url.database,
        )
    finally:
        await connection.close()
    return count
