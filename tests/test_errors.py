"""The error tree, and the one translator that turns driver errors into it."""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

import asyncpg.exceptions as pg
import pytest
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import create_async_engine

import statestore
from statestore import errors
from statestore.errors import (
    ConstraintError,
    DatabaseBusyError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidDataError,
    StorageFullError,
    translate,
)


def _sqlite_error(kind: type[sqlite3.Error], message: str, code: int) -> sqlite3.Error:
    error = kind(message)
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


def _wrapped(orig: BaseException, *, invalidated: bool = False) -> exc.DBAPIError:
    """``orig`` as SQLAlchemy raises it from a statement."""
    return exc.DBAPIError("SELECT 1", {}, orig, connection_invalidated=invalidated)  # type: ignore[arg-type]


SQLITE = sqlite3.OperationalError
DRIVER_ERRORS = {
    "sqlite-busy": (_sqlite_error(SQLITE, "database is locked", 5), DatabaseBusyError),
    "sqlite-locked": (_sqlite_error(SQLITE, "database table is locked", 262), DatabaseBusyError),
    "sqlite-full": (_sqlite_error(SQLITE, "database or disk is full", 13), StorageFullError),
    "sqlite-cantopen": (
        _sqlite_error(SQLITE, "unable to open database file", 14),
        DatabaseUnavailableError,
    ),
    "sqlite-unique": (
        _sqlite_error(sqlite3.IntegrityError, "UNIQUE constraint failed", 2067),
        ConstraintError,
    ),
    "sqlite-ioerr": (_sqlite_error(SQLITE, "disk I/O error", 10), DatabaseError),
    "sqlite-notadb": (
        _sqlite_error(sqlite3.DatabaseError, "file is not a database", 26),
        DatabaseError,
    ),
    "pg-deadlock": (_wrapped(pg.DeadlockDetectedError("deadlock")), DatabaseBusyError),
    "pg-serialization": (_wrapped(pg.SerializationError("serialize")), DatabaseBusyError),
    "pg-lock-not-available": (_wrapped(pg.LockNotAvailableError("lock")), DatabaseBusyError),
    "pg-unique": (_wrapped(pg.UniqueViolationError("dup")), ConstraintError),
    "pg-check": (_wrapped(pg.CheckViolationError("check")), ConstraintError),
    "pg-disk-full": (_wrapped(pg.DiskFullError("full")), StorageFullError),
    "pg-admin-shutdown": (_wrapped(pg.AdminShutdownError("bye")), DatabaseUnavailableError),
    "pg-starting": (_wrapped(pg.CannotConnectNowError("wait")), DatabaseUnavailableError),
    "pg-connection-gone": (
        _wrapped(pg.ConnectionDoesNotExistError("gone")),
        DatabaseUnavailableError,
    ),
    "invalidated": (_wrapped(RuntimeError("closed"), invalidated=True), DatabaseUnavailableError),
    "refused": (ConnectionRefusedError(111, "refused"), DatabaseUnavailableError),
    "sqlalchemy-other": (exc.ResourceClosedError("closed"), DatabaseError),
}


@pytest.mark.parametrize(
    ("driver_error", "expected"), list(DRIVER_ERRORS.values()), ids=list(DRIVER_ERRORS)
)
def test_each_driver_error_becomes_its_class(
    driver_error: BaseException, expected: type[DatabaseError]
) -> None:
    """The translator maps each driver error to the class that names its condition."""
    translated = translate("save_session", driver_error)
    assert type(translated) is expected
    assert str(translated).startswith("save_session failed: ")


def test_a_value_the_driver_refuses_is_invalid_data() -> None:
    """A bad value refused before the database saw it is an InvalidDataError."""
    error = exc.StatementError("bad value", "SELECT :x", {"x": 1}, ValueError("too big"))
    translated = translate("save_session", error)
    assert isinstance(translated, InvalidDataError)


def test_an_error_that_is_not_the_databases_is_not_translated() -> None:
    """A bug or a cancellation passes through as itself."""
    assert translate("save_session", KeyError("x")) is None


def test_a_real_sqlite_lock_and_constraint_translate(tmp_path: Path) -> None:
    """Real sqlite3 errors for a held lock and a duplicate key get their classes."""
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    holder.execute("INSERT INTO t VALUES (1)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with pytest.raises(DatabaseBusyError), errors.database_errors("write"):
            other.execute("BEGIN IMMEDIATE")
        holder.execute("ROLLBACK")
        with pytest.raises(ConstraintError), errors.database_errors("write"):
            other.execute("INSERT INTO t VALUES (1)")
    finally:
        other.close()
        holder.close()


@pytest.mark.postgresql
async def test_a_real_postgresql_constraint_translates_through_sqlalchemy(
    postgresql_url: object,
) -> None:
    """A unique violation raised through SQLAlchemy's asyncpg adapter is a ConstraintError."""
    engine = create_async_engine(postgresql_url)  # type: ignore[call-overload]
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TEMPORARY TABLE t (id int PRIMARY KEY)"))
            await connection.execute(text("INSERT INTO t VALUES (1)"))
            with pytest.raises(ConstraintError), errors.database_errors("write"):
                await connection.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        await engine.dispose()


def test_the_tree_in_the_docstring_lists_every_error() -> None:
    """errors' module docstring draws every exception class it exports."""
    classes = [name for name in errors.__all__ if isinstance(getattr(errors, name), type)]
    for name in classes:
        assert name in (errors.__doc__ or ""), name
        assert issubclass(getattr(errors, name), statestore.StateStoreError)
        assert name in statestore.__all__


@pytest.mark.parametrize(
    "error",
    [
        statestore.InvalidNameError("session id", "a/b", "has a slash"),
        statestore.InvalidDataError("metadata", "not JSON"),
        statestore.InvalidArgumentError("limit", "must be positive"),
        statestore.SchemaVersionError("0003", "0004", "the database is at 0003"),
        statestore.DatabaseBusyError("save_session failed: locked"),
        statestore.StoreClosedError("this StateStore is closed"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_error_pickles_whole(error: statestore.StateStoreError) -> None:
    """An error crosses a process pool with its class, message and fields."""
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), vars(copy)) == (type(error), str(error), vars(error))
