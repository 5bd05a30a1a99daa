"""Transactions on an async SQLAlchemy engine's pool: how statestore runs on PostgreSQL.

Each write runs in a task of its own, created when it is submitted; whoever awaits it
awaits it shielded, so cancelling the caller never cuts a transaction half-way. Writes with
the same key (a session id) on the same database form a lane, shared by every store of the
process: each starts once the one submitted before it has ended, so saves of one session
commit in call order. A transaction whose pooled connection turns out dead (the server
restarted) runs again once on a new connection, unless it died while committing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from statestore import _sql
from statestore._engine import write_connection
from statestore._runner import BatchBody, Body, ItemT
from statestore._tx import AlchemyTx, Tx
from statestore.errors import database_errors

__all__ = ["AlchemyRunner"]

ResultT = TypeVar("ResultT")

logger = logging.getLogger("statestore")


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a write's outcome as seen: its caller may have been cancelled and gone."""
    if not future.cancelled() and future.exception() is not None:
        logger.debug("write failed: %s", future.exception())


_lanes: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str | None], asyncio.Task[Any]]
] = weakref.WeakKeyDictionary()
"""Per event loop, the last write queued for each (database, session id): every store of
the process on one database shares them, so their writes of one session keep call order."""


def _leave_lane(
    lanes: dict[tuple[str, str | None], asyncio.Task[Any]],
    lane: tuple[str, str | None],
    task: asyncio.Task[Any],
) -> None:
    if lanes.get(lane) is task:
        del lanes[lane]


def _on_failure(callback: Callable[[], None], task: asyncio.Task[Any]) -> None:
    if task.cancelled() or task.exception() is not None:
        callback()


class _CommitFailed(Exception):
    """The connection failed while committing: an error that must not be retried."""

    def __init__(self, error: exc.DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


class AlchemyRunner:
    """Transactions on an async SQLAlchemy engine's pool, one connection each.

    A write runs in a task of its own, created when it is submitted; whoever awaits it
    awaits it shielded, so cancelling the caller never cuts a transaction half-way. Writes
    with the same key on the same database form a lane, shared by every store of the
    process on it: each starts once the one submitted before it has ended.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writes: set[asyncio.Task[Any]] = set()
        self._database = engine.url.render_as_string(hide_password=True)

    async def read(self, operation: str, body: Body[ResultT]) -> ResultT:
        # One snapshot for the whole read: at READ COMMITTED each statement would see the
        # saves committed before it, so a session row and its messages could come from two
        # different saves.
        with database_errors(operation):
            return await self._on_a_live_connection(body, write=False)

    async def _on_a_live_connection(self, body: Body[ResultT], *, write: bool) -> ResultT:
        """Run ``body`` in one transaction; once more on a new connection if the first died.

        A pooled connection may be dead (the server restarted, or the backend was ended):
        the first statement then fails, nothing has been committed, and the same work on a
        new connection is the work the caller asked for. A connection lost while
        committing is not retried: whether that commit happened is unknown, and the error
        goes to the caller. This replaces a ping on every checkout (a round trip each).
        """
        try:
            try:
                return await self._transaction(body, write=write)
            except exc.DBAPIError as error:
                if not error.connection_invalidated:
                    raise
            return await self._transaction(body, write=write)
        except _CommitFailed as failed:
            raise failed.error from None

    async def _transaction(self, body: Body[ResultT], *, write: bool) -> ResultT:
        async with self._engine.connect() as connection:
            if write:
                connection = await write_connection(connection)
            else:
                connection = await connection.execution_options(isolation_level="REPEATABLE READ")
            transaction = await connection.begin()
            try:
                result = await connection.run_sync(_with_tx(body))
            except BaseException:
                with contextlib.suppress(exc.DBAPIError):  # a dead connection cannot roll back
                    await transaction.rollback()
                raise
            try:
                await transaction.commit()
            except exc.DBAPIError as error:
                raise _CommitFailed(error) from error
            return result

    def submit_batched(
        self,
        operation: str,
        batch_body: BatchBody[ItemT],
        item: ItemT,
        key: str,
        *,
        busy_timeout: float | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> asyncio.Future[None]:
        def body(tx: Tx) -> None:
            batch_body(tx, [item])

        return self.submit(operation, body, key=key, on_failure=on_failure)

    def submit(
        self,
        operation: str,
        body: Body[ResultT],
        *,
        key: str | None = None,
        busy_timeout: float | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> asyncio.Future[ResultT]:
        lanes = _lanes.setdefault(asyncio.get_running_loop(), {})
        lane = (self._database, key)
        before = lanes.get(lane) if key is not None else None
        task = asyncio.ensure_future(self._write_unit(operation, body, before))
        self._writes.add(task)
        task.add_done_callback(self._finished)
        if on_failure is not None:
            task.add_done_callback(partial(_on_failure, on_failure))
        if key is not None:
            lanes[lane] = task
            task.add_done_callback(partial(_leave_lane, lanes, lane))
        return asyncio.shield(task)  # a cancelled waiter must not cut the transaction

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        _retrieve(task)

    async def _write_unit(
        self, operation: str, body: Body[ResultT], before: asyncio.Task[Any] | None
    ) -> ResultT:
        if before is not None:
            await asyncio.wait([before])  # its outcome is its own caller's
        with database_errors(operation):
            return await self._on_a_live_connection(body, write=True)

    async def compact(self) -> tuple[int, int]:
        with database_errors("compact"):
            async with self._engine.connect() as connection:
                connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
                before = (await connection.exec_driver_sql(_sql.POSTGRESQL_SIZE)).scalar_one()
                await connection.exec_driver_sql(_sql.POSTGRESQL_VACUUM)
                after = (await connection.exec_driver_sql(_sql.POSTGRESQL_SIZE)).scalar_one()
        return int(before), int(after)

    async def close(self) -> None:
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


def _with_tx(body: Body[ResultT]) -> Callable[[Connection], ResultT]:
    def run(connection: Connection) -> ResultT:
        return body(AlchemyTx(connection))

    return run
