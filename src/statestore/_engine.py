"""Connection setup: which database a target names, and how SQLAlchemy connections behave.

The SQLAlchemy engine serves migrations, PostgreSQL, and the host's own use; on SQLite the
store's data path opens its own stdlib connections with the same settings (see
:mod:`statestore._runner`). On SQLite every engine connection gets WAL, a busy timeout,
foreign keys on (so ``ON DELETE CASCADE`` runs) and the chosen ``synchronous`` level. The
driver's own transaction handling is switched off (``isolation_level=None``) and
statestore emits ``BEGIN`` itself: ``BEGIN IMMEDIATE`` for write transactions, so a
read-then-write transaction never fails with "database is locked" half-way, and plain
``BEGIN`` for reads, so that reads see one snapshot.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Literal

from sqlalchemy import URL, event, exc, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from statestore.errors import InvalidArgumentError

__all__ = [
    "MIGRATE_OPTION",
    "POOL_SIZE",
    "WRITE_OPTION",
    "Synchronous",
    "create_engine",
    "prepare_engine",
    "resolve_url",
    "sqlite_pragmas",
    "write_connection",
]

Synchronous = Literal["FULL", "NORMAL"]
"""SQLite ``synchronous`` levels statestore accepts (see the README on durability)."""

Checkpoints = Literal["store", "external"]
"""Who checkpoints a SQLite WAL: the store (in a thread of its own), or a tool outside it
such as Litestream (then no statestore connection ever checkpoints)."""

WRITE_OPTION = "statestore_write"
"""Execution option that marks a connection's transactions as writes (``BEGIN IMMEDIATE``)."""

MIGRATE_OPTION = "statestore_migrate"
"""Execution option for a migrating connection: foreign keys off, then ``BEGIN IMMEDIATE``."""

_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
"""The one driver statestore runs on for each backend it supports."""

_EXTRAS = {"aiosqlite": "statestore", "asyncpg": "statestore[postgresql]"}
"""What to install for each driver."""

POOL_SIZE = 16
"""Default PostgreSQL connections a store keeps open (and never more): see the README."""

_STATEMENT_CACHE = "statement_cache_size"
"""asyncpg's prepared-statement cache size, accepted in a PostgreSQL URL's query."""


def resolve_url(target: str | os.PathLike[str] | URL) -> URL:
    """Return the SQLAlchemy URL that ``target`` names.

    A string with ``://`` is a URL; anything else is a filesystem path to a SQLite file,
    used as the path itself (a ``?`` or ``#`` in it is part of the file name). A URL with no
    driver (``sqlite://``, ``postgresql://``) gets the async driver statestore runs on.

    Raises:
        InvalidArgumentError: ``target`` is not a URL or path statestore can open: a malformed
            URL (a port that is not a number from 1 to 65535, say), a database other than
            SQLite and PostgreSQL, or a driver other than aiosqlite and asyncpg.
    """
    if isinstance(target, URL):
        url = target
    elif isinstance(target, str) and "://" in target:
        try:
            url = make_url(target)
        except (exc.ArgumentError, ValueError) as error:
            raise InvalidArgumentError(
                "target", f"{target!r} is not a database URL ({error})"
            ) from error
    elif isinstance(target, str | os.PathLike):
        path = os.fspath(target)
        if not path:
            raise InvalidArgumentError("target", "the database path is empty")
        url = URL.create("sqlite+aiosqlite", database=path)
    else:
        raise InvalidArgumentError(
            "target", f"must be a path or a database URL, not {type(target).__name__}"
        )
    backend = url.get_backend_name()
    driver = _ASYNC_DRIVERS.get(backend)
    if driver is None:
        raise InvalidArgumentError(
            "target",
            f"statestore runs on SQLite (a file path) and PostgreSQL "
            f"(postgresql+asyncpg://...), not {url.drivername}://",
        )
    if "+" in url.drivername and url.get_driver_name() != driver:
        raise InvalidArgumentError(
            "target",
            f"statestore runs {backend} through {driver}: use {backend}+{driver}://, "
            f"not {url.drivername}://",
        )
    if url.port is not None and not 0 < url.port < 65536:
        raise InvalidArgumentError("target", f"port {url.port} is not a TCP port (1 to 65535)")
    return url.set(drivername=f"{backend}+{driver}")


def sqlite_in_memory(url: URL) -> bool:
    """Whether a SQLite URL names an in-memory database: no file, ``:memory:``, or a URI
    such as ``file::memory:?cache=shared`` or ``file:name?mode=memory``."""
    database = url.database or ""
    return (
        database in ("", ":memory:")
        or database.startswith("file::memory:")
        or url.query.get("mode") == "memory"
        or "mode=memory" in database
    )


