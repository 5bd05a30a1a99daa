"""Where transactions run: one writer thread with group commit on SQLite, a pool elsewhere.

On SQLite every write in a store goes through one thread and one connection. The thread
takes the next job from a queue; if it is a save, it also takes the saves queued behind it
(up to :data:`MAX_BATCH`, one per session) and commits them in one ``BEGIN IMMEDIATE``
transaction -- one fsync for all of them at ``synchronous=FULL``. Each caller's future is
resolved only after that commit. Saves in a batch share statements: one lookup of the
stored state tokens, one ``executemany`` per table. Jobs run in the order they were
submitted. If a batch fails with an error that one save can cause (a constraint, a value
the driver cannot bind), each of its saves is retried alone, so one bad save fails only its
own caller; an error that no single save causes (the database busy or locked, the disk
full, an I/O error) fails the whole batch at once. No job waits for another process's lock
much longer than ``busy_timeout`` from when it was submitted: each transaction waits only
as long as its oldest job has left. A caller cancelled while waiting does not stop its job:
a transaction is never cut half-way, and the write lock is released by the thread.

Reads run in a small pool of threads, each with its own connection, one whole read
transaction per thread hop; WAL lets them proceed while the writer writes.

On PostgreSQL :class:`statestore._pool.AlchemyRunner` runs transactions on the engine's
pool instead, behind the same :class:`Runner` protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from statestore import _telemetry
from statestore._engine import Checkpoints, Synchronous, sqlite_pragmas
from statestore._tx import SQLiteTx, Tx
from statestore.errors import (
    ConstraintError,
    DatabaseBusyError,
    DatabaseError,
    InvalidArgumentError,
    database_errors,
)

__all__ = [
    "MAX_BATCH",
    "BatchBody",
    "Body",
    "ItemT",
    "Runner",
    "SQLiteRunner",
    "acquire_sqlite_runner",
    "release_sqlite_runner",
]

ResultT = TypeVar("ResultT")
ItemT = TypeVar("ItemT")
Body = Callable[[Tx], ResultT]

logger = logging.getLogger("statestore")

MAX_BATCH = 256
"""The most saves one group commit takes."""

READERS = 2
"""Reader threads per SQLite store (this machine class has two cores)."""

CHECKPOINT_EVERY = 200
"""Write transactions between two WAL checkpoints (each run in the checkpoint thread)."""


BatchBody = Callable[[Tx, list[ItemT]], None]


class Runner(Protocol):
    """Runs transaction bodies for a store.

    Writes are submitted, not awaited: ``submit`` queues the work at once and returns a
    future resolved after its commit (or with its error). The work runs whatever becomes
    of whoever awaits the future -- cancelling the future itself never stops it -- and
    writes with the same ``key`` commit in the order they were submitted.
    """

    async def read(self, operation: str, body: Body[ResultT], *, key: str | None = None) -> ResultT:
        """Run ``body`` in a read transaction; ``key`` is the session it reads, if one."""

    def submit(
        self,
        operation: str,
        body: Body[ResultT],
        *,
        key: str | None = None,
        busy_timeout: float | None = None,
        rerun: bool = True,
    ) -> asyncio.Future[ResultT]:
        """Queue ``body`` to run in a write transaction of its own.

        ``busy_timeout`` (SQLite): how long it may wait for another process's lock.
        ``rerun`` (PostgreSQL): whether ``body`` may run again after a failure that
        committed nothing (a dead connection, a deadlock).
        """

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
        """Queue ``batch_body`` on ``item``, possibly in one transaction with other items
        queued for the same ``batch_body`` -- never two with the same ``key``.

        ``on_failure`` is called on the loop if the item's write fails, whether or not
        anyone still waits for the future.
        """

    async def compact(self) -> tuple[int, int]:
        """Give deleted rows' space back; return the bytes used before and after."""

    async def close(self) -> None:
        """Finish queued work and release every connection."""


def _connect_sqlite(
    path: str, synchronous: Synchronous, busy_timeout_ms: int, checkpoints: Checkpoints
) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in sqlite_pragmas(synchronous, busy_timeout_ms, checkpoints):
        connection.execute(pragma)
    return connection


