"""statestore.migrate: upgrading in place without losing a row, and refusing wrong revisions."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from statestore import (
    SchemaVersionError,
    Session,
    StateStore,
    StateStoreError,
    UserMessage,
    migrate,
)
from statestore._rows import SQLITE_TIME, message_rows, response_rows, session_row

from .conftest import SAMPLE_DIR

T0 = datetime(2026, 3, 1, tzinfo=UTC)

HEAD = migrate.head_revision()
FIRST = "0001"


def sample_sessions() -> list[Session]:
    """Return every valid session in the file-store sample."""
    loaded = []
    for path in sorted((SAMPLE_DIR / "sessions").glob("*.json")):
        try:
            loaded.append(Session.model_validate_json(path.read_text(encoding="utf-8")))
        except ValueError:
            continue  # the sample's damaged files
    assert len(loaded) > 30
    return loaded


def fill_at_first_revision(path: Path, stored: list[Session]) -> None:
    """Write sessions and a document with the columns revision 0001 has, as 0.1 wrote them."""
    time = SQLITE_TIME
    with sqlite3.connect(path) as connection:
        for session in stored:
            row = session_row(session, time, state_token=0)
            for later in ("state_token", "unset_fields", "parent_session_id", "forked_at"):
                del row[later]
            names = ", ".join(row)
            values = ", ".join(f":{name}" for name in row)
            connection.execute(f"INSERT INTO sessions ({names}) VALUES ({values})", row)
            for table, rows in (
                ("messages", message_rows(session.id, session.user_messages, time)),
                ("responses", response_rows(session.id, session.agent_responses, time)),
            ):
                for child in rows:
                    connection.execute(
                        f"INSERT INTO {table} ({', '.join(child)}) "
                        f"VALUES ({', '.join(':' + k for k in child)})",
                        child,
                    )
        connection.execute(
            "INSERT INTO documents VALUES ('memory/notes', 'n', 'markdown', '# note', :at, :at)",
            {"at": time.bind(stored[0].created_at)},
        )


def table_dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Return every row of the child and document tables, in key order."""
    with sqlite3.connect(path) as connection:
        return {
            "messages": connection.execute(
                "SELECT * FROM messages ORDER BY session_id, position"
            ).fetchall(),
            "responses": connection.execute(
                "SELECT * FROM responses ORDER BY session_id, position"
            ).fetchall(),
            "documents": connection.execute(
                "SELECT * FROM documents ORDER BY category, name, kind"
            ).fetchall(),
            "sessions": connection.execute(
                "SELECT id, user_id, metadata, extra FROM sessions ORDER BY id"
            ).fetchall(),
        }


def columns(path: Path, table: str) -> set[str]:
    """Return the column names of a table."""
    with sqlite3.connect(path) as connection:
        return {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}


async def test_upgrade_to_a_revision_and_report_it(db_path: Path) -> None:
    """upgrade() takes a revision, and current_revision() reports where the database is."""
    assert await migrate.current_revision(db_path) is None

    await migrate.upgrade(db_path, FIRST)
    assert await migrate.current_revision(db_path) == FIRST

    await migrate.upgrade(db_path)
    assert await migrate.current_revision(db_path) == HEAD


async def test_check_passes_at_head_and_names_revisions_and_command_behind_it(
    db_path: Path,
) -> None:
    """check() is silent at head; behind it, the error names both revisions and the fix."""
    await migrate.upgrade(db_path, FIRST)

    with pytest.raises(SchemaVersionError) as raised:
        await migrate.check(db_path)

    assert raised.value.current == FIRST
    assert raised.value.expected == HEAD
    message = str(raised.value)
    assert FIRST in message
    assert HEAD in message
    assert "upgrade head" in message
    await migrate.upgrade(db_path)
    await migrate.check(db_path)


async def test_open_without_migrate_refuses_a_database_behind_head(db_path: Path) -> None:
    """StateStore.open(migrate=False) on an old schema raises SchemaVersionError."""
    await migrate.upgrade(db_path, FIRST)

    with pytest.raises(SchemaVersionError, match=FIRST):
        await StateStore.open(db_path, migrate=False)


