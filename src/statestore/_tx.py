"""One transaction, as the repository's queries see it, on either driver.

Queries in :mod:`statestore._ops` are plain synchronous functions of a :class:`Tx`. On
SQLite they run in a worker thread on a stdlib ``sqlite3`` connection, a whole transaction
per thread hop; on other backends they run through SQLAlchemy's ``run_sync`` on the async
engine. Either way the SQL is the text in :mod:`statestore._sql`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import TextClause, text
from sqlalchemy.engine import Connection
from sqlalchemy.util import await_

from statestore._rows import POSTGRESQL_TIME, SQLITE_TIME, TimeCodec

__all__ = ["AlchemyTx", "SQLiteTx", "Tx"]

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
        self.busy_timeout_ms: int | None = None
        """The connection's busy timeout, once the writer has set it."""

    def rows(self, sql: str, params: Params | None = None) -> list[Any]:
        return self.connection.execute(sql, params or {}).fetchall()

    def run(self, sql: str, params: Params | None = None) -> int:
        return self.connection.execute(sql, params or {}).rowcount

    def run_many(self, sql: str, rows: Sequence[Params]) -> None:
        if rows:
            self.connection.executemany(sql, rows)

    def call_in_loop(self, coroutine: Coroutine[Any, Any, ResultT]) -> ResultT:
        assert self.loop is not None, "call_in_loop needs the job's event loop"
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


_TEXT: dict[str, TextClause] = {}


def _text(sql: str) -> TextClause:
    clause = _TEXT.get(sql)
    if clause is None:
        clause = _TEXT[sql] = text(sql)
    return clause


class AlchemyTx:
    """A transaction on a SQLAlchemy connection inside ``AsyncConnection.run_sync``."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name
        self.time = SQLITE_TIME if self.dialect == "sqlite" else POSTGRESQL_TIME

    def rows(self, sql: str, params: Params | None = None) -> Sequence[Sequence[Any]]:
        return self.connection.execute(_text(sql), dict(params or {})).fetchall()

    def run(self, sql: str, params: Params | None = None) -> int:
        return self.connection.execute(_text(sql), dict(params or {})).rowcount

    def run_many(self, sql: str, rows: Sequence[Params]) -> None:
        if rows:
            self.connection.execute(_text(sql), [dict(row) for row in rows])

    def call_in_loop(self, coroutine: Coroutine[Any, Any, ResultT]) -> ResultT:
        return await_(coroutine)