@dataclass(eq=False)
class _Job:
    """Work for the writer: a ``body``, or an ``item`` for a ``batch_body``.

    ``deadline`` (on the monotonic clock) is when the job stops waiting for another
    process's lock: its submission plus the busy timeout.
    """

    operation: str
    loop: asyncio.AbstractEventLoop
    deadline: float
    body: Body[Any] | None = None
    batch_body: BatchBody[Any] | None = None
    item: Any = None
    batch_key: str | None = None
    on_failure: Callable[[], None] | None = None
    trace: _telemetry.Trace | None = None
    future: asyncio.Future[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()


_LOCK_POLL = 0.001
"""Seconds between two tries for a write lock that another process holds.

SQLite's own busy handler sleeps longer each try, up to 100 ms. A process that commits back
to back frees the lock for a few microseconds between transactions, so a peer that tries
every 100 ms rarely finds it free: of two processes saving at once, one went 1.8 s without
a commit (``benchmarks/bench_lock_fairness.py`` measures it). The writer therefore tries
``BEGIN IMMEDIATE`` itself, every millisecond, until its batch is out of time. It is not a
queue: a peer that blocks while it holds the lock frees it only when it runs again, and a
writer sharing its CPU is then rarely running at that moment."""

_BUSY_STEP_MS = 250
"""The busy timeout inside a transaction is its batch's time left, rounded down to this
step so that the few ``PRAGMA`` texts it takes stay compiled."""

_EXPIRY_SLACK = 0.05
"""Seconds before its deadline at which a job behind a held lock counts as out of time."""


def _begin_immediate(connection: sqlite3.Connection, deadline: float) -> None:
    """Take the write lock, trying every :data:`_LOCK_POLL` seconds until ``deadline``.

    Statements inside the transaction then wait for a lock as long as the batch has left.
    """
    connection.execute("PRAGMA busy_timeout = 0")
    while True:
        try:
            connection.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as error:
            busy = getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() + _LOCK_POLL >= deadline:
                raise
        time.sleep(_LOCK_POLL)
    left = max(0, int((deadline - time.monotonic()) * 1000))
    connection.execute(f"PRAGMA busy_timeout = {left - left % _BUSY_STEP_MS}")


def _one_save_could_cause(error: BaseException) -> bool:
    """Whether one job of a batch could have caused ``error``, so the others may commit.

    A constraint, or a Python error from one job's own code or values, could be any one
    job's; the database busy, locked, full, read-only, damaged or failing to read and write
    is nobody's, and retrying each job would only wait again for each.
    """
    if isinstance(error, ConstraintError):
        return True
    if isinstance(error, DatabaseError):  # a value the driver could not bind or store
        return isinstance(
            error.__cause__, sqlite3.DataError | sqlite3.ProgrammingError | sqlite3.InterfaceError
        )
    return isinstance(error, Exception)


_STOP = object()


def _settle(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
    """Resolve jobs' futures on their loop (called there)."""
    for job, result, error in outcomes:
        if error is not None and job.on_failure is not None:
            job.on_failure()
        if job.trace is not None:
            job.trace.finish(error)
        if job.future.done():
            continue
        if error is not None:
            job.future.set_exception(error)
            # Seen here: a caller who gave up waiting (or never waited) has nobody to tell,
            # and asyncio would otherwise log the error as never retrieved.
            job.future.exception()
            logger.debug("write failed: %s", error)
        else:
            job.future.set_result(result)


class SQLiteRunner:
    """A writer thread with group commit and a reader pool, on one SQLite file."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: Synchronous,
        busy_timeout_ms: int,
        checkpoints: Checkpoints = "store",
    ) -> None:
        self._path = path
        self.synchronous = synchronous
        self.checkpoints = checkpoints
        self._busy_timeout = busy_timeout_ms / 1000
        self._connect: Callable[[], sqlite3.Connection] = partial(
            _connect_sqlite, path, synchronous, busy_timeout_ms, checkpoints
        )
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._reader_connections: list[sqlite3.Connection] = []
        self._reader_local = threading.local()
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="statestore-reader")
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="statestore-checkpoint")
        self._checkpointing = threading.Event()
        self._checkpoint_connection: sqlite3.Connection | None = None
        with database_errors("open"):  # fail here, in the caller, if the file is unusable
            writer_connection = self._connect()
        self._writer = threading.Thread(
            target=self._write_loop,
            args=(writer_connection,),
            name="statestore-writer",
            daemon=True,
        )
        self._writer.start()

    # -- reads --------------------------------------------------------------------------

    def _reader_tx(self) -> SQLiteTx:
        tx: SQLiteTx | None = getattr(self._reader_local, "tx", None)
        if tx is None:
            connection = self._connect()
            self._reader_connections.append(connection)
            tx = self._reader_local.tx = SQLiteTx(connection)
        return tx

    def _read_now(self, operation: str, body: Body[ResultT]) -> ResultT:
        with database_errors(operation):
            tx = self._reader_tx()
            connection = tx.connection
            connection.execute("BEGIN")
            try:
                result = body(tx)
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result

    async def read(self, operation: str, body: Body[ResultT], *, key: str | None = None) -> ResultT:
        loop = asyncio.get_running_loop()
        reading = loop.run_in_executor(self._readers, self._read_now, operation, body)
        if _telemetry.ENABLED:
            return await _telemetry.traced(operation, key, "sqlite", reading)
        return await reading

    # -- writes -------------------------------------------------------------------------

    def _job(
        self, operation: str, busy_timeout: float | None, key: str | None, **work: Any
    ) -> _Job:
        wait = self._busy_timeout if busy_timeout is None else busy_timeout
        job = _Job(operation, asyncio.get_running_loop(), time.monotonic() + wait, **work)
        if _telemetry.ENABLED:
            job.trace = _telemetry.start(operation, key, "sqlite")
            _telemetry.queued("sqlite", 1)
        return job

    def submit(
        self,
        operation: str,
        body: Body[ResultT],
        *,
        key: str | None = None,
        busy_timeout: float | None = None,
        rerun: bool = True,
    ) -> asyncio.Future[ResultT]:
        # One queue, one thread: every write runs in submission order, whatever its key.
        # Nothing is ever run twice here (a busy database fails the job instead).
        job = self._job(operation, busy_timeout, key, body=body)
        self._jobs.put(job)
        return job.future

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
        job = self._job(
            operation,
            busy_timeout,
            key,
            batch_body=batch_body,
            item=item,
            batch_key=key,
            on_failure=on_failure,
        )
        self._jobs.put(job)
        return job.future

    def _write_loop(self, connection: sqlite3.Connection) -> None:
        # SQLite's automatic checkpoint runs inside a COMMIT and stalls every save of that
        # batch while it copies and syncs pages (p99 latency doubled at NORMAL, and went
        # past 100 ms at FULL, in benchmarks/bench_sqlite.py). A passive checkpoint does not
        # block writers, so it runs in a thread of its own while the writer goes on.
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        tx = SQLiteTx(connection)
        carried: Any = None
        transactions = 0
        try:
            while True:
                job = carried if carried is not None else self._jobs.get()
                carried = None
                if job is _STOP:
                    return
                batch = [job]
                if job.batch_body is not None:
                    keys = {job.batch_key}
                    while len(batch) < MAX_BATCH:
                        try:
                            following = self._jobs.get_nowait()
                        except queue.Empty:
                            break
                        joinable = following is not _STOP and following.batch_body is job.batch_body
                        if not joinable or following.batch_key in keys:
                            carried = following
                            break
                        batch.append(following)
                        keys.add(following.batch_key)
                if _telemetry.ENABLED:
                    _telemetry.queued("sqlite", -len(batch))
                self._commit(tx, batch)
                transactions += 1
                if (
                    transactions >= CHECKPOINT_EVERY
                    and self.checkpoints == "store"
                    and not self._checkpointing.is_set()
                ):
                    self._checkpointing.set()
                    self._checkpointer.submit(self._checkpoint)
                    transactions = 0
        finally:
            connection.close()

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file without waiting for readers or writers."""
        try:
            if self._checkpoint_connection is None:
                self._checkpoint_connection = self._connect()
            self._checkpoint_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            logger.exception("WAL checkpoint failed; the next one will retry")
        finally:
            self._checkpointing.clear()

    def _commit(self, tx: SQLiteTx, batch: list[_Job]) -> None:
        while batch:
            try:
                results = self._transaction(tx, batch)
            except BaseException as error:
                busy = isinstance(error, DatabaseBusyError)
                if len(batch) > 1 and not busy and _one_save_could_cause(error):
                    for job in batch:  # find the failing save: every other one commits alone
                        self._commit(tx, [job])
                    return
                if not busy:
                    self._resolve([(job, None, error) for job in batch])
                    return
                # Another process holds the lock: the jobs out of time fail, the rest try
                # again with the time they have left. SQLite's busy handler sleeps in steps,
                # so it may give up a little before a deadline: a job that close to its own
                # has no time left to wait either.
                soon = time.monotonic() + _EXPIRY_SLACK
                expired = [job for job in batch if job.deadline <= soon] or batch[:1]
                self._resolve([(job, None, error) for job in expired])
                batch = [job for job in batch if job not in expired]
            else:
                self._resolve(
                    [(job, result, None) for job, result in zip(batch, results, strict=True)]
                )
                return

    @staticmethod
    def _resolve(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting
                loop.call_soon_threadsafe(_settle, settled)

    def _transaction(self, tx: SQLiteTx, batch: list[_Job]) -> list[Any]:
        started, changes = time.monotonic(), tx.connection.total_changes
        failed = True
        try:
            results = self._transaction_now(tx, batch)
            failed = False
            return results
        finally:
            try:
                rows: int | None = tx.connection.total_changes - changes
            except sqlite3.Error:  # the connection is gone: the count is unknown
                rows = None
            traces = [job.trace for job in batch]
            _telemetry.transaction_done(
                "sqlite", batch[0].operation, traces, started, rows, failed=failed
            )

    def _transaction_now(self, tx: SQLiteTx, batch: list[_Job]) -> list[Any]:
        connection = tx.connection
        with database_errors(batch[0].operation):
            try:
                _begin_immediate(connection, min(job.deadline for job in batch))
                first = batch[0]
                tx.loop = first.loop
                if first.batch_body is not None:
                    first.batch_body(tx, [job.item for job in batch])
                    results: list[Any] = [None] * len(batch)
                else:
                    assert first.body is not None
                    results = [first.body(tx)]
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        return results

    async def compact(self) -> tuple[int, int]:
        return await asyncio.to_thread(self._compact)

    def _compact(self) -> tuple[int, int]:
        before = self._size()
        with database_errors("compact"):
            connection = self._connect()
            try:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                connection.execute("VACUUM")
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                connection.close()
        return before, self._size()

    def _size(self) -> int:
        """The database file's bytes plus its WAL's."""
        return sum(
            os.path.getsize(file)
            for file in (self._path, self._path + "-wal")
            if os.path.exists(file)
        )

    async def close(self) -> None:
        self._jobs.put(_STOP)
        await asyncio.to_thread(self._writer.join)
        await asyncio.to_thread(self._readers.shutdown, True)
        self._checkpointer.submit(self._checkpoint)  # leave the WAL small
        await asyncio.to_thread(self._checkpointer.shutdown, True)
        for connection in self._reader_connections:
            connection.close()
        if self._checkpoint_connection is not None:
            self._checkpoint_connection.close()


_shared_runners: dict[str, tuple[SQLiteRunner, int]] = {}
_shared_runners_lock = threading.Lock()


def acquire_sqlite_runner(
    path: str, *, synchronous: Synchronous, busy_timeout_ms: int, checkpoints: Checkpoints
) -> SQLiteRunner:
    """Return the process's runner for this SQLite file, starting it for the first user.

    Every store in a process on the same file shares one writer, so their writes queue in
    one place, in call order, instead of contending for SQLite's lock. Each store keeps its
    own busy timeout (it is per write); the ``synchronous`` level and who checkpoints
    belong to the writer, so a second store must ask for what the first one has.

    Raises:
        InvalidArgumentError: The file is open in this process at another level, or with
            the other ``checkpoints``.
    """
    key = os.path.realpath(path)
    with _shared_runners_lock:
        runner, users = _shared_runners.get(key, (None, 0))
        if runner is None:
            runner = SQLiteRunner(
                path,
                synchronous=synchronous,
                busy_timeout_ms=busy_timeout_ms,
                checkpoints=checkpoints,
            )
        elif runner.checkpoints != checkpoints:
            raise InvalidArgumentError(
                "checkpoints",
                f"{path!r} is open in this process with checkpoints={runner.checkpoints!r}; "
                "every store on one file shares one writer: open it so too",
            )
        elif runner.synchronous != synchronous:
            raise InvalidArgumentError(
                "synchronous",
                f"{path!r} is open in this process with synchronous={runner.synchronous!r}; "
                "every store on one file shares one writer: open it at that level too",
            )
        _shared_runners[key] = (runner, users + 1)
        return runner


async def release_sqlite_runner(runner: SQLiteRunner) -> None:
    """Give back a runner from :func:`acquire_sqlite_runner`: the last user stops it.

    Either way, every write submitted before this call has finished when it returns.
    """
    with _shared_runners_lock:
        key = next(k for k, (shared, _) in _shared_runners.items() if shared is runner)
        _, users = _shared_runners[key]
        if users > 1:
            _shared_runners[key] = (runner, users - 1)
        else:
            del _shared_runners[key]
    if users > 1:
        await runner.submit("close", _nothing)  # writes run in order: a barrier
    else:
        await runner.close()


def _nothing(tx: Tx) -> None:
    return None
