"""The alembic migrations: run from the checkout and programmatically, in their own table."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection

from statestore import Session, StateStore, migrate
from statestore._schema import metadata
from statestore.migrate import VERSION_TABLE, alembic_config
from tests.conftest import server_dsn

ROOT = Path(__file__).resolve().parents[1]
TABLES = set(metadata.tables) | migrate.SEARCH_TABLES


def tables(path: Path) -> set[str]:
    """Return the names of the tables in a SQLite file (not SQLite's own, such as the
    sqlite_sequence that AUTOINCREMENT makes and no downgrade removes)."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        return {name for (name,) in rows}


def alembic(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the alembic command line from the checkout."""
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "STATESTORE_DB"},
    )


def test_alembic_upgrade_head_creates_the_tables(tmp_path: Path) -> None:
    """`alembic upgrade head` from the project root creates every table on a fresh file."""
    path = tmp_path / "fresh.db"

    alembic("-x", f"db={path}", "upgrade", "head")

    assert tables(path) == TABLES | {VERSION_TABLE}


def test_alembic_downgrade_base_removes_the_tables(tmp_path: Path) -> None:
    """`alembic downgrade base` leaves nothing of statestore but its empty version table."""
    path = tmp_path / "fresh.db"
    alembic("-x", f"db={path}", "upgrade", "head")

    alembic("-x", f"db={path}", "downgrade", "base")

    assert tables(path) == {VERSION_TABLE}


def test_statestore_db_environment_variable_names_the_database(tmp_path: Path) -> None:
    """Without -x db=, alembic migrates the database named by $STATESTORE_DB."""
    path = tmp_path / "env.db"

    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "STATESTORE_DB": str(path)},
    )

    assert tables(path) >= TABLES


def test_revisions_are_recorded_in_statestores_own_table(tmp_path: Path) -> None:
    """The revision is in statestore_alembic_version; no alembic_version table is made."""
    path = tmp_path / "fresh.db"
    alembic("-x", f"db={path}", "upgrade", "head")
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()

    with sqlite3.connect(path) as connection:
        recorded = connection.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()

    assert recorded == [(head,)]
    assert "alembic_version" not in tables(path)


def test_there_is_a_single_head() -> None:
    """The revision history has exactly one head."""
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


async def test_models_and_migrations_agree(db_path: Path) -> None:
    """Autogenerate against a database at head finds nothing to change."""
    async with StateStore.open(db_path) as store, store.engine.connect() as connection:

        def diff(sync_connection: Connection) -> list[object]:
            context = MigrationContext.configure(
                sync_connection,
                opts={
                    "compare_type": True,
                    "version_table": VERSION_TABLE,
                    "include_name": migrate.schema_tables_only,
                },
            )
            return list(compare_metadata(context, metadata))

        assert await connection.run_sync(diff) == []


async def test_open_migrates_a_new_file(db_path: Path) -> None:
    """StateStore.open(path) creates the schema; opening again is a no-op."""
    async with StateStore.open(db_path):
        pass
    async with StateStore.open(db_path):
        pass

    assert tables(db_path) == TABLES | {VERSION_TABLE}


def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    """An upgrade that fails half-way rolls back whole: no half-created tables remain."""
    path = tmp_path / "clash.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE documents (clash INTEGER)")

    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"db={path}", "upgrade", "head"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )

    assert result.returncode != 0
    assert tables(path) == {"documents"}


async def test_cli_downgrade_keeps_child_rows(tmp_path: Path) -> None:
    """`alembic downgrade` from the checkout copies tables with foreign keys off: no cascade."""
    from statestore import Session, UserMessage

    path = tmp_path / "cli.db"
    async with StateStore.open(path) as store:
        session = Session(user_id="u", user_messages=[UserMessage(content="kept")])
        await store.save_session(session)

    alembic("-x", f"db={path}", "downgrade", "0001")

    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT content FROM messages").fetchall() == [("kept",)]
    alembic("-x", f"db={path}", "upgrade", "head")
    async with StateStore.open(path, migrate=False) as store:
        assert await store.load_session(session.id) == session


def test_downgrade_to_0002_keeps_the_session_counter_triggers(tmp_path: Path) -> None:
    """Dropping 0003's column copies ``sessions``; the counter's triggers come back with it."""
    path = tmp_path / "fresh.db"
    alembic("-x", f"db={path}", "upgrade", "head")
    alembic("-x", f"db={path}", "downgrade", "0002")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO sessions (id, user_id, message_count, response_count, created_at, "
            "updated_at, metadata) VALUES ('s', 'u', 0, 0, '2026-01-01', '2026-01-01', '{}')"
        )
        counted = connection.execute("SELECT value FROM statestore_counters").fetchone()
        views = connection.execute("SELECT name FROM sqlite_master WHERE type = 'view'")
        assert (counted, views.fetchall()) == ((1,), [])


PARTIAL_INDEXES = {
    "ix_sessions_project_id_updated_at_id": "project_id",
    "ix_sessions_active_seed_id": "active_seed_id",
    "ix_sessions_active_persona_id": "active_persona_id",
}
"""Revision 0005's partial indexes."""

HEAD_PARTIAL_INDEXES = {
    "ix_sessions_project_id_updated_at_id": "project_id",
    "ix_sessions_active_seed_id_updated_at_id": "active_seed_id",
    "ix_sessions_active_persona_id_updated_at_id": "active_persona_id",
    "ix_sessions_parent_session_id_updated_at_id": "parent_session_id",
}
"""Revision 0006's: the listing indexes end in (updated_at, id)."""


async def index_definitions(target: Path | URL, names: dict[str, str]) -> dict[str, str]:
    """The SQL of each index in ``names``, as the database reports it."""
    if isinstance(target, Path):
        with sqlite3.connect(target) as connection:
            rows = connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
            return {name: sql for name, sql in rows if name in names}
    connection = await asyncpg.connect(server_dsn(target.database))
    try:
        rows = await connection.fetch("SELECT indexname, indexdef FROM pg_indexes")
    finally:
        await connection.close()
    return {row["indexname"]: row["indexdef"] for row in rows if row["indexname"] in names}


def assert_partial(definitions: dict[str, str], names: dict[str, str]) -> None:
    """Each index in ``names`` exists and holds only rows where its column is set."""
    assert sorted(definitions) == sorted(names)
    for name, column in names.items():
        assert f"WHERE {column} IS NOT NULL".lower() in definitions[name].lower().replace(
            "(", ""
        ).replace(")", ""), definitions[name]


@pytest.mark.parametrize(
    "backend_name", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]
)
async def test_0005_makes_the_optional_column_indexes_partial_and_keeps_rows(
    backend_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Up from 0004 the three indexes skip NULLs (and 0006 extends them and adds the
    parent's); down to 0004 and 0005, each revision's indexes are back; no session is lost."""
    if backend_name == "sqlite":
        target: Path | URL = tmp_path / "state.db"
    else:
        target = request.getfixturevalue("fresh_postgresql")
    await migrate.upgrade(target, "0004")
    await migrate.upgrade(target)
    async with StateStore.open(target) as store:
        for index in range(4):
            session = Session(id=f"s{index}", user_id="u", active_seed_id=f"seed-{index % 2}")
            if index % 2:
                session.metadata["project_ids"] = "p"
            await store.save_session(session)
    assert_partial(await index_definitions(target, HEAD_PARTIAL_INDEXES), HEAD_PARTIAL_INDEXES)

    await migrate.downgrade(target, "0005")
    assert_partial(await index_definitions(target, PARTIAL_INDEXES), PARTIAL_INDEXES)
    await migrate.downgrade(target, "0004")
    definitions = await index_definitions(target, PARTIAL_INDEXES)
    assert sorted(definitions) == sorted(PARTIAL_INDEXES)
    assert not any("where" in sql.lower() for sql in definitions.values()), definitions
    await migrate.upgrade(target)
    async with StateStore.open(target) as store:
        assert len(await store.list_sessions()) == 4
        assert [s.id for s in await store.list_sessions(project_id="p")] == ["s3", "s1"]
        assert [s.id for s in await store.list_sessions(active_seed_id="seed-1")] == ["s3", "s1"]


@pytest.mark.postgresql
async def test_0006_on_postgresql_indexes_stored_texts_and_fills_lineage(
    fresh_postgresql: URL,
) -> None:
    """Rows stored at 0005 on PostgreSQL are searchable after the upgrade, oldest text
    first, and a session carrying the service's lineage fields lists as a fork."""
    await migrate.upgrade(fresh_postgresql, "0005")
    connection = await asyncpg.connect(server_dsn(fresh_postgresql.database))
    try:
        await connection.execute(
            """
            INSERT INTO sessions (id, user_id, message_count, response_count, created_at,
                                  updated_at, metadata, extra, version, state_token)
            VALUES ('parent', 'u', 2, 0, now(), now(), '{}', NULL, 1, 1),
                   ('child', 'u', 1, 0, now(), now(), '{}',
                    '{"parent_session_id": "parent", "forked_at": "2026-03-02T10:00:00Z"}',
                    1, 2);
            INSERT INTO messages (session_id, position, content, created_at)
            VALUES ('parent', 0, 'the later needle', now()),
                   ('parent', 1, 'the earlier needle', now() - interval '1 hour'),
                   ('child', 0, 'no match here', now());
            """
        )
    finally:
        await connection.close()

    await migrate.upgrade(fresh_postgresql)

    async with StateStore.open(fresh_postgresql) as store:
        hits = await store.search_messages("needle")
        assert [(hit.session_id, hit.position) for hit in hits] == [("parent", 0), ("parent", 1)]
        [fork] = await store.list_sessions(forks_of="parent")
        assert fork.id == "child"
        assert fork.parent_session_id == "parent"


def test_head_revision_is_the_newest_script() -> None:
    """The head known without reading the scripts is the scripts' head."""
    assert ScriptDirectory(migrate.script_location()).get_current_head() == migrate.HEAD_REVISION
    assert migrate.head_revision() == migrate.HEAD_REVISION


def test_import_and_an_up_to_date_open_leave_alembic_unimported(tmp_path: Path) -> None:
    """alembic is imported only to migrate: not by ``import statestore``, nor by opening a
    database already at head (which reads its revision with one SELECT)."""
    path = tmp_path / "state.db"
    probe = f"""
import asyncio, sys
import statestore
assert "alembic" not in sys.modules, "import statestore imported alembic"

async def main():
    async with statestore.StateStore.open({str(path)!r}) as store:
        await store.list_sessions()

asyncio.run(main())
print("alembic" in sys.modules)
"""
    created = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "True"  # a new file was migrated
    reopened = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert reopened.returncode == 0, reopened.stderr
    assert reopened.stdout.strip() == "False"
