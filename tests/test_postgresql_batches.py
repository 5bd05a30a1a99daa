"""PostgreSQL's write path: group commit, failure isolation, lock order, the sharded counter.

The store's contract on PostgreSQL is tested by every test that takes ``store``; these are
about how saves share transactions on a server that several processes write at once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import URL, event

from statestore import (
    DatabaseError,
    InvalidArgumentError,
    PruneConfig,
    Session,
    StateStore,
    migrate,
)

from .conftest import run_apart, server_dsn
from .test_postgresql import run_workers
from .test_store import make_session

pytestmark = pytest.mark.postgresql

POISON = """
CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id = 'poison' THEN RAISE EXCEPTION 'poisoned session'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER reject_poison BEFORE INSERT OR UPDATE ON sessions
FOR EACH ROW EXECUTE FUNCTION reject_poison()
"""


async def transactions_that_wrote(raw: asyncpg.Connection, table: str) -> int:
    """How many transactions wrote the rows of ``table`` now there (their ``xmin``)."""
    count: int = await raw.fetchval(f"SELECT count(DISTINCT xmin::text) FROM {table}")
    return count


async def test_concurrent_saves_commit_together(
    postgresql_url: URL, raw: asyncpg.Connection
) -> None:
    """Sixty-four saves called at once are stored by fewer transactions than saves."""
    async with StateStore.open(postgresql_url) as store:
        sessions = [make_session(f"u{index}", messages=2) for index in range(64)]
        await asyncio.gather(*(store.save_session(session) for session in sessions))

        assert await transactions_that_wrote(raw, "sessions") < 16
        for session in sessions:
            assert await store.load_session(session.id) == session


async def test_one_rejected_save_fails_alone(postgresql_url: URL, raw: asyncpg.Connection) -> None:
    """A save the server rejects fails its own caller only; the rest of its batch commits."""
    await raw.execute(POISON)
    try:
        async with StateStore.open(postgresql_url) as store:
            good = [make_session(f"u{index}") for index in range(20)]
            saves = [store.save_session(session) for session in good[:10]]
            saves.append(store.save_session(make_session("poison")))
            saves.extend(store.save_session(session) for session in good[10:])

            outcomes = await asyncio.gather(*saves, return_exceptions=True)

            failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            assert len(failures) == 1
            assert isinstance(failures[0], DatabaseError)
            assert "poisoned session" in str(failures[0])
            assert {s.id for s in await store.list_sessions()} == {s.id for s in good}
    finally:
        await raw.execute("DROP TRIGGER reject_poison ON sessions; DROP FUNCTION reject_poison()")


async def test_saves_of_one_session_called_together_commit_in_call_order(
    postgresql_url: URL, raw: asyncpg.Connection
) -> None:
    """Ten saves of one session called at once (each a different state) leave the last."""
    async with StateStore.open(postgresql_url) as store:
        states = []
        session = make_session(messages=1)
        for index in range(10):
            session = session.model_copy(deep=True)
            session.add_user_message(f"turn {index}")
            states.append(session)
        await asyncio.gather(*(store.save_session(state) for state in states))

        assert await store.load_session(session.id) == states[-1]


def test_batches_from_processes_saving_the_same_sessions_never_deadlock(
    fresh_postgresql: URL,
) -> None:
    """Four processes save one set of sessions from 16 coroutines each: no save fails.

    Their batches lock overlapping rows; taken in id order, no two wait in a circle.
    """
    run_apart(migrate.upgrade(fresh_postgresql))
    results = run_workers(
        "overlapping_saves",
        fresh_postgresql,
        [{"worker": index, "rounds": 60} for index in range(4)],
    )
    assert [result["errors"] for result in results] == [[], [], [], []]


async def test_creates_on_two_connections_do_not_wait_for_each_other(
    raw: asyncpg.Connection, postgresql_url: URL
) -> None:
    """Two open transactions that each insert a session both go on: no shared counter row."""
    others = [await asyncpg.connect(server_dsn(postgresql_url.database)) for _ in range(17)]
    try:
        pids = {await other.fetchval("SELECT pg_backend_pid()"): other for other in others}
        shards: dict[int, asyncpg.Connection] = {}
        for pid, other in pids.items():
            shards.setdefault(pid % 16, other)
        first, second = list(shards.values())[:2]  # 17 backends cover at least 2 shards
        insert = (
            "INSERT INTO sessions (id, user_id, message_count, response_count, created_at, "
            "updated_at, metadata, extra, version, state_token, unset_fields) "
            "VALUES ($1, 'u', 0, 0, now(), now(), '{}', '{}', 1, 1, '[]')"
        )
        for connection in (first, second):
            await connection.execute("BEGIN; SET LOCAL lock_timeout = '2s'")
        await first.execute(insert, "one")
        await second.execute(insert, "two")  # would time out on a single counter row
        for connection in (first, second):
            await connection.execute("COMMIT")
        counted = await raw.fetchval(
            "SELECT sum(value) FROM statestore_counters WHERE name LIKE 'sessions/%'"
        )
        assert counted == 2
    finally:
        for other in others:
            await other.close()


async def connections_opened_by_bursts(url: URL, **options: int) -> tuple[int, int]:
    """Open a store; run bursts of reads and saves wider than any pool; return its pool size
    and how many connections it opened."""
    opened: list[object] = []

    def count(*_: object) -> None:
        opened.append(None)

    async with StateStore.open(url, migrate=False, **options) as store:
        event.listen(store.engine.sync_engine, "connect", count)
        for _ in range(3):
            await asyncio.gather(
                *(store.save_session(Session(user_id="u")) for _ in range(40)),
                *(store.list_sessions() for _ in range(40)),
            )
        return store.engine.pool.size(), len(opened)


async def test_the_pool_is_fixed_and_its_size_a_knob(postgresql_url: URL) -> None:
    """A store opened from a URL keeps 16 connections and opens no more; pool_size sets it."""
    size, opened = await connections_opened_by_bursts(postgresql_url)
    assert size == 16
    assert opened <= 16
    size, opened = await connections_opened_by_bursts(postgresql_url, pool_size=4)
    assert size == 4
    assert opened <= 4


@pytest.mark.parametrize("pool_size", [0, -1, True, 2.5])
async def test_a_pool_size_that_is_not_a_positive_int_is_refused(
    postgresql_url: URL, pool_size: object
) -> None:
    with pytest.raises(InvalidArgumentError, match="pool_size"):
        await StateStore.open(postgresql_url, pool_size=pool_size)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["lots", "-1"])
async def test_a_statement_cache_size_that_is_not_a_count_is_refused(
    postgresql_url: URL, value: str
) -> None:
    with pytest.raises(InvalidArgumentError, match="statement_cache_size"):
        await StateStore.open(postgresql_url.update_query_dict({"statement_cache_size": value}))


async def test_statement_cache_size_zero_reaches_asyncpg(postgresql_url: URL) -> None:
    """``?statement_cache_size=0`` (for PgBouncer) turns asyncpg's statement cache off."""
    url = postgresql_url.update_query_dict({"statement_cache_size": "0"})
    async with StateStore.open(url, migrate=False) as store:
        await store.save_session(Session(id="cached", user_id="u"))
        async with store.engine.connect() as connection:
            raw_connection = await connection.get_raw_connection()
            assert raw_connection.driver_connection._stmt_cache.get_max_size() == 0
        assert await store.load_session("cached") is not None


