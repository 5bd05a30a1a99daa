"""Hostile use of the PostgreSQL write path: lanes, batches, the counter shards, the pool.

Each test attacks one promise of the README's PostgreSQL section or of the API docs with
real connections to the test server (and, where a lock held elsewhere is the attack, a
plain asyncpg connection holding it).
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import create_async_engine

from statestore import (
    DatabaseError,
    PruneConfig,
    Session,
    StateStore,
    StateStoreError,
    UserMessage,
)

from .test_store import make_session

pytestmark = pytest.mark.postgresql


async def backend_pid(store: StateStore) -> int:
    """The server backend of the (only) pooled connection of a store opened with a pool of 1."""
    async with store.engine.connect() as connection:
        pid: int = (await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
    return pid


async def counter_matches(raw: asyncpg.Connection) -> tuple[int, int]:
    """The sum of the session counter's shards and the number of sessions stored."""
    shards = await raw.fetchval(
        "SELECT coalesce(sum(value), 0) FROM statestore_counters WHERE name LIKE 'sessions/%'"
    )
    count = await raw.fetchval("SELECT count(*) FROM sessions")
    return int(shards), int(count)


def with_message(session: Session, content: str) -> Session:
    """A copy of ``session`` with one more user message."""
    copy = session.model_copy(deep=True)
    copy.user_messages.append(UserMessage(content=content, timestamp=session.updated_at))
    return copy


# -- call order ---------------------------------------------------------------------------


async def test_saves_from_two_stores_on_one_database_commit_in_call_order(
    postgresql_url: URL, raw: asyncpg.Connection
) -> None:
    """Saves of one session through two stores on one database, the URLs differing in
    driver, case and query, commit in call order.

    The first save shares a batch that waits for a row locked elsewhere, gives up after
    its lock timeout and goes on alone; the second, called after it, must still commit
    after it.
    """
    assert postgresql_url.host is not None
    other_spelling = postgresql_url.set(
        drivername="postgresql",
        host=postgresql_url.host.upper(),
        query={"statement_cache_size": "0"},
    )
    async with (
        StateStore.open(postgresql_url) as first,
        StateStore.open(other_spelling, migrate=False) as second,
    ):
        session = make_session("order", messages=1)
        await first.save_session(session)
        older, newer = with_message(session, "older"), with_message(session, "newer")
        await raw.execute("BEGIN")
        await raw.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session.id)
        saves = [first.save_session(older), first.save_session(make_session("partner"))]
        await asyncio.sleep(0.05)  # the batch of two is waiting for the row
        saves.append(second.save_session(newer))
        await asyncio.sleep(0.4)  # the batch gave up and its saves went on alone
        await raw.execute("ROLLBACK")
        await asyncio.gather(*saves)

        stored = await first.load_session(session.id)
        assert stored is not None
        assert stored.user_messages[-1].content == "newer"


async def test_mixed_writes_of_one_session_with_cancelled_callers_keep_call_order(
    postgresql_url: URL,
) -> None:
    """Save, append, delete, save, append of one session, each started in turn behind 40
    other saves and every caller cancelled at once, leave what running them in order
    leaves."""
    async with StateStore.open(postgresql_url) as store:
        session = make_session("mixed", messages=1)
        await store.save_session(session)
        filler = [store.save_session(make_session(f"f{index}")) for index in range(40)]
        last = with_message(session, "last state")
        calls = [
            lambda: store.save_session(with_message(session, "first state")),
            lambda: store.append_to_session(session.id, user_messages=[UserMessage(content="a1")]),
            lambda: store.delete_session(session.id),
            lambda: store.save_session(last),
            lambda: store.append_to_session(session.id, user_messages=[UserMessage(content="a2")]),
        ]
        waiters = []
        for call in calls:
            waiters.append(asyncio.ensure_future(call()))
            await asyncio.sleep(0)  # a coroutine operation is queued once it starts
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*filler)
        await store.close()

    async with StateStore.open(postgresql_url, migrate=False) as store:
        stored = await store.load_session(session.id)
        assert stored is not None
        assert [m.content for m in stored.user_messages] == [
            *(m.content for m in last.user_messages),
            "a2",
        ]


async def test_a_delete_called_between_two_saves_commits_between_them(
    postgresql_url: URL,
) -> None:
    """save, delete_session, save of one session gathered in that order leave the second
    save stored (saves and appends are queued when called; a delete should be too)."""
    async with StateStore.open(postgresql_url) as store:
        session = make_session("between", messages=1)
        await store.save_session(session)
        last = with_message(session, "after the delete")

        await asyncio.gather(
            store.save_session(with_message(session, "before the delete")),
            store.delete_session(session.id),
            store.save_session(last),
        )

        assert await store.load_session(session.id) == last