def create_engine(
    url: URL,
    *,
    synchronous: Synchronous = "FULL",
    busy_timeout_ms: int = 30_000,
    pool_size: int = POOL_SIZE,
    checkpoints: Checkpoints = "store",
) -> AsyncEngine:
    """Create an engine for ``url`` and prepare it with :func:`prepare_engine`.

    On PostgreSQL the pool keeps ``pool_size`` connections and opens no more (a pool that
    opens and closes connections under load pays a server backend each time). A URL
    query ``statement_cache_size=0`` (for PgBouncer in transaction pooling mode) turns
    asyncpg's statement cache off and gives SQLAlchemy's prepared statements unique names,
    so that no statement is looked up on a server connection that did not prepare it.
    """
    options: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        if sqlite_in_memory(url):
            raise InvalidArgumentError(
                "target", "statestore needs a SQLite file, not an in-memory database"
            )
        options["connect_args"] = {"isolation_level": None}
    else:
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise InvalidArgumentError("pool_size", f"must be a positive int, not {pool_size!r}")
        options.update(pool_size=pool_size, max_overflow=0)
        url, options["connect_args"] = _statement_cache_options(url)
    try:
        engine = create_async_engine(url, **options)
    except ImportError as error:
        driver = url.get_driver_name()
        raise InvalidArgumentError(
            "target",
            f"{url.drivername}:// needs the {driver} driver, which is not installed: "
            f"pip install '{_EXTRAS.get(driver, driver)}'",
        ) from error
    prepare_engine(
        engine, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms, checkpoints=checkpoints
    )
    return engine


def _statement_cache_options(url: URL) -> tuple[URL, dict[str, Any]]:
    """Move ``statement_cache_size`` from ``url``'s query into asyncpg's connect arguments."""
    given = url.query.get(_STATEMENT_CACHE)
    if given is None:
        return url, {}
    try:
        size = int(given if isinstance(given, str) else given[-1])
    except ValueError:
        raise InvalidArgumentError(
            "target", f"{_STATEMENT_CACHE} must be a whole number, not {given!r}"
        ) from None
    if size < 0:
        raise InvalidArgumentError("target", f"{_STATEMENT_CACHE} must not be negative")
    url = url.difference_update_query([_STATEMENT_CACHE])
    connect_args: dict[str, Any] = {_STATEMENT_CACHE: size}
    if size == 0:
        url = url.update_query_dict({"prepared_statement_cache_size": "0"})
        connect_args["prepared_statement_name_func"] = _unique_statement_name
    return url, connect_args


def _unique_statement_name() -> str:
    return f"__statestore_{uuid.uuid4().hex}__"


def prepare_engine(
    engine: AsyncEngine,
    *,
    synchronous: Synchronous = "FULL",
    busy_timeout_ms: int = 30_000,
    checkpoints: Checkpoints = "store",
) -> None:
    """Install statestore's per-connection setup on ``engine`` (SQLite only; idempotent).

    Connections the engine opened before this call are not prepared; wrap an engine before
    using it, or dispose of its pool first.
    """
    if synchronous not in ("FULL", "NORMAL"):
        raise InvalidArgumentError(
            "synchronous", f"must be 'FULL' or 'NORMAL', not {synchronous!r}"
        )
    if checkpoints not in ("store", "external"):
        raise InvalidArgumentError(
            "checkpoints", f"must be 'store' or 'external', not {checkpoints!r}"
        )
    if engine.dialect.name != "sqlite":
        return
    sync_engine = engine.sync_engine
    if event.contains(sync_engine, "begin", _begin_sqlite_transaction):
        return

    def prepare_sqlite_connection(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if dbapi_connection.isolation_level is not None:
            dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in sqlite_pragmas(synchronous, busy_timeout_ms, checkpoints):
                cursor.execute(pragma)
        finally:
            cursor.close()

    event.listen(sync_engine, "connect", prepare_sqlite_connection)
    event.listen(sync_engine, "begin", _begin_sqlite_transaction)


def sqlite_pragmas(
    synchronous: Synchronous, busy_timeout_ms: int, checkpoints: Checkpoints = "store"
) -> tuple[str, ...]:
    """Return the PRAGMAs every statestore SQLite connection runs before anything else."""
    pragmas = (
        f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",
        "PRAGMA foreign_keys = ON",
        "PRAGMA journal_mode = WAL",
        f"PRAGMA synchronous = {synchronous}",
    )
    return (*pragmas, "PRAGMA wal_autocheckpoint = 0") if checkpoints == "external" else pragmas


def _begin_sqlite_transaction(connection: Connection) -> None:
    options = connection.get_execution_options()
    if options.get(MIGRATE_OPTION):
        # Only outside a transaction does this pragma take effect.
        connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif options.get(WRITE_OPTION):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


async def write_connection(connection: AsyncConnection) -> AsyncConnection:
    """Return ``connection`` marked so that its transactions begin as writes."""
    return await connection.execution_options(**{WRITE_OPTION: True})
