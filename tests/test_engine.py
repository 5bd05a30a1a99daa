"""Connection setup: URLs, SQLite pragmas, transaction modes and upserts."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from statestore import DatabaseError, InvalidDataError, Session, StateStore, UserMessage, _sql
from statestore._engine import resolve_url

from .conftest import Traced
from .test_store import make_session


def test_plain_path_is_a_sqlite_file(tmp_path: Path) -> None:
    """A path becomes an aiosqlite URL whose database is the path itself."""
    url = resolve_url(tmp_path / "what?.db")

    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == str(tmp_path / "what?.db")
    assert not url.query


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://localhost/test", "postgresql+asyncpg"),
        ("postgresql+asyncpg://localhost/test", "postgresql+asyncpg"),
    ],
    ids=["sqlite", "aiosqlite", "postgresql", "asyncpg"],
)
def test_urls_get_an_async_driver(given: str, driver: str) -> None:
    """A URL with a synchronous driver name is given the matching async driver."""
    assert resolve_url(given).drivername == driver


def test_malformed_url_is_a_clear_error() -> None:
    """A string that looks like a URL but is not one raises InvalidDataError."""
    with pytest.raises(InvalidDataError, match="not a database URL"):
        resolve_url("::://nonsense")


@pytest.mark.parametrize("port", [0, 65536, 99999])
def test_a_port_outside_the_tcp_range_is_a_clear_error(port: int) -> None:
    """A URL whose port no socket can use is refused with the port named, not at connect."""
    with pytest.raises(InvalidDataError, match=f"port {port} is not a TCP port"):
        resolve_url(f"postgresql+asyncpg://127.0.0.1:{port}/test")


def test_empty_path_is_rejected() -> None:
    """An empty path raises InvalidDataError instead of opening a temporary database."""
    with pytest.raises(InvalidDataError, match="empty"):
        resolve_url("")


async def test_file_with_question_mark_in_its_name_is_used_as_is(tmp_path: Path) -> None:
    """A '?' in a path is part of the file name, not a URL query."""
    path = tmp_path / "odd?name=1.db"
    async with StateStore.open(path) as store:
        await store.save_session(Session(user_id="u"))

    assert path.is_file()


async def test_every_store_connection_has_the_pragmas(db_path: Path, traced: Traced) -> None:
    """The writer's and every reader's connection: foreign keys, WAL, timeout, FULL."""
    async with StateStore.open(db_path) as store:
        await asyncio.gather(*(store.list_sessions() for _ in range(8)))
        pragmas = [
            tuple(
                connection.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("foreign_keys", "journal_mode", "busy_timeout", "synchronous")
            )
            for connection, _ in traced.connections
        ]

    assert len(pragmas) >= 2
    assert set(pragmas) == {(1, "wal", 30000, 2)}


async def test_synchronous_normal_is_an_option(db_path: Path) -> None:
    """synchronous='NORMAL' sets SQLite's synchronous level to 1."""
    async with (
        StateStore.open(db_path, synchronous="NORMAL") as store,
        store.engine.connect() as connection,
    ):
        level = (await connection.exec_driver_sql("PRAGMA synchronous")).scalar()

    assert level == 1


async def test_unknown_synchronous_level_is_rejected(db_path: Path) -> None:
    """An unsupported synchronous level raises InvalidDataError naming the option."""
    with pytest.raises(InvalidDataError, match="synchronous"):
        await StateStore.open(db_path, synchronous="OFF")  # type: ignore[arg-type]


