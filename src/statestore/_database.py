"""The database a store runs on: its runner, lifecycle and guards, and one way to write.

:class:`statestore.StateStore` holds one :class:`Database` and asks it for every read and
write; :mod:`statestore.filestore` uses the same object for import and export. Each
public operation reads as: check the input, plan (build rows), one read or write here.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import random
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from statestore import _ops, _rows
from statestore._engine import Checkpoints, Synchronous, prepare_engine, sqlite_in_memory
from statestore._pool import PostgresRunner
from statestore._rows import TimeCodec
from statestore._runner import (
    Runner,
    SQLiteRunner,
    acquire_sqlite_runner,
    release_sqlite_runner,
)
from statestore._tracking import RowLog, StoredState
from statestore._tx import Tx
from statestore._validate import check_busy_timeout
from statestore.errors import (
    InvalidArgumentError,
    InvalidDataError,
    ReentrantWriteError,
    SessionNotFoundError,
    StoreClosedError,
)
from statestore.models import AgentResponse, Session, UserMessage

__all__ = ["Database", "Opening", "SessionUpdate", "acknowledged", "plan_save"]

ResultT = TypeVar("ResultT")


class _Closable(Protocol):
    async def close(self) -> None: ...


StoreT = TypeVar("StoreT", bound=_Closable)

SessionUpdate = Callable[[Session], Session | Awaitable[Session | None] | None]
"""What ``update_session_with`` applies: changes the session in place, or returns another."""

# State tokens only need to differ from each other; a PRNG seeded from the OS (again in
# every forked child, so that no two processes share a sequence) is 100 times cheaper than
# a system call per save.
_tokens = random.Random()
os.register_at_fork(after_in_child=_tokens.seed)


@dataclass(frozen=True)
class _Update:
    """An ``update_session_with`` whose fn is running: its runner and its transaction."""

    runner: Runner
    tx: Tx
    reading: asyncio.Lock
    """Taken by each read fn makes: on PostgreSQL they run on the update's connection."""


# The update whose fn is running here: stores on one SQLite file share a runner, so a
# write through any of them would wait forever; on PostgreSQL a read waiting for a second
# connection could wait forever on a pool the updates fill.
_updating: contextvars.ContextVar[_Update | None] = contextvars.ContextVar(
    "statestore_updating", default=None
)

Queued = Callable[[], "asyncio.Future[None]"]
"""A captured save: calling it gives the future of its queued write (queuing it if needed)."""


async def acknowledged(queued: Queued) -> None:
    """Wait for a captured save's commit.

    The save was queued when it was called (or is queued now, if it was called off the
    loop): a cancelled or timed-out waiter leaves it to commit or fail in its turn (the
    runner's futures can be cancelled without touching the work).
    """
    await queued()


