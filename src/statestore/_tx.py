"""One transaction, as the repository's queries see it, on either driver.

Queries in :mod:`statestore._ops` are plain synchronous functions of a :class:`Tx`. On
SQLite they run in a worker thread on a stdlib ``sqlite3`` connection, a whole transaction
per thread hop; on PostgreSQL they run in a greenlet on an asyncpg connection taken from
the engine's pool. Either way the SQL is the text in :mod:`statestore._sql`.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import re
import sqlite3
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy.util import await_

from statestore._rows import POSTGRESQL_TIME, SQLITE_TIME, TimeCodec

__all__ = ["PostgresTx", "SQLiteTx", "Tx"]

ResultT = TypeVar("ResultT")
Params = Mapping[str, Any]


class Tx(Protocol):
    """A transaction in progress."""

    dialect: str
    time: TimeCodec

    def rows(self, sql: str, params: Params | None = None) -> Sequence[Sequence[Any]]:
        """Run a query and return all its rows."""

    def run(self, sql: str, params: Params | None = None) -> int:
        """Run a statement and return how many rows it changed."""

    def run_many(self, sql: str, rows: Sequence[Params]) -> None:
        """Run a statement once per parameter set."""

    def call_in_loop(self, coroutine: Coroutine[Any, Any, ResultT]) -> ResultT:
        """Run a coroutine on the event loop that owns the store and return its result."""


class SQLiteTx:
    """A transaction on a stdlib ``sqlite3`` connection, run in a worker thread."""

    dialect = "sqlite"
    time = SQLITE_TIME

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.loop: asyncio.AbstractEventLoop | None = None

    def rows(self, sql: str, params: Params | None = None) -> list[Any]:
        return self.connection.execute(sql, params or {}).fetchall()

    def run(self, sql: str, params: Params | None = None) -> int:
        return self.connection.execute(sql, params or {}).rowcount

    def run_many(self, sql: str, rows: Sequence[Params]) -> None:
        """Run the statement for each row; an INSERT's rows go in few statements.

        Every statement that fires a trigger opens a savepoint, and FTS5 (the search
        index the triggers on messages and responses write) writes out what it holds at
        each savepoint: 64 appends in 128 statements wrote 128 index segments, 31 µs a row.
        In multi-row INSERTs of 1, 2, 4, ... 64 rows (few statement texts to prepare), a
        batch writes one segment per statement: 9 µs a row.
        """
        if not rows:
            return
        insert = _multirow_insert(sql)
        if insert is None:
            self.connection.executemany(sql, rows)
            return
        start = 0
        while start < len(rows):
            size = min(_MULTIROW_MAX, 1 << (len(rows) - start).bit_length() - 1)
            statement, names = insert(size)
            chunk = rows[start : start + size]
            self.connection.execute(statement, [row[name] for row in chunk for name in names])
            start += size

    def call_in_loop(self, coroutine: Coroutine[Any, Any, ResultT]) -> ResultT:
        assert self.loop is not None, "call_in_loop needs the job's event loop"
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


_MULTIROW_MAX = 64
"""The most rows one multi-row INSERT of :meth:`SQLiteTx.run_many` holds."""

_VALUES = re.compile(r"\bVALUES\s*\(([^()]*)\)", re.IGNORECASE)


@functools.cache
def _multirow_insert(sql: str) -> Callable[[int], tuple[str, list[str]]] | None:
    """For ``INSERT ... VALUES (:a, :b, ...) [tail]``: a function of a row count giving
    the statement with that many ``(?, ?, ...)`` rows and the parameter names in order.
    None for any other statement."""
    found = _VALUES.search(sql)
    if not sql.lstrip().upper().startswith("INSERT") or found is None:
        return None
    names = [name.strip().removeprefix(":") for name in found.group(1).split(",")]
    if not all(name.isidentifier() for name in names):
        return None
    row = "(" + ", ".join("?" * len(names)) + ")"

    @functools.cache
    def statement(count: int) -> tuple[str, list[str]]:
        values = "VALUES " + ", ".join([row] * count)
        return sql[: found.start()] + values + sql[found.end() :], names

    return statement


_NAMED_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")
"""A ``:name`` parameter (not the second colon of a ``::type`` cast)."""


@functools.cache
def _numbered(sql: str) -> tuple[str, Callable[[Params], tuple[Any, ...]]]:
    """Return ``sql`` with ``$1, $2 ...`` for its ``:name`` parameters, and their getter."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    numbered = _NAMED_PARAMETER.sub(number, sql)
    if not names:
        return numbered, lambda params: ()
    if len(names) == 1:
        [only] = names
        return numbered, lambda params: (params[only],)
    return numbered, operator.itemgetter(*names)


def _changed(status: str) -> int:
    """The row count in a command tag such as ``UPDATE 3`` or ``INSERT 0 1``."""
    count = status.rpartition(" ")[2]
    return int(count) if count.isdigit() else 0


class PostgresTx:
    """A transaction on an asyncpg connection, its statements run from a greenlet.

    The body of a transaction is synchronous code (the same as on SQLite); it runs in a
    greenlet (SQLAlchemy's ``greenlet_spawn``), and each statement awaits asyncpg once
    from there, as a prepared statement from asyncpg's cache.
    """

    dialect = "postgresql"
    time = POSTGRESQL_TIME

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        """The ``asyncpg.Connection``."""

    def rows(self, sql: str, params: Params | None = None) -> Sequence[Sequence[Any]]:
        numbered, values = _numbered(sql)
        rows: Sequence[Sequence[Any]] = await_(
            self.connection.fetch(numbered, *values(params or {}))
        )
        return rows

    def run(self, sql: str, params: Params | None = None) -> int:
        numbered, values = _numbered(sql)
        return _changed(await_(self.connection.execute(numbered, *values(params or {}))))

    def run_many(self, sql: str, rows: Sequence[Params]) -> None:
        if rows:
            numbered, values = _numbered(sql)
            await_(self.connection.executemany(numbered, [values(row) for row in rows]))

    def call_in_loop(self, coroutine: Coroutine[Any, Any, ResultT]) -> ResultT:
        return await_(coroutine)
