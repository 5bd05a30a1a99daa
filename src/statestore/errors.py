"""The exceptions statestore raises, and the one place driver errors become them.

Every error statestore raises on purpose derives from :class:`StateStoreError`::

    StateStoreError
    ├── InvalidNameError (also ValueError)       bad category, document name or session id
    ├── InvalidDataError (also ValueError)       a value that cannot be stored as given
    │   └── InvalidArgumentError                 an option or argument out of its range or type
    │       └── SessionExistsError               a fork's new id names a stored session
    ├── StoreClosedError (also RuntimeError)     the store was used after close()
    ├── ReentrantWriteError (also RuntimeError)  a write from inside update_session_with's fn
    ├── SessionNotFoundError (also LookupError)  no session has the id an append names
    ├── SchemaVersionError                       the database is not at this version's schema
    ├── MigrationError                           a migration could not run, or broke the data
    └── DatabaseError                            the database refused or failed an operation
        ├── DatabaseBusyError                    locked elsewhere too long, or a deadlock
        ├── DatabaseUnavailableError             cannot connect, or the connection was lost
        ├── StorageFullError                     the disk (or the server's) is full
        └── ConstraintError                      a constraint of the schema refused a row

Input that fails a model's own validation raises pydantic's ``ValidationError``.
Errors from SQLAlchemy and the database drivers never leak: :func:`database_errors`
re-raises them as the :class:`DatabaseError` subclass that fits, with the original as
``__cause__``.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import exc

__all__ = [
    "ConstraintError",
    "DatabaseBusyError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "InvalidArgumentError",
    "InvalidDataError",
    "InvalidNameError",
    "MigrationError",
    "ReentrantWriteError",
    "SchemaVersionError",
    "SessionExistsError",
    "SessionNotFoundError",
    "StateStoreError",
    "StorageFullError",
    "StoreClosedError",
]
"""The exception classes; :func:`translate` and :func:`database_errors` are for
statestore's own modules."""


class StateStoreError(Exception):
    """Base class of every error statestore raises on purpose.

    Every one pickles whole (message and attributes), so that it crosses a process pool.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own reduce calls the class with ``args`` (the message alone), which
        # fails for the subclasses whose constructors take their fields.
        return (_rebuilt, (type(self), self.args, self.__dict__))


def _rebuilt(cls: type[StateStoreError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class InvalidNameError(StateStoreError, ValueError):
    """A category, document name or session id breaks the naming rules.

    Attributes:
        kind: What was named: ``"category"``, ``"name"`` or ``"session id"``.
        value: The rejected value, as given.
    """

    def __init__(self, kind: str, value: object, reason: str) -> None:
        super().__init__(f"invalid {kind} {value!r}: {reason}")
        self.kind = kind
        self.value = value


class InvalidDataError(StateStoreError, ValueError):
    """A value cannot be stored as given (not JSON-able, NUL characters, and so on).

    Attributes:
        field: Where the value was found, e.g. ``"metadata"`` or ``"data"``.
        reason: What is wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason


class InvalidArgumentError(InvalidDataError):
    """An argument or option is out of its range or of the wrong type.

    For example ``limit=0``, a config that is not a ``PruneConfig``, an ``fn`` that is not
    callable, or a database URL statestore cannot run on. ``field`` names the argument.
    """


class SessionExistsError(InvalidArgumentError):
    """The id asked for a new session (``fork_session(new_id=...)``) is already stored.

    Attributes:
        session_id: The id asked for.
    """

    def __init__(self, session_id: str) -> None:
        super().__init__("new_id", f"a session {session_id!r} is already stored")
        self.session_id = session_id


class StoreClosedError(StateStoreError, RuntimeError):
    """The store was used after :meth:`StateStore.close`."""


class ReentrantWriteError(StateStoreError, RuntimeError):
    """A write was attempted from inside ``update_session_with``'s ``fn``.

    ``fn`` runs while the database's write transaction is held, so the write would wait
    for itself: change the session passed to ``fn`` instead.
    """


class SessionNotFoundError(StateStoreError, LookupError):
    """No stored session has the id an operation needs (``append_to_session``).

    Attributes:
        session_id: The id asked for.
    """

    def __init__(self, session_id: str) -> None:
        super().__init__(f"no session {session_id!r} is stored")
        self.session_id = session_id

    def __str__(self) -> str:  # LookupError would print the message quoted
        return str(self.args[0])


class SchemaVersionError(StateStoreError):
    """The database's schema revision is not the one this version of statestore needs.

    Attributes:
        current: The database's revision (``None`` if it has no statestore schema).
        expected: The revision this statestore needs (its newest).
    """

    def __init__(self, current: str | None, expected: str, message: str) -> None:
        super().__init__(message)
        self.current = current
        self.expected = expected