class Database:
    """One store's view of its database: reads, writes, saves and their lifecycle.

    Args:
        engine: The async engine (SQLite file or PostgreSQL).
        synchronous: SQLite's ``synchronous`` level for the store's own connections.
        busy_timeout: Seconds a write may wait for another process's SQLite lock.
        checkpoints: Who checkpoints the SQLite WAL (see ``StateStore.open``).

    Raises:
        InvalidArgumentError: The engine is not SQLite or PostgreSQL, or is an in-memory
            SQLite database.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        synchronous: Synchronous,
        busy_timeout: float,
        checkpoints: Checkpoints = "store",
    ):
        wait_ms = int(check_busy_timeout(busy_timeout) * 1000)
        prepare_engine(
            engine, synchronous=synchronous, busy_timeout_ms=wait_ms, checkpoints=checkpoints
        )
        self.engine = engine
        self.owns_engine = False
        """Whether closing disposes of the engine (the store opened it)."""
        self._busy_timeout = busy_timeout
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._runner: Runner
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise InvalidArgumentError(
                "engine", f"statestore runs on SQLite and PostgreSQL, not {engine.dialect.name}"
            )
        if engine.dialect.name == "sqlite":
            path = engine.url.database
            if not path or sqlite_in_memory(engine.url):
                raise InvalidArgumentError(
                    "target", "statestore needs a SQLite file, not an in-memory database"
                )
            self._runner = acquire_sqlite_runner(
                path, synchronous=synchronous, busy_timeout_ms=wait_ms, checkpoints=checkpoints
            )
            self.time = _rows.SQLITE_TIME
        else:
            self._runner = PostgresRunner(engine)
            self.time = _rows.POSTGRESQL_TIME

    # -- lifecycle ----------------------------------------------------------------------

    async def close(self) -> None:
        """Finish background work and queued writes, then release every connection.

        Idempotent, and safe to cancel: the closing goes on, and a later call waits for it.

        Raises:
            ReentrantWriteError: Called inside an ``update_session_with`` fn on this
                database's writer: the close would wait for the update, which waits for fn.
        """
        updating = _updating.get()
        if self._closing is None and updating is not None and updating.runner is self._runner:
            raise ReentrantWriteError(
                "a store was closed inside update_session_with's fn on the same database: "
                "closing waits for the update's transaction, which waits for fn"
            )
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_now())
        await asyncio.shield(self._closing)

    async def _close_now(self) -> None:
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self._closed = True
        if isinstance(self._runner, SQLiteRunner):
            await release_sqlite_runner(self._runner)
        else:
            await self._runner.close()
        if self.owns_engine:
            await self.engine.dispose()

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in a task that :meth:`close` waits for."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def after_save(
        self, queued: Queued, then: Callable[[], Coroutine[Any, Any, None] | None]
    ) -> None:
        """Wait for a captured save's commit, then run ``then()`` (if it gives work) in the
        background."""
        await acknowledged(queued)
        work = then()
        if work is not None:
            self.in_background(work)

    def check_open(self) -> None:
        """Raise :class:`StoreClosedError` once the store is closed."""
        if self._closed:
            raise StoreClosedError("this StateStore is closed")

    def check_writable(self, operation: str) -> None:
        """Raise unless a write may start: the store is open and not inside an update's fn."""
        self.check_open()
        updating = _updating.get()
        if updating is not None and updating.runner is self._runner:
            raise ReentrantWriteError(
                f"{operation} called from inside update_session_with's fn, which holds this "
                "database's write transaction: change the session passed to fn instead"
            )

    # -- reads and writes ---------------------------------------------------------------

    async def read(
        self, operation: str, body: Callable[[Tx], ResultT], *, session_id: str | None = None
    ) -> ResultT:
        """Run ``body`` in one read transaction (one snapshot); ``session_id`` names the
        session it reads, if one (for telemetry).

        Inside an ``update_session_with`` fn on PostgreSQL, it runs in the update's own
        transaction instead (which sees the session as locked, before fn's changes).
        """
        self.check_open()
        updating = _updating.get()
        if (
            isinstance(self._runner, PostgresRunner)
            and updating
            and updating.runner is self._runner
        ):
            async with updating.reading:
                return await self._runner.read_in(updating.tx, operation, body)
        return await self._runner.read(operation, body, key=session_id)

    def submit(
        self,
        operation: str,
        body: Callable[[Tx], ResultT],
        *,
        key: str | None = None,
        rerun: bool = True,
    ) -> asyncio.Future[ResultT]:
        """Queue ``body`` in a write transaction now; ``key`` (a session id) keeps call order.

        ``rerun``: whether the body may run again after a failure that wrote nothing (a
        dead connection, a deadlock); not for bodies with effects outside the database.
        """
        self.check_writable(operation)
        return self._runner.submit(
            operation, body, key=key, busy_timeout=self._busy_timeout, rerun=rerun
        )

    async def write(
        self, operation: str, body: Callable[[Tx], ResultT], *, key: str | None = None
    ) -> ResultT:
        """Run ``body`` in a write transaction; a cancelled caller leaves it to finish."""
        return await self.submit(operation, body, key=key)

    def write_in_order(
        self, operation: str, body: Callable[[Tx], ResultT], *, key: str
    ) -> Awaitable[ResultT]:
        """Queue ``body`` now, in ``key``'s call order (as a save is queued); await the result."""
        return _outcome(_queued_now_or_later(partial(self.submit, operation, body, key=key)))

    async def compact(self) -> tuple[int, int]:
        """Give deleted rows' space back; return the bytes used before and after."""
        self.check_writable("compact")
        return await self._runner.compact()

    # -- saves ----------------------------------------------------------------------------

    def capture_save(self, session: Session) -> Queued:
        """Check and capture a save of ``session`` now; return what gives its future.

        On the event loop the save is queued at once. Called from another thread (for the
        store's loop to run the result), it is queued when the result starts running.
        """
        self.check_writable("save_session")
        job, record = plan_save(session, self.time)
        return _queued_now_or_later(
            partial(
                self._runner.submit_batched,
                "save_session",
                _ops.save_sessions,
                job,
                session.id,
                busy_timeout=self._busy_timeout,
                on_failure=partial(_forget, session, record),
            )
        )

    def append(
        self,
        session_id: str,
        messages: Sequence[UserMessage],
        responses: Sequence[AgentResponse],
        metadata: dict[str, Any] | None,
    ) -> Awaitable[None]:
        """Check and capture an append now, queued as :meth:`capture_save` queues a save;
        the result raises :class:`SessionNotFoundError` if the session is not stored."""
        self.check_writable("append_to_session")
        job = _ops.AppendJob(
            session_id=session_id,
            message_rows=_rows.message_rows(session_id, messages, self.time),
            response_rows=_rows.response_rows(session_id, responses, self.time),
            updated_at=self.time.bind(datetime.now(UTC)),
            state_token=_tokens.getrandbits(63),
            metadata=None if metadata is None else _rows.metadata_columns(metadata),
        )
        queued = _queued_now_or_later(
            partial(
                self._runner.submit,
                "append_to_session",
                partial(_ops.append_to_session, job=job),
                key=session_id,
                busy_timeout=self._busy_timeout,
            )
        )
        return _appended(queued, session_id)

    def get_or_create(self, session: Session) -> Awaitable[Session]:
        """Queue a save of a new session unless one with its id exists; the result is the
        stored one if so, else ``session``."""
        job, record = plan_save(session, self.time)

        def body(tx: Tx) -> Session | None:
            if _ops.insert_session_if_missing(tx, job.session_row):
                return None
            return _ops.load_session(tx, session.id)

        def queue() -> asyncio.Future[Session | None]:
            done = self.submit("get_or_create_session", body, key=session.id)
            done.add_done_callback(partial(_forget_unless_stored, session, record))
            return done

        return _stored_or(session, _queued_now_or_later(queue))

    def fork(self, source_id: str, new_id: str, up_to: int | None) -> Awaitable[Session]:
        """Queue a fork of ``source_id`` to ``new_id`` in the source's call order; the
        result is the fork as stored, or raises :class:`SessionNotFoundError`."""
        self.check_writable("fork_session")
        fork = partial(
            _ops.fork_session,
            source_id=source_id,
            new_id=new_id,
            up_to=up_to,
            forked_at=datetime.now(UTC),
            token=_tokens.getrandbits(63),
        )
        queued = _queued_now_or_later(partial(self.submit, "fork_session", fork, key=source_id))
        return _forked(queued, source_id)

    def update_with(self, session_id: str, fn: SessionUpdate) -> Awaitable[Session | None]:
        """Queue: load, apply ``fn`` on the loop, and save, in one write transaction (see
        the API). ``fn`` runs once at most: the transaction is never run again."""
        outcome: dict[str, Any] = {}

        async def apply(session: Session, tx: Tx) -> _ops.SaveJob:
            marker = _updating.set(_Update(self._runner, tx, asyncio.Lock()))
            try:
                returned = fn(session)
                if inspect.isawaitable(returned):
                    returned = await returned
            finally:
                _updating.reset(marker)
            if isinstance(returned, Session):
                session = returned
            if session.id != session_id:
                raise InvalidDataError("id", f"fn changed the session id to {session.id!r}")
            job, outcome["record"] = plan_save(session, self.time)
            outcome["session"] = session
            return job

        def body(tx: Tx) -> bool:
            session = _ops.load_session(tx, session_id, lock=True)
            if session is None:
                return False
            # The session exists and is locked: the save creates none, so it needs no
            # counter shard (and holds none while fn runs).
            _ops.save_sessions(tx, [tx.call_in_loop(apply(session, tx))], creates=False)
            return True

        def settled(done: asyncio.Future[bool]) -> None:
            if "session" in outcome:
                _forget_unless_stored(outcome["session"], outcome["record"], done)

        def queue() -> asyncio.Future[bool]:
            done = self.submit("update_session_with", body, key=session_id, rerun=False)
            done.add_done_callback(settled)
            return done

        return _updated(_queued_now_or_later(queue), outcome)


