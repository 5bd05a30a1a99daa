"""Transactions on PostgreSQL: asyncpg connections from the engine's pool, and group commit.

A transaction body (synchronous code, the same as on SQLite) runs in a greenlet on the
asyncpg connection behind a pooled SQLAlchemy connection; each statement is one await of
asyncpg, as a prepared statement from asyncpg's cache (SQLAlchemy's execution layer
costs more than the statement itself).

Every write runs whatever becomes of its caller: whoever awaits it awaits it shielded, so
cancelling the caller never cuts a transaction half-way. Writes with the same key (a
session id) on the same database form a lane, shared by every store of the process: each
starts once the one submitted before it has ended, so saves of one session commit in call
order. Saves whose turn has come wait in one list; up to :data:`COMMITTERS` transactions
at a time each take every save waiting (up to :data:`MAX_BATCH`, never two of one session,
which the lanes rule out) and commit them together, and each caller is answered after
that commit. If a batch fails with an error one save could cause, each of its saves is
tried alone, so a bad save fails only its own caller. A transaction whose connection
turns out dead (the server restarted) runs again once on a new connection, unless it
died while committing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import await_, greenlet_spawn

from statestore import _sql, _telemetry
from statestore._runner import MAX_BATCH, BatchBody, Body
from statestore._tx import PostgresTx, Tx
from statestore.errors import (
    ConstraintError,
    DatabaseBusyError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidDataError,
    StateStoreError,
    database_errors,
)

__all__ = ["COMMITTERS", "PostgresRunner"]

ResultT = TypeVar("ResultT")

logger = logging.getLogger("statestore")

COMMITTERS = 4
"""Save transactions one store runs at a time (each takes every save waiting)."""

_BEGIN_WRITE = "BEGIN ISOLATION LEVEL READ COMMITTED"
_BEGIN_BATCH = _BEGIN_WRITE + "; SET LOCAL lock_timeout = '200ms'"
"""A batch of saves gives up on a lock held elsewhere (a row another process has locked)
after a while, and its saves are then tried alone: one save waiting for a lock must not
hold up the others."""
_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
"""One snapshot for a whole read: at READ COMMITTED each statement would see the saves
committed before it, so a session row and its messages could come from two saves."""

_DEADLOCK_RETRIES = 2
"""Times a write (or a lone save) that was a deadlock victim is tried again."""

Lanes = dict[tuple[str, str], "asyncio.Future[Any]"]
"""The last write queued for each (database, session id)."""

Lane = tuple[Lanes, tuple[str, str]]
"""One lane: the lanes of its event loop, and its (database, session id)."""

_lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Lanes] = weakref.WeakKeyDictionary()
"""Per event loop, the last write queued for each (database, session id): every store of
the process on one database shares them, so their writes of one session keep call order."""


def _leave_lane(lanes: Lanes, lane: tuple[str, str], done: asyncio.Future[Any]) -> None:
    if lanes.get(lane) is done:
        del lanes[lane]


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a write's outcome as seen: its caller may have been cancelled and gone."""
    if not future.cancelled() and future.exception() is not None:
        logger.debug("write failed: %s", future.exception())


def _one_save_could_cause(error: BaseException) -> bool:
    """Whether one save of a batch could have caused ``error``, so the others may commit.

    A constraint, a value, a lock held elsewhere (another process's batch, or a row locked
    by hand), or a Python error from one save's own code could be any one save's; the
    server unreachable or full is nobody's, and trying each save alone would only fail
    each.
    """
    if isinstance(error, ConstraintError | InvalidDataError):
        return True
    if isinstance(error, DatabaseBusyError):
        return _sqlstate(error) in (_DEADLOCK, _LOCK_TIMEOUT)
    if isinstance(error, StateStoreError):
        return type(error) is DatabaseError
    return isinstance(error, Exception)


_DEADLOCK = "40P01"
_LOCK_TIMEOUT = "55P03"