# -- the pool ------------------------------------------------------------------------------


async def test_update_fn_reading_through_the_store_on_a_pool_of_one_finishes(
    postgresql_url: URL,
) -> None:
    """An update whose fn reads through the store (which the docs allow) finishes on a
    host engine with a pool of one connection."""
    engine = create_async_engine(postgresql_url, pool_size=1, max_overflow=0, pool_timeout=2)
    store = StateStore(engine)
    try:
        session, other = make_session("updated"), make_session("read")
        await asyncio.gather(store.save_session(session), store.save_session(other))

        async def fn(current: Session) -> None:
            loaded = await store.load_session(other.id)
            assert loaded is not None
            current.metadata = {"read": loaded.user_id}

        updated = await asyncio.wait_for(store.update_session_with(session.id, fn), 5)

        assert updated is not None
        assert updated.metadata == {"read": "read"}
    finally:
        await store.close()
        await engine.dispose()


async def test_a_pool_of_one_serves_saves_reads_and_updates_together(
    postgresql_url: URL,
) -> None:
    """Saves, reads and updates at once on a pool of one connection all finish, and the
    pool has no connection checked out after close."""
    engine = create_async_engine(postgresql_url, pool_size=1, max_overflow=0, pool_timeout=5)
    store = StateStore(engine)
    try:
        sessions = [make_session(f"p{index}") for index in range(30)]
        await asyncio.gather(*(store.save_session(s) for s in sessions))

        def touch(current: Session) -> None:
            current.metadata = {"touched": True}

        work = [store.save_session(with_message(s, "again")) for s in sessions[:20]]
        work += [store.load_session(s.id) for s in sessions[20:]]
        work += [store.update_session_with(s.id, touch) for s in sessions[20:]]
        await asyncio.wait_for(asyncio.gather(*work), 10)
        await store.close()

        assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


# -- the counter shards ----------------------------------------------------------------------


async def test_a_slow_update_fn_does_not_hold_up_saves_of_other_sessions(
    postgresql_url: URL,
) -> None:
    """While one session's update fn runs for a while, a save of another session on a
    connection whose backend shares its counter shard commits without waiting for it."""
    updater = await StateStore.open(postgresql_url, pool_size=1)
    shard = await backend_pid(updater) % 16
    saver = None
    try:
        for _ in range(200):  # open connections until one's backend shares the shard
            candidate = await StateStore.open(postgresql_url, migrate=False, pool_size=1)
            if await backend_pid(candidate) % 16 == shard:
                saver = candidate
                break
            await candidate.close()
        assert saver is not None
        session = make_session("slow")
        await updater.save_session(session)
        started, release = asyncio.Event(), asyncio.Event()

        async def slow(current: Session) -> None:
            started.set()
            await release.wait()  # an LLM call, say
            current.metadata = {"slow": True}

        update = asyncio.ensure_future(updater.update_session_with(session.id, slow))
        await started.wait()
        await asyncio.wait_for(saver.save_session(make_session("unrelated")), timeout=30)
        assert not update.done()  # the save did not wait for the update to end
        release.set()
        await update
    finally:
        await updater.close()
        if saver is not None:
            await saver.close()


async def test_count_prune_racing_creates_on_many_connections_keeps_the_counter_true(
    postgresql_url: URL, raw: asyncpg.Connection
) -> None:
    """Count prunes from one store while three others create sessions leave the counter's
    shards summing to the number of sessions, and no operation fails."""
    stores = [await StateStore.open(postgresql_url, migrate=False) for _ in range(4)]
    try:
        pruner, *creators = stores

        async def create(store: StateStore, index: int) -> None:
            await asyncio.gather(
                *(store.save_session(make_session(f"c{index}-{n}")) for n in range(40))
            )

        async def prune() -> None:
            for _ in range(5):
                await pruner.prune_sessions(PruneConfig(max_sessions=30, ttl_hours=0))
                await asyncio.sleep(0.01)

        await asyncio.gather(prune(), *(create(s, i) for i, s in enumerate(creators)))

        shards, count = await counter_matches(raw)
        assert shards == count
    finally:
        for store in stores:
            await store.close()


# -- failures ------------------------------------------------------------------------------


async def test_deadlock_victim_of_delete_user_is_tried_again(
    postgresql_url: URL, raw: asyncpg.Connection
) -> None:
    """A delete_user that the server picks as a deadlock victim (against a connection that
    locks its rows by hand) is tried again and deletes every session, as the README says."""
    async with StateStore.open(postgresql_url) as store:
        sessions = [make_session("erased") for _ in range(2)]
        await asyncio.gather(*(store.save_session(s) for s in sessions))
        ids = await raw.fetch("SELECT id FROM sessions ORDER BY ctid")
        first, last = ids[0]["id"], ids[-1]["id"]
        await raw.execute("SET deadlock_timeout = '10s'")  # the store's backend detects it
        await raw.execute("BEGIN")
        await raw.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", last)
        delete = asyncio.ensure_future(store.delete_user("erased"))
        await asyncio.sleep(0.2)  # it deleted the first row and waits for the last
        with contextlib.suppress(asyncpg.DeadlockDetectedError):  # if the server picks raw
            await raw.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", first)
        await raw.execute("ROLLBACK")

        assert await delete == 2


