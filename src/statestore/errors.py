"""The exceptions statestore raises.

Every error statestore raises on purpose derives from :class:`StateStoreError`::

    StateStoreError
    ├── InvalidNameError (also ValueError)      bad category, document name or session id
    ├── InvalidDataError (also ValueError)      a value that cannot be stored as given
    ├── StoreClosedError (also RuntimeError)    the store was used after close()
    ├── SchemaVersionError                      the database is not at this version's schema
    └── DatabaseError                           the database refused or failed an operation

Input that fails a model's own validation raises pydantic's ``ValidationError``.
Errors from SQLAlchemy and the database drivers never leak: they are re-raised as
:class:`DatabaseError` with the original as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "DatabaseError",
    "InvalidDataError",
    "InvalidNameError",
    "SchemaVersionError",
    "StateStoreError",
    "StoreClosedError",
]


class StateStoreError(Exception):
    """Base class of every error statestore raises on purpose."""


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
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field


class StoreClosedError(StateStoreError, RuntimeError):
    """The store was used after :meth:`StateStore.close`."""


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


class DatabaseError(StateStoreError):
    """The database refused or failed an operation; the driver's error is ``__cause__``."""