async def _outcome(queued: Callable[[], Awaitable[ResultT]]) -> ResultT:
    return await queued()


async def _stored_or(new: Session, queued: Callable[[], Awaitable[Session | None]]) -> Session:
    existing = await queued()
    return new if existing is None else existing


async def _updated(
    queued: Callable[[], Awaitable[bool]], outcome: dict[str, Any]
) -> Session | None:
    if not await queued():
        return None
    saved: Session = outcome["session"]
    return saved


async def _forked(queued: Callable[[], Awaitable[Session | None]], source_id: str) -> Session:
    fork = await queued()
    if fork is None:
        raise SessionNotFoundError(source_id)
    return fork


async def _appended(queued: Callable[[], Awaitable[bool]], session_id: str) -> None:
    if not await queued():
        raise SessionNotFoundError(session_id)


class Opening(Generic[StoreT]):
    """What ``StateStore.open`` returns: await it, or use it with ``async with``."""

    def __init__(self, opener: Callable[[], Coroutine[Any, Any, StoreT]]) -> None:
        self._opener = opener
        self._store: StoreT | None = None

    def __await__(self) -> Generator[Any, None, StoreT]:
        return self._opener().__await__()

    async def __aenter__(self) -> StoreT:
        self._store = await self._opener()
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._store is not None:
            await self._store.close()