async def test_open_without_migrate_refuses_an_empty_database(db_path: Path) -> None:
    """A database with no statestore schema is refused with current=None."""
    with pytest.raises(SchemaVersionError) as raised:
        await StateStore.open(db_path, migrate=False)

    assert raised.value.current is None


async def test_open_without_migrate_works_at_head(db_path: Path) -> None:
    """A database at head opens with migrate=False."""
    await migrate.upgrade(db_path)

    async with StateStore.open(db_path, migrate=False) as store:
        assert await store.list_sessions() == []


async def test_opening_a_database_at_head_does_not_wait_for_the_write_lock(db_path: Path) -> None:
    """With nothing to migrate, open only reads: another process's held lock does not stop it.

    It began a write transaction, so a service starting while another process wrote
    back to back failed to open with DatabaseBusyError once its busy timeout ran out.
    """
    await migrate.upgrade(db_path)
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        async with StateStore.open(db_path, busy_timeout=0.2) as store:
            assert await store.list_sessions() == []
            await migrate.upgrade(db_path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert await migrate.current_revision(db_path) == migrate.HEAD_REVISION


@pytest.mark.parametrize("migrate_on_open", [True, False], ids=["migrate", "no-migrate"])
async def test_a_database_from_a_newer_statestore_is_refused(
    db_path: Path, migrate_on_open: bool
) -> None:
    """A revision this package does not know (a newer release's) is refused, untouched."""
    await migrate.upgrade(db_path)
    with sqlite3.connect(db_path) as connection:
        connection.execute(f"UPDATE {migrate.VERSION_TABLE} SET version_num = 'f00dface'")

    with pytest.raises(SchemaVersionError, match="newer") as raised:
        await StateStore.open(db_path, migrate=migrate_on_open)

    assert raised.value.current == "f00dface"
    with sqlite3.connect(db_path) as connection:
        [(recorded,)] = connection.execute(f"SELECT version_num FROM {migrate.VERSION_TABLE}")
    assert recorded == "f00dface"


async def test_upgrade_keeps_every_row_and_sessions_load_identically(db_path: Path) -> None:
    """A database filled at 0001 upgrades to head with every session and document intact."""
    stored = sample_sessions()
    await migrate.upgrade(db_path, FIRST)
    fill_at_first_revision(db_path, stored)

    async with StateStore.open(db_path) as store:
        for session in stored:
            assert await store.load_session(session.id) == session
        assert await store.load_markdown("memory/notes", "n") == "# note"
        assert len(await store.list_sessions()) == len(stored)


async def test_upgrade_indexes_stored_texts_and_lineage(db_path: Path) -> None:
    """Revision 0006 indexes every text stored before it (oldest first) and fills the
    lineage columns of sessions that carried the service's lineage fields."""
    stored = sample_sessions()
    parent = stored[0]
    child = Session(
        id="child",
        user_id="u",
        parent_session_id=parent.id,
        forked_at="2026-03-02T10:00:00.5Z",
        user_messages=[UserMessage(content="the forked needle", timestamp=T0)],
    )
    odd = Session(id="odd", user_id="u", parent_session_id=None, forked_at="not a time")
    await migrate.upgrade(db_path, "0005")
    fill_at_first_revision(db_path, [*stored, child, odd])

    await migrate.upgrade(db_path)

    async with StateStore.open(db_path) as store:
        texts = sum(len(s.user_messages) + len(s.agent_responses) for s in [*stored, child])
        assert await store.rebuild_search_index() == texts  # what 0006 indexed, recounted
        assert [hit.session_id for hit in await store.search_messages("needle")] == ["child"]
        [summary] = await store.list_sessions(forks_of=parent.id)
        assert summary.id == "child"
        assert await store.load_session("child") == child
        assert await store.load_session("odd") == odd
    with sqlite3.connect(db_path) as connection:
        lineage = dict(
            connection.execute("SELECT id, forked_at FROM sessions WHERE id IN ('child', 'odd')")
        )
    assert lineage == {"child": "2026-03-02 10:00:00.500000", "odd": None}


async def test_upgrade_indexes_what_was_stored_before_in_timestamp_order(db_path: Path) -> None:
    """Texts stored before 0006 get entries in the order of their timestamps."""
    session = Session(id="s", user_id="u")
    for minutes in (30, 10, 20):
        at = T0 + timedelta(minutes=minutes)
        session.user_messages.append(UserMessage(content=f"word {minutes}", timestamp=at))
    await migrate.upgrade(db_path, "0005")
    fill_at_first_revision(db_path, [session])
    await migrate.upgrade(db_path)
    async with StateStore.open(db_path) as store:
        hits = await store.search_messages("word")
    assert [hit.position for hit in hits] == [0, 2, 1]


async def test_downgrade_keeps_rows_and_upgrade_again_round_trips(db_path: Path) -> None:
    """Down to 0001 (a table copy on SQLite) and up again: no row lost, no cascade fired."""
    stored = sample_sessions()
    await migrate.upgrade(db_path, FIRST)
    fill_at_first_revision(db_path, stored)
    await migrate.upgrade(db_path)
    before = table_dump(db_path)

    await migrate.downgrade(db_path, FIRST)
    assert "version" not in columns(db_path, "sessions")
    assert table_dump(db_path) == before
    await migrate.upgrade(db_path)

    assert table_dump(db_path) == before
    with sqlite3.connect(db_path) as connection:
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    async with StateStore.open(db_path) as store:
        for session in stored:
            assert await store.load_session(session.id) == session


def test_every_revision_upgrades_and_downgrades(tmp_path: Path) -> None:
    """Each revision in turn upgrades from its parent and downgrades back to it."""
    path = tmp_path / "steps.db"
    script = ScriptDirectory(migrate.script_location())
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]

    async def walk() -> None:
        for revision in revisions:
            await migrate.upgrade(path, revision)
            assert await migrate.current_revision(path) == revision
        for parent in [*reversed(revisions[:-1]), "base"]:
            await migrate.downgrade(path, parent)
            assert await migrate.current_revision(path) == (None if parent == "base" else parent)

    asyncio.run(walk())


