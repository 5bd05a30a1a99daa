"""Bring a database's schema to a revision with statestore's own alembic migrations.

The migration scripts ship inside the package (``statestore/migrations`` in the wheel) and
live at the top of a checkout (``migrations/``); both run the same scripts. statestore's
revision is recorded in its own table, :data:`VERSION_TABLE`, never in a host application's
``alembic_version``, so the two histories never collide.

Programmatic use::

    await statestore.migrate.upgrade("state.db")            # to head
    await statestore.migrate.current_revision("state.db")   # e.g. "0002"
    await statestore.migrate.check("state.db")              # raises unless at head

Inside a host application's alembic ``env.py``, after its own migrations, on the same
connection::

    with context.begin_transaction():
        context.run_migrations()
    statestore.migrate.upgrade_on_connection(connection)
    connection.commit()

and pass ``include_name=statestore.migrate.include_name`` to the host's
``context.configure`` so its autogenerate never proposes changes to statestore's tables.

On SQLite every upgrade runs in one ``BEGIN IMMEDIATE`` transaction with foreign keys off
(a batch migration copies a table; with foreign keys on, dropping the old copy would
cascade-delete child rows) and ends with ``PRAGMA foreign_key_check``; a failure rolls the
whole upgrade back, leaving the database at the revision it had.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from statestore._engine import MIGRATE_OPTION, create_engine, resolve_url
from statestore._schema import metadata
from statestore.errors import MigrationError, SchemaVersionError, database_errors

# alembic is imported where a migration runs, not here: it takes longer to import than
# the rest of statestore, and a database already at head needs none of it.
if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

__all__ = [
    "HEAD_REVISION",
    "VERSION_TABLE",
    "alembic_config",
    "check",
    "check_foreign_keys",
    "check_on_connection",
    "current_revision",
    "downgrade",
    "head_revision",
    "include_name",
    "include_object",
    "migrating",
    "script_location",
    "upgrade",
    "upgrade_on_connection",
]

VERSION_TABLE = "statestore_alembic_version"
"""The table where statestore's alembic revision is recorded."""

HEAD_REVISION = "0006"
"""The newest revision in ``migrations/versions`` (a test keeps the two the same), known
without reading the scripts."""

SEARCH_TABLES = frozenset(
    {"search_entries", "search_text", "search_text_config", "search_text_data", "search_text_idx"}
)
"""The full-text search index's tables (revision 0006; the FTS5 ones on SQLite only): made
by the migration, not in ``statestore._schema.metadata``, which autogenerate must not see."""

_OWN_TABLES = frozenset({*metadata.tables, *SEARCH_TABLES, VERSION_TABLE})

Target = str | os.PathLike[str] | URL | AsyncEngine
"""A database: a SQLite file path, an async URL, or an engine the caller owns."""


def script_location() -> str:
    """Return the folder holding statestore's migration scripts."""
    packaged = Path(__file__).parent / "migrations"
    if (packaged / "env.py").is_file():
        return str(packaged)
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").is_file():
        return str(checkout)
    raise MigrationError("statestore's migration scripts are missing from this installation")


def alembic_config() -> Config:
    """Return an alembic configuration for statestore's scripts (for alembic's commands)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", script_location())
    return config


def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(script_location())


def head_revision() -> str:
    """Return the newest revision this version of statestore knows."""
    return HEAD_REVISION


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name`` hook that hides statestore's tables from a host's autogenerate.

    Pass it as ``context.configure(..., include_name=statestore.migrate.include_name)``.
    """
    return not (type_ == "table" and name in _OWN_TABLES)


def schema_tables_only(name: str | None, type_: str, parent_names: Any) -> bool:
    """The ``include_name`` hook of statestore's own autogenerate (``migrations/env.py``):
    the search index's tables, written by revision 0006 in SQL, are not in the metadata."""
    return not (type_ == "table" and name in SEARCH_TABLES)