def _queued_now_or_later(
    queue: Callable[[], asyncio.Future[ResultT]],
) -> Callable[[], asyncio.Future[ResultT]]:
    """Queue a write now if on the event loop, else when the result is first called."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return queue
    queued = queue()
    return lambda: queued


def plan_save(session: Session, time: TimeCodec) -> tuple[_ops.SaveJob, StoredState | None]:
    """Check a session and capture its save (rows in ``time``'s storage form); return it
    and the session's new record.

    The job holds the whole state at this moment as rows: the appended rows are built
    now, and the stored prefix is the record's own rows, never the live objects. The
    append-only path is taken only when the record shows the prefix untouched; the
    writer still confirms the record's token, and rewrites whole from these rows if
    another save got there first. The session's record is set now to what this save
    will store, so a save queued behind it appends to it; if it fails, the record is
    dropped (see :func:`_forget`).
    """
    token = _tokens.getrandbits(63)
    row = _rows.session_row(session, time, token)
    messages, responses = session.user_messages, session.agent_responses
    stored = session._stored
    identity = _rows.row_identity(row)
    if stored is not None and stored.appended_only(session, time):
        expected: int | None = stored.token
        stored_messages: RowLog | None = stored.message_rows
        stored_responses: RowLog | None = stored.response_rows
        narrow = stored.identity == identity
    else:
        expected, stored_messages, stored_responses = None, None, None
        narrow = False
    message_start = stored_messages.count if stored_messages else 0
    response_start = stored_responses.count if stored_responses else 0
    message_rows = RowLog.extend(
        stored_messages,
        _rows.message_rows(session.id, messages[message_start:], time, message_start),
    )
    response_rows = RowLog.extend(
        stored_responses,
        _rows.response_rows(session.id, responses[response_start:], time, response_start),
    )
    job = _ops.SaveJob(
        session_id=session.id,
        session_row=row,
        expected_token=expected,
        narrow_update=narrow,
        message_rows=message_rows,
        response_rows=response_rows,
        message_start=message_start,
        response_start=response_start,
    )
    record = StoredState.of(token, session, message_rows, response_rows, time, identity)
    session._stored = record
    return job, record


def _forget(session: Session, record: StoredState | None) -> None:
    """Drop ``session``'s record: the save that set it did not commit.

    Then the record never claims a state that is not stored, and the next save rewrites
    whole. A later save's record is left alone.
    """
    if session._stored is record:
        session._stored = None


def _forget_unless_stored(
    session: Session, record: StoredState | None, done: asyncio.Future[Any]
) -> None:
    """Drop ``session``'s record if the write ``done`` did not commit (see :func:`_forget`).

    (A write whose waiter gave up may still commit; dropping its record then only costs
    the next save a whole rewrite.)
    """
    if done.cancelled() or done.exception() is not None:
        _forget(session, record)