async def test_a_migration_failing_midway_leaves_the_previous_revision(db_path: Path) -> None:
    """When 0002 fails after its first step, the database stays wholly at 0001."""
    await migrate.upgrade(db_path, FIRST)
    with sqlite3.connect(db_path) as connection:
        # Takes the name of the index 0002 creates after adding its column.
        connection.execute("CREATE INDEX ix_messages_created_at ON documents (name)")

    with pytest.raises(StateStoreError):
        await migrate.upgrade(db_path)

    assert await migrate.current_revision(db_path) == FIRST
    assert "version" not in columns(db_path, "sessions")


def open_at_the_same_moment(path: str, start: Any) -> None:
    """Child process: wait for the start signal, then open (and migrate) the store."""

    async def run() -> None:
        async with StateStore.open(path) as store:
            await store.save_session(Session(user_id="racer"))

    start.wait()
    asyncio.run(run())


def test_eight_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Eight processes migrating one new file together: all succeed, schema at head once."""
    path = tmp_path / "race.db"
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    racers = [
        context.Process(target=open_at_the_same_moment, args=(str(path), start)) for _ in range(8)
    ]
    for racer in racers:
        racer.start()
    start.set()
    for racer in racers:
        racer.join(timeout=120)

    assert [racer.exitcode for racer in racers] == [0] * 8
    with sqlite3.connect(path) as connection:
        versions = connection.execute(f"SELECT version_num FROM {migrate.VERSION_TABLE}")
        assert versions.fetchall() == [(HEAD,)]
        assert connection.execute("SELECT count(*) FROM sessions").fetchone() == (8,)


def test_foreign_keys_on_a_host_connection_are_refused(tmp_path: Path) -> None:
    """upgrade_on_connection on SQLite refuses a connection with foreign keys on."""
    engine = create_engine(f"sqlite:///{tmp_path / 'fk.db'}")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")
            with pytest.raises(StateStoreError, match="foreign_keys=OFF"):
                migrate.upgrade_on_connection(connection)
    finally:
        engine.dispose()