def include_object(
    object_: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic ``include_object`` hook with the same effect as :func:`include_name`.

    For hosts that already filter with ``include_object``; call it from your own hook.
    """
    table = object_ if type_ == "table" else getattr(object_, "table", None)
    table_name = getattr(table, "name", None)
    return table_name not in _OWN_TABLES


def _migration_context(
    connection: Connection,
    step: Callable[[Any, MigrationContext], Iterable[Any]] | None = None,
) -> MigrationContext:
    options: dict[str, Any] = {
        "version_table": VERSION_TABLE,
        "render_as_batch": True,
        "target_metadata": metadata,
    }
    if step is not None:
        options["fn"] = step
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection, opts=options)


def _current(connection: Connection) -> str | None:
    """The revision recorded in :data:`VERSION_TABLE` (read as alembic does), or None."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    revisions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
    found = list(revisions)
    if len(found) > 1:
        raise MigrationError(f"{VERSION_TABLE} holds more than one revision: {found}")
    return found[0] if found else None


def _known(revision: str | None) -> bool:
    if revision in (None, HEAD_REVISION):
        return True
    from alembic.util import CommandError

    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def _refuse_unknown(current: str | None) -> None:
    if not _known(current):
        raise SchemaVersionError(
            current,
            head_revision(),
            f"the database is at revision {current!r}, which this version of statestore "
            f"does not know (head is {head_revision()!r}); it was written by a newer "
            "statestore: upgrade the statestore package",
        )


def _check_foreign_keys_off(connection: Connection) -> None:
    if connection.dialect.name != "sqlite":
        return
    if connection.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise MigrationError(
            "statestore migrations on SQLite need PRAGMA foreign_keys=OFF on the migrating "
            "connection: a batch migration copies tables, and with foreign keys on the copy "
            "would cascade-delete child rows"
        )


def check_foreign_keys(connection: Connection) -> None:
    """Raise :class:`MigrationError` if any foreign key is broken (SQLite only)."""
    if connection.dialect.name != "sqlite":
        return
    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if violations:
        raise MigrationError(f"migration left broken foreign keys: {violations[:5]}")


MIGRATION_LOCK_KEY = 0x5374_6174_6553_746F
"""The PostgreSQL advisory lock an upgrade or downgrade holds until its transaction ends."""


def _take_migration_lock(connection: Connection) -> None:
    """On PostgreSQL, wait for any other migration of this database to commit first.

    SQLite needs no lock: its migrations begin with ``BEGIN IMMEDIATE``. The revision is
    read after the lock, so a process that waited finds the schema already upgraded.
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")


def _run(connection: Connection, revision: str, *, downgrade: bool = False) -> None:
    _check_foreign_keys_off(connection)
    _take_migration_lock(connection)
    current = _current(connection)
    _refuse_unknown(current)
    if not downgrade and revision in ("head", HEAD_REVISION) and current == HEAD_REVISION:
        # Nothing to migrate, and no need to read the scripts. The foreign key check still
        # runs: reading every child row, it is what finds a damaged file at open.
        check_foreign_keys(connection)
        return
    from alembic.operations import Operations

    scripts = _scripts()

    def step(current: Any, context: MigrationContext) -> Iterable[Any]:
        if downgrade:
            return scripts._downgrade_revs(revision, current)
        return scripts._upgrade_revs(revision, current)

    context = _migration_context(connection, step)
    with Operations.context(context), context.begin_transaction():
        context.run_migrations()
    check_foreign_keys(connection)


def upgrade_on_connection(connection: Connection, revision: str = "head") -> None:
    """Upgrade statestore's tables on a connection the caller controls (e.g. a host's env.py).

    Runs inside the connection's current transaction if it has one (the caller commits
    it); otherwise in a transaction of its own, which it commits. On SQLite the connection
    must have foreign keys off (SQLite's default).

    Raises:
        SchemaVersionError: The database is at a revision this statestore does not know.
        MigrationError: Foreign keys are on (SQLite), or the migration broke a foreign key.
    """
    if connection.in_transaction():
        _run(connection, revision)
        return
    with connection.begin():
        _run(connection, revision)


def check_on_connection(connection: Connection) -> None:
    """Raise :class:`SchemaVersionError` unless the database is at this statestore's head."""
    current = _current(connection)
    _refuse_unknown(current)
    head = head_revision()
    if current != head:
        raise SchemaVersionError(
            current,
            head,
            f"the database is at revision {current!r} but this statestore needs {head!r}: "
            "run `statestore --db PATH_OR_URL migrate`, "
            "`alembic -x db=PATH_OR_URL upgrade head` from a statestore checkout, "
            "`await statestore.migrate.upgrade(target)`, or open it with migrate=True",
        )


@asynccontextmanager
async def migrating(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """Yield a connection in one write transaction set up for migrating.

    On SQLite, foreign keys are off for the transaction (``BEGIN IMMEDIATE``), and the
    connection is discarded afterwards rather than returned to the pool with them off.
    """
    with database_errors("schema migration"):
        async with engine.connect() as connection:
            migrating_connection = await connection.execution_options(**{MIGRATE_OPTION: True})
            try:
                async with migrating_connection.begin():
                    yield migrating_connection
            finally:
                if engine.dialect.name == "sqlite":
                    await connection.invalidate()


@asynccontextmanager
async def _engine_for(target: Target) -> AsyncIterator[AsyncEngine]:
    if isinstance(target, AsyncEngine):
        yield target
        return
    engine = create_engine(resolve_url(target))
    try:
        yield engine
    finally:
        await engine.dispose()


async def upgrade(target: Target, revision: str = "head") -> None:
    """Upgrade a database to ``revision`` (default: the newest), in one transaction.

    A database already at the newest revision is only read (its foreign keys checked), so
    opening a store never waits for another process's write lock when there is nothing
    to migrate.

    Raises:
        SchemaVersionError: The database is at a revision this statestore does not know.
        DatabaseError: The database failed; it is left at the revision it had.
    """
    async with _engine_for(target) as engine:
        if revision in ("head", HEAD_REVISION):
            with database_errors("schema migration"):
                async with engine.connect() as connection:
                    if await connection.run_sync(_checked_at_head):
                        return
        async with migrating(engine) as connection:
            await connection.run_sync(_run, revision)


def _checked_at_head(connection: Connection) -> bool:
    """Whether the database is at the newest revision; if it is, check its foreign keys."""
    if _current(connection) != HEAD_REVISION:
        return False
    check_foreign_keys(connection)
    return True


async def downgrade(target: Target, revision: str) -> None:
    """Downgrade a database to ``revision`` (``"base"`` removes statestore's tables)."""
    async with _engine_for(target) as engine, migrating(engine) as connection:
        await connection.run_sync(_run, revision, downgrade=True)


async def current_revision(target: Target) -> str | None:
    """Return the database's statestore revision, or ``None`` if it has none."""
    async with _engine_for(target) as engine:
        with database_errors("current_revision"):
            async with engine.connect() as connection:
                return await connection.run_sync(_current)


async def check(target: Target) -> None:
    """Raise :class:`SchemaVersionError` unless the database is at this statestore's head.

    The error names the current and expected revisions and the command to run.
    """
    async with _engine_for(target) as engine:
        with database_errors("schema check"):
            async with engine.connect() as connection:
                await connection.run_sync(check_on_connection)