async def test_a_save_cut_by_statement_timeout_fails_alone_and_typed(
    postgresql_url: URL, raw: asyncpg.Connection
) -> None:
    """A save that runs past the server's statement_timeout fails alone with a
    DatabaseError; its batch partners commit."""
    await raw.execute(
        """
        CREATE FUNCTION slow_save() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.user_id = 'slow' THEN PERFORM pg_sleep(1); END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER slow_save BEFORE INSERT OR UPDATE ON sessions
        FOR EACH ROW EXECUTE FUNCTION slow_save()
        """
    )
    engine = create_async_engine(
        postgresql_url, connect_args={"server_settings": {"statement_timeout": "300"}}
    )
    store = StateStore(engine)
    try:
        good = [make_session(f"g{index}") for index in range(10)]
        saves = [store.save_session(s) for s in good[:5]]
        saves.append(store.save_session(make_session("slow")))
        saves += [store.save_session(s) for s in good[5:]]

        outcomes = await asyncio.gather(*saves, return_exceptions=True)

        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failures) == 1
        assert isinstance(failures[0], DatabaseError)
        assert {s.id for s in await store.list_sessions()} == {s.id for s in good}
    finally:
        await store.close()
        await engine.dispose()
        await raw.execute("DROP TRIGGER slow_save ON sessions; DROP FUNCTION slow_save()")


async def test_more_saves_than_one_batch_holds_all_commit_and_are_counted(
    postgresql_url: URL, raw: asyncpg.Connection
) -> None:
    """A thousand saves called at once (about four batches' worth) are all stored whole,
    and the counter's shards sum to the number of sessions."""
    async with StateStore.open(postgresql_url) as store:
        sessions = [make_session(f"big{index}", messages=1) for index in range(1000)]
        await asyncio.gather(*(store.save_session(s) for s in sessions))

        assert len(await store.list_sessions()) == 1000
        assert await store.load_session(sessions[-1].id) == sessions[-1]
    assert await counter_matches(raw) == (1000, 1000)


async def test_close_with_saves_queued_behind_a_slow_update_commits_them(
    postgresql_url: URL,
) -> None:
    """close() called while saves wait in a lane behind a running update commits them all
    and leaves no connection checked out."""
    engine = create_async_engine(postgresql_url, pool_size=2, max_overflow=0)
    store = StateStore(engine)
    try:
        session = make_session("lane", messages=1)
        await store.save_session(session)

        async def slow(current: Session) -> None:
            await asyncio.sleep(0.3)

        update = asyncio.ensure_future(store.update_session_with(session.id, slow))
        await asyncio.sleep(0.05)
        states = [with_message(session, f"queued {index}") for index in range(5)]
        queued = [asyncio.ensure_future(store.save_session(s)) for s in states]
        for waiter in queued:
            waiter.cancel()
        await store.close()
        await update

        assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
    async with StateStore.open(postgresql_url, migrate=False) as reopened:
        assert await reopened.load_session(session.id) == states[-1]


async def test_errors_of_a_dead_server_port_are_typed(postgresql_url: URL) -> None:
    """A store whose server cannot be reached fails a save with a StateStoreError."""
    engine = create_async_engine(postgresql_url.set(port=1), pool_size=1, max_overflow=0)
    store = StateStore(engine)
    try:
        outcomes = await asyncio.gather(
            *(store.save_session(make_session(f"d{index}")) for index in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(outcome, StateStoreError) for outcome in outcomes), outcomes
    finally:
        await store.close()
        await engine.dispose()


async def test_an_update_whose_connection_the_server_ends_calls_fn_once(
    postgresql_url: URL,
) -> None:
    """An update whose fn outlasts the server's idle_in_transaction_session_timeout fails
    with a StateStoreError, and fn is called once (not again on a new connection)."""
    engine = create_async_engine(
        postgresql_url,
        connect_args={"server_settings": {"idle_in_transaction_session_timeout": "200"}},
    )
    store = StateStore(engine)
    try:
        session = make_session("idle")
        await store.save_session(session)
        calls = 0

        async def slow(current: Session) -> None:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.5)

        with pytest.raises(StateStoreError):
            await store.update_session_with(session.id, slow)
        assert calls == 1
    finally:
        await store.close()
        await engine.dispose()