async def test_writes_begin_immediate_and_reads_begin_deferred(
    db_path: Path, traced: Traced
) -> None:
    """A save runs in BEGIN IMMEDIATE; a load in a plain (deferred) BEGIN."""
    async with StateStore.open(db_path) as store:
        session = Session(user_id="u")
        await store.save_session(session)
        await store.load_session(session.id)

    writer, reader = traced.of(0), traced.of(1)
    assert [s for s in writer if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"]
    assert [s for s in reader if s.startswith("BEGIN")] == ["BEGIN"]


async def test_resave_updates_in_place_without_deleting_the_session_row(
    store: StateStore, db_path: Path
) -> None:
    """Saving an existing session upserts its row: no DELETE ever fires on it."""
    with sqlite3.connect(db_path) as connection:
        connection.executescript(
            """
            CREATE TABLE deleted_log (id TEXT);
            CREATE TRIGGER log_session_delete AFTER DELETE ON sessions
            BEGIN INSERT INTO deleted_log VALUES (old.id); END;
            """
        )
    session = Session(user_id="u")
    session.add_user_message("one")
    await store.save_session(session)
    session.add_user_message("two")
    await store.save_session(session)

    with sqlite3.connect(db_path) as connection:
        assert connection.execute("SELECT count(*) FROM deleted_log").fetchone()[0] == 0
        assert connection.execute("SELECT count(*) FROM messages").fetchone()[0] == 2


async def test_deleting_a_session_cascades_in_sql(store: StateStore, db_path: Path) -> None:
    """A DELETE of a session row through the store's engine removes its children."""
    session = Session(user_id="u", user_messages=[UserMessage(content="x")])
    await store.save_session(session)

    async with store.engine.begin() as connection:
        await connection.execute(text("DELETE FROM sessions"))

    with sqlite3.connect(db_path) as connection:
        assert connection.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


async def test_a_file_that_is_not_a_database_fails_at_open(tmp_path: Path) -> None:
    """Opening a file that is not SQLite raises DatabaseError, not a driver error."""
    path = tmp_path / "not-a-db.db"
    path.write_bytes(b"this is not a database file at all" * 100)

    with pytest.raises(DatabaseError, match="not a database"):
        await StateStore.open(path)

    assert path.read_bytes().startswith(b"this is not a database")


async def test_database_errors_are_translated(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure inside the database surfaces as DatabaseError with the cause attached."""
    monkeypatch.setattr(_sql, "UPSERT_MESSAGE", "INSERT INTO no_such_table VALUES (:content)")

    session = Session(user_id="u", user_messages=[UserMessage(content="x")])
    with pytest.raises(DatabaseError, match="save_session") as raised:
        await store.save_session(session)

    assert raised.value.__cause__ is not None


async def test_a_failed_read_leaves_the_store_usable(store: StateStore, db_path: Path) -> None:
    """A read the database fails raises DatabaseError; the next read works again."""
    await store.save_markdown("notes", "a", "kept")
    with sqlite3.connect(db_path) as connection:
        connection.execute("ALTER TABLE documents RENAME TO documents_away")

    with pytest.raises(DatabaseError, match="load_document"):
        await store.load_markdown("notes", "a")

    with sqlite3.connect(db_path) as connection:
        connection.execute("ALTER TABLE documents_away RENAME TO documents")
    assert await store.load_markdown("notes", "a") == "kept"


async def test_an_unusable_file_for_a_host_engine_is_a_database_error(tmp_path: Path) -> None:
    """StateStore(engine) on a path SQLite cannot open raises DatabaseError, not sqlite3's."""
    from statestore._engine import create_engine

    engine = create_engine(resolve_url(tmp_path))  # a directory, not a file
    try:
        with pytest.raises(DatabaseError, match="open"):
            StateStore(engine)
    finally:
        await engine.dispose()


# -- who checkpoints -------------------------------------------------------------------------


def _database_bytes(path: Path) -> bytes:
    return path.read_bytes()


async def test_external_checkpoints_leave_every_page_in_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With checkpoints="external" nothing statestore runs copies the WAL into the database
    file (a tool such as Litestream does); with the default the store's checkpointer does."""
    from statestore import _runner

    monkeypatch.setattr(_runner, "CHECKPOINT_EVERY", 20)
    changed: dict[str, bool] = {}
    for checkpoints in ("external", "store"):
        path = tmp_path / f"{checkpoints}.db"
        async with StateStore.open(path, checkpoints=checkpoints) as store:  # type: ignore[arg-type]
            await store.save_session(make_session(messages=1))
            before = _database_bytes(path)
            for _ in range(60):
                await store.save_session(make_session(messages=3))
            for _ in range(100):  # the store's checkpointer runs in a thread of its own
                if _database_bytes(path) != before:
                    break
                await asyncio.sleep(0.05)
            changed[checkpoints] = _database_bytes(path) != before
            with sqlite3.connect(path) as reader:
                assert reader.execute("SELECT count(*) FROM sessions").fetchone() == (61,)
    assert changed == {"external": False, "store": True}


async def test_a_file_is_open_with_one_checkpoint_policy_per_process(tmp_path: Path) -> None:
    """Stores on one file share a writer, so a second store must ask for the same policy."""
    path = tmp_path / "state.db"
    async with StateStore.open(path, checkpoints="external"):
        with pytest.raises(InvalidDataError, match="checkpoints='external'"):
            await StateStore.open(path)
    with pytest.raises(InvalidDataError, match="checkpoints"):
        await StateStore.open(path, checkpoints="litestream")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "target",
    [
        ":memory:",
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite:///file::memory:?cache=shared&uri=true",
        "sqlite+aiosqlite:///file:memdb1?mode=memory&uri=true",
    ],
)
async def test_an_in_memory_database_is_refused_in_every_spelling(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An in-memory SQLite database (each connection would see its own, empty one) is
    refused at open, whichever way the URL says so, and leaves no file behind."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidDataError, match="in-memory"):
        await StateStore.open(target)
    assert os.listdir(tmp_path) == []