async def test_upgrade_to_0004_keeps_the_count_and_downgrade_sums_it(
    fresh_postgresql: URL,
) -> None:
    """Sessions stored at 0003 are counted in shard 0; a downgrade folds every shard back."""
    await migrate.upgrade(fresh_postgresql, "0003")
    connection = await asyncpg.connect(server_dsn(fresh_postgresql.database))
    try:
        for index in range(5):
            await connection.execute(
                "INSERT INTO sessions (id, user_id, message_count, response_count, created_at, "
                "updated_at, metadata, extra, version, state_token, unset_fields) "
                "VALUES ($1, 'u', 0, 0, now(), now(), '{}', '{}', 1, 1, '[]')",
                f"s{index}",
            )
        await migrate.upgrade(fresh_postgresql)
        shards = dict(await connection.fetch("SELECT name, value FROM statestore_counters"))
        assert len(shards) == 16
        assert shards["sessions/0"] == sum(shards.values()) == 5
        async with StateStore.open(fresh_postgresql) as store:
            await store.save_session(Session(id="new", user_id="u"))
            await store.delete_session("s0")
            await store.delete_session("s1")
        await migrate.downgrade(fresh_postgresql, "0003")
        assert await connection.fetch("SELECT name, value FROM statestore_counters") == [
            ("sessions", 4)
        ]
        await connection.execute("DELETE FROM sessions WHERE id = 's2'")
        assert await connection.fetchval("SELECT value FROM statestore_counters") == 3
    finally:
        await connection.close()


async def test_cancelled_reads_leave_no_transaction_open(
    postgresql_url: URL, raw: asyncpg.Connection
) -> None:
    """Loads cancelled at every point finish apart: no pooled connection stays in a
    transaction, and the next read sees a save made after them."""
    async with StateStore.open(postgresql_url, pool_size=2) as store:
        session = make_session(messages=300)
        await store.save_session(session)
        for attempt in range(40):
            load = asyncio.ensure_future(store.load_session(session.id))
            for _ in range(attempt % 8):
                await asyncio.sleep(0)
            load.cancel()
        later = make_session("later", messages=1)
        await store.save_session(later)
        assert await store.load_session(later.id) == later
        for _ in range(3):  # every pooled connection, in turn
            assert await store.load_session(later.id) == later
        idle_in_transaction = await raw.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
        )
        assert idle_in_transaction == 0


async def test_a_prune_locks_the_rows_it_deletes_in_id_order(
    postgresql_url: URL, raw: asyncpg.Connection
) -> None:
    """A TTL prune takes its rows in id order, as batches of saves do, not in the order it
    finds them: while it waits for the first id, it holds none of the others."""
    stale = datetime(2020, 1, 1, tzinfo=UTC)
    async with StateStore.open(postgresql_url) as store:
        older = make_session("u", updated_at=stale)  # stored first, and oldest
        older.id = "b-older"
        newer = make_session("u", updated_at=stale + timedelta(days=1))
        newer.id = "a-newer"  # the first id
        await store.save_session(older)
        await store.save_session(newer)
        await raw.execute("BEGIN")
        await raw.execute("SELECT 1 FROM sessions WHERE id = 'a-newer' FOR UPDATE")
        prune = asyncio.ensure_future(store.prune_sessions(PruneConfig(ttl_hours=24)))
        await asyncio.sleep(0.3)  # the prune now waits for the row held here
        await raw.execute("SET LOCAL lock_timeout = '500ms'")  # below deadlock_timeout
        await raw.execute("SELECT 1 FROM sessions WHERE id = 'b-older' FOR UPDATE")
        await raw.execute("ROLLBACK")
        assert await prune == 2