def _sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of the driver error behind a statestore error, if it has one."""
    sqlstate = getattr(error.__cause__, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) else None


class _DeadConnection(Exception):
    """The connection was lost during a transaction (``committing``: while committing)."""

    def __init__(self, error: BaseException, *, committing: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.committing = committing


@dataclass(eq=False)
class _Save:
    """An item for a batch body, waiting for its turn or for its batch's commit."""

    operation: str
    batch_body: BatchBody[Any]
    item: Any
    on_failure: Callable[[], None] | None
    trace: _telemetry.Trace | None = None
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PostgresRunner:
    """Transactions on an async SQLAlchemy engine's pool, with group commit for saves."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        url = engine.url
        self._database = (
            f"{url.username}@{(url.host or '').lower()}:{url.port or 5432}/{url.database}"
        )
        """The database as lanes know it: stores whose URLs name the same user, host, port
        and database share lanes, whatever their driver, query or password."""
        self._writes: set[asyncio.Future[Any]] = set()
        self._ready: list[_Save] = []
        self._committers: set[asyncio.Task[None]] = set()

    # -- transactions ---------------------------------------------------------------------

    async def read(self, operation: str, body: Body[ResultT], *, key: str | None = None) -> ResultT:
        # A task of its own, awaited shielded as a write is: a cancelled reader never cuts
        # a transaction half-way (its connection could go back to the pool mid-transaction).
        task = asyncio.ensure_future(self._read_unit(operation, body))
        self._track(task)  # close() waits for it too
        if _telemetry.ENABLED:
            return await _telemetry.traced(operation, key, "postgresql", asyncio.shield(task))
        return await asyncio.shield(task)

    async def _read_unit(self, operation: str, body: Body[ResultT]) -> ResultT:
        with database_errors(operation):
            return await self._on_a_live_connection(operation, body, _BEGIN_READ)

    async def read_in(self, tx: Tx, operation: str, body: Body[ResultT]) -> ResultT:
        """Run ``body`` in a transaction already open (whose own greenlet is waiting)."""
        with database_errors(operation):
            result: ResultT = await greenlet_spawn(body, tx)
            return result

    async def _on_a_live_connection(
        self, operation: str, body: Body[ResultT], begin: str, *, rerun: bool = True
    ) -> ResultT:
        """Run ``body`` in one transaction; once more on a new connection if the first died.

        A pooled connection may be dead (the server restarted, or the backend was ended):
        the first statement then fails, nothing has been committed, and the same work on a
        new connection is the work the caller asked for. A connection lost while
        committing is not retried: whether that commit happened is unknown, and the
        caller gets :class:`DatabaseUnavailableError`; so is any transaction of a body that
        must not run twice (``rerun=False``). This replaces a ping on every checkout (a round
        trip each).
        """
        try:
            try:
                return await greenlet_spawn(self._transaction, body, begin)
            except _DeadConnection as dead:
                if dead.committing or not rerun:
                    raise
            return await greenlet_spawn(self._transaction, body, begin)
        except _DeadConnection as dead:
            raise DatabaseUnavailableError(
                f"{operation} failed: the connection was lost ({dead.error})"
            ) from dead.error

    def _transaction(self, body: Body[ResultT], begin: str) -> ResultT:
        """Check out a connection and run ``body`` between ``begin`` and ``COMMIT`` (in a
        greenlet)."""
        pooled = self._checkout()
        connection: Any = pooled.driver_connection  # an asyncpg.Connection
        committing = False
        rolled_back = False
        try:
            await_(connection.execute(begin))
            try:
                result = body(PostgresTx(connection))
            except Exception:
                if not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await_(connection.execute("ROLLBACK"))
                        rolled_back = True
                raise
            committing = True
            await_(connection.execute("COMMIT"))
            return result
        except BaseException as error:
            dead = connection.is_closed()
            # Back in the pool only when known outside a transaction: after a rollback that
            # worked, or a COMMIT that failed (which ends the transaction) on a live
            # connection. Anything else -- a cancellation, a failed rollback -- drops it.
            if dead or not (rolled_back or committing) or connection.is_in_transaction():
                pooled.invalidate(error)
            if dead and isinstance(error, Exception):
                raise _DeadConnection(error, committing=committing) from error
            raise
        finally:
            pooled.close()

    def _checkout(self) -> PoolProxiedConnection:
        """A pooled connection that asyncpg has not seen closed (in a greenlet).

        A connection the server closed while it sat in the pool (a restart, an idle
        timeout) is known closed without a round trip: it is replaced, not used.
        """
        while True:
            pooled = self._engine.sync_engine.raw_connection()
            connection: Any = pooled.driver_connection  # an asyncpg.Connection
            if not connection.is_closed():
                return pooled
            pooled.invalidate()
            pooled.close()

    # -- writes -------------------------------------------------------------------------

    def _lane(self, key: str) -> tuple[Lane, asyncio.Future[Any] | None]:
        """``key``'s lane on this database, and the last write queued in it."""
        lanes = _lanes.setdefault(asyncio.get_running_loop(), {})
        lane = (lanes, (self._database, key))
        return lane, lanes.get(lane[1])

    def _track(self, done: asyncio.Future[Any], lane: Lane | None = None) -> None:
        """Have :meth:`close` wait for ``done``; make it the last write of ``lane``."""
        self._writes.add(done)
        done.add_done_callback(self._writes.discard)
        done.add_done_callback(_retrieve)
        if lane is not None:
            lanes, name = lane
            lanes[name] = done
            done.add_done_callback(partial(_leave_lane, lanes, name))

    def submit(
        self,
        operation: str,
        body: Body[ResultT],
        *,
        key: str | None = None,
        busy_timeout: float | None = None,
        rerun: bool = True,
    ) -> asyncio.Future[ResultT]:
        lane, before = self._lane(key) if key is not None else (None, None)
        trace = _telemetry.start(operation, key, "postgresql") if _telemetry.ENABLED else None
        task = asyncio.ensure_future(self._write_unit(operation, body, before, rerun, trace))
        self._track(task, lane)
        if trace is not None:
            _telemetry.queued("postgresql", 1)
            task.add_done_callback(partial(_finish, trace))
        return asyncio.shield(task)  # a cancelled waiter must not cut the transaction

    async def _write_unit(
        self,
        operation: str,
        body: Body[ResultT],
        before: asyncio.Future[Any] | None,
        rerun: bool,
        trace: _telemetry.Trace | None,
    ) -> ResultT:
        if before is not None:
            await asyncio.wait([before])  # its outcome is its own caller's
        if trace is not None:
            _telemetry.queued("postgresql", -1)
        retries = _DEADLOCK_RETRIES if rerun else 0
        while True:
            started = time.monotonic()
            try:
                with database_errors(operation):
                    result = await self._on_a_live_connection(
                        operation, body, _BEGIN_WRITE, rerun=rerun
                    )
            except DatabaseBusyError as error:
                _telemetry.transaction_done("postgresql", operation, [], started, None, failed=True)
                if not retries or _sqlstate(error) != _DEADLOCK:
                    raise
                retries -= 1  # a deadlock victim committed nothing: run it again
            except BaseException:
                _telemetry.transaction_done("postgresql", operation, [], started, None, failed=True)
                raise
            else:
                _telemetry.transaction_done(
                    "postgresql", operation, [trace], started, None, failed=False
                )
                return result

    def submit_batched(
        self,
        operation: str,
        batch_body: BatchBody[Any],
        item: Any,
        key: str,
        *,
        busy_timeout: float | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> asyncio.Future[None]:
        lane, before = self._lane(key)
        save = _Save(operation, batch_body, item, on_failure)
        if _telemetry.ENABLED:
            save.trace = _telemetry.start(operation, key, "postgresql")
            _telemetry.queued("postgresql", 1)
        self._track(save.done, lane)
        if before is None:
            self._ready_to_commit(save)
        else:
            before.add_done_callback(lambda _: self._ready_to_commit(save))
        return asyncio.shield(save.done)

    def _ready_to_commit(self, save: _Save) -> None:
        self._ready.append(save)
        if len(self._committers) < COMMITTERS:
            committer = asyncio.ensure_future(self._commit_ready())
            self._committers.add(committer)
            committer.add_done_callback(self._committers.discard)

    async def _commit_ready(self) -> None:
        while self._ready:
            body = self._ready[0].batch_body
            batch = [save for save in self._ready if save.batch_body is body][:MAX_BATCH]
            taken = set(map(id, batch))
            self._ready = [save for save in self._ready if id(save) not in taken]
            if _telemetry.ENABLED:
                _telemetry.queued("postgresql", -len(batch))
            await self._commit(batch)

    async def _commit(self, batch: list[_Save], retries: int = _DEADLOCK_RETRIES) -> None:
        first = batch[0]
        items = [save.item for save in batch]

        def body(tx: Tx) -> None:
            first.batch_body(tx, items)

        started = time.monotonic()
        try:
            with database_errors(first.operation):
                await self._on_a_live_connection(
                    first.operation, body, _BEGIN_BATCH if len(batch) > 1 else _BEGIN_WRITE
                )
        except BaseException as error:
            _telemetry.transaction_done(
                "postgresql", first.operation, [None] * len(batch), started, None, failed=True
            )
            if len(batch) > 1 and _one_save_could_cause(error):
                # Find the failing (or waiting) save: every other one commits alone.
                await asyncio.gather(*(self._commit([save]) for save in batch))
                return
            if retries and _sqlstate(error) == _DEADLOCK:
                await self._commit(batch, retries - 1)
                return
            for save in batch:
                _settle(save, error)
            if not isinstance(error, Exception):
                raise
            return
        traces = [save.trace for save in batch]
        _telemetry.transaction_done(
            "postgresql", first.operation, traces, started, None, failed=False
        )
        for save in batch:
            _settle(save, None)

    # -- maintenance ----------------------------------------------------------------------

    async def compact(self) -> tuple[int, int]:
        with database_errors("compact"):
            async with self._engine.connect() as connection:
                connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
                before = (await connection.exec_driver_sql(_sql.POSTGRESQL_SIZE)).scalar_one()
                await connection.exec_driver_sql(_sql.POSTGRESQL_VACUUM)
                after = (await connection.exec_driver_sql(_sql.POSTGRESQL_SIZE)).scalar_one()
        return int(before), int(after)

    async def close(self) -> None:
        while self._writes:  # reads too
            await asyncio.gather(*self._writes, return_exceptions=True)


def _finish(trace: _telemetry.Trace, done: asyncio.Future[Any]) -> None:
    trace.finish(None if done.cancelled() else done.exception())


def _settle(save: _Save, error: BaseException | None) -> None:
    if error is not None and save.on_failure is not None:
        save.on_failure()
    if save.done.done():
        return
    if save.trace is not None:
        save.trace.finish(error)
    if error is None:
        save.done.set_result(None)
    else:
        save.done.set_exception(error)