class MigrationError(StateStoreError):
    """A migration could not run here, or would leave the data broken (it rolled back)."""


class DatabaseError(StateStoreError):
    """The database refused or failed an operation; the driver's error is ``__cause__``."""


class DatabaseBusyError(DatabaseError):
    """Another connection held a lock past the wait allowed, or transactions deadlocked.

    Nothing was written; the same operation may succeed when tried again.
    """


class DatabaseUnavailableError(DatabaseError):
    """The database could not be reached, or the connection to it was lost.

    A write that fails so may or may not have committed; the store reconnects by itself.
    """


class StorageFullError(DatabaseError):
    """The disk holding the database (or the server's) is full; nothing was written."""


class ConstraintError(DatabaseError):
    """A constraint of the schema (a key, a check, a trigger) refused a row."""


# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_CLASSES: dict[int, type[DatabaseError]] = {
    5: DatabaseBusyError,  # SQLITE_BUSY
    6: DatabaseBusyError,  # SQLITE_LOCKED
    13: StorageFullError,  # SQLITE_FULL
    14: DatabaseUnavailableError,  # SQLITE_CANTOPEN
    19: ConstraintError,  # SQLITE_CONSTRAINT
}

# PostgreSQL SQLSTATEs, by their first two characters (a class) or all five.
_SQLSTATE_CLASSES: dict[str, type[DatabaseError]] = {
    "23": ConstraintError,  # integrity constraint violation
    "40001": DatabaseBusyError,  # serialization failure
    "40P01": DatabaseBusyError,  # deadlock detected
    "55P03": DatabaseBusyError,  # lock not available
    "53100": StorageFullError,  # disk full
    "08": DatabaseUnavailableError,  # connection exception
    "57P01": DatabaseUnavailableError,  # admin shutdown
    "57P02": DatabaseUnavailableError,  # crash shutdown
    "57P03": DatabaseUnavailableError,  # cannot connect now
}


def _driver_class(error: BaseException | None) -> type[DatabaseError]:
    """The class for a driver's own exception (sqlite3, asyncpg, the OS)."""
    seen = 0
    while error is not None and seen < 4:  # asyncpg's error sits behind SQLAlchemy's adapter
        if isinstance(error, sqlite3.Error):
            code = getattr(error, "sqlite_errorcode", None)
            return _SQLITE_CLASSES.get(code & 0xFF if code else -1, DatabaseError)
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str):
            return _SQLSTATE_CLASSES.get(
                sqlstate, _SQLSTATE_CLASSES.get(sqlstate[:2], DatabaseError)
            )
        if isinstance(error, OSError):
            return DatabaseUnavailableError
        error = error.__cause__ or getattr(error, "orig", None)
        seen += 1
    return DatabaseError


def translate(operation: str, error: BaseException) -> StateStoreError | None:
    """Return the statestore error for a SQLAlchemy or driver error, or ``None``.

    ``None`` means ``error`` is not a database error (a bug, a cancellation): let it go.
    """
    if isinstance(error, exc.StatementError) and not isinstance(error, exc.DBAPIError):
        if isinstance(error.orig, ValueError):
            return InvalidDataError(operation, str(error.orig))
        return DatabaseError(f"{operation} failed: {error.orig or error}")
    if isinstance(error, exc.DBAPIError):
        cls = (
            DatabaseUnavailableError if error.connection_invalidated else _driver_class(error.orig)
        )
        return cls(f"{operation} failed: {error.orig or error}")
    if isinstance(error, exc.SQLAlchemyError):
        return DatabaseError(f"{operation} failed: {error}")
    if isinstance(error, sqlite3.Error | OSError):
        return _driver_class(error)(f"{operation} failed: {error}")
    asyncpg = sys.modules.get("asyncpg")  # none of its errors exist unless it is imported
    if asyncpg is not None and isinstance(error, asyncpg.PostgresError | asyncpg.InterfaceError):
        return _from_asyncpg(asyncpg, operation, error)
    return None


def _from_asyncpg(asyncpg: Any, operation: str, error: Exception) -> StateStoreError:
    """The statestore error for one of asyncpg's own (from the direct asyncpg path)."""
    if getattr(error, "sqlstate", None) is not None:
        return _driver_class(error)(f"{operation} failed: {error}")
    if isinstance(error, ValueError):  # a value asyncpg could not encode for its column
        return InvalidDataError(operation, str(error))
    if isinstance(error, asyncpg.ConnectionDoesNotExistError):
        return DatabaseUnavailableError(f"{operation} failed: {error}")
    return DatabaseError(f"{operation} failed: {error}")


@contextmanager
def database_errors(operation: str) -> Iterator[None]:
    """Re-raise SQLAlchemy and driver errors inside the block as statestore errors."""
    try:
        yield
    except Exception as error:
        translated = translate(operation, error)
        if translated is None:
            raise
        raise translated from error
