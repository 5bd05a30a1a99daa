"""What every store is built on: its runner, its lifecycle, and one way to read and write.

:class:`StoreBase` opens nothing itself; :class:`statestore.StateStore` is the public class.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import random
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from statestore import _ops, _rows
from statestore._engine import Synchronous, prepare_engine
from statestore._runner import (
    AlchemyRunner,
    Runner,
    SQLiteRunner,
    acquire_sqlite_runner,
    release_sqlite_runner,
)
from statestore._tracking import RowLog, StoredState
from statestore._tx import Tx
from statestore.errors import InvalidArgumentError, ReentrantWriteError, StoreClosedError
from statestore.models import Session

__all__ = ["StoreBase", "forget_unless_stored"]

ResultT = TypeVar("ResultT")


# State tokens only need to differ from each other; a PRNG seeded from the OS (again in
# every forked child, so that no two processes share a sequence) is 100 times cheaper than
# a system call per save.
_tokens = random.Random()
os.register_at_fork(after_in_child=_tokens.seed)

# The runner whose write transaction an update_session_with fn is running inside: stores
# on one SQLite file share a runner, so a write through any of them would wait forever.
updating_runner: contextvars.ContextVar[Runner | None] = contextvars.ContextVar(
    "statestore_updating", default=None
)


class StoreBase:
    """A store's runner and lifecycle (see :class:`statestore.StateStore` for the API)."""

    def __init__(
        self, engine: AsyncEngine, *, synchronous: Synchronous = "FULL", busy_timeout: float = 30.0
    ) -> None:
        prepare_engine(engine, synchronous=synchronous, busy_timeout_ms=int(busy_timeout * 1000))
        self._engine = engine
        self._busy_timeout = busy_timeout
        self._owns_engine = False
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self._prunes: set[asyncio.Task[None]] = set()
        self._runner: Runner
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise InvalidArgumentError(
                "engine", f"statestore runs on SQLite and PostgreSQL, not {engine.dialect.name}"
            )
        if engine.dialect.name == "sqlite":
            path = engine.url.database
            if not path or path == ":memory:" or "mode=memory" in path:
                raise InvalidArgumentError(
                    "target", "statestore needs a SQLite file, not an in-memory database"
                )
            self._runner = acquire_sqlite_runner(
                path, synchronous=synchronous, busy_timeout_ms=int(busy_timeout * 1000)
            )
            self._time = _rows.SQLITE_TIME
        else:
            self._runner = AlchemyRunner(engine)
            self._time = _rows.POSTGRESQL_TIME

    @property
    def engine(self) -> AsyncEngine:
        """The engine this store runs on."""
        return self._engine

    async def close(self) -> None:
        """Finish queued writes and background prunes, then release every connection.

        Idempotent, and safe to cancel: the closing goes on, and a later ``close()`` waits
        for it to finish. A store that opened its own engine disposes of it.
        """
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_now())
        await asyncio.shield(self._closing)

    async def _close_now(self) -> None:
        while self._prunes:
            await asyncio.gather(*self._prunes, return_exceptions=True)
        self._closed = True
        if isinstance(self._runner, SQLiteRunner):
            await release_sqlite_runner(self._runner)
        else:
            await self._runner.close()
        if self._owns_engine:
            await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- plumbing -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("this StateStore is closed")

    async def _read(self, operation: str, body: Callable[[Tx], ResultT]) -> ResultT:
        self._check_open()
        return await self._runner.read(operation, body)

    def _check_writable(self, operation: str) -> None:
        self._check_open()
        if updating_runner.get() is self._runner:
            raise ReentrantWriteError(
                f"{operation} called from inside update_session_with's fn, which holds this "
                "database's write transaction: change the session passed to fn instead"
            )

    def _submit(
        self, operation: str, body: Callable[[Tx], ResultT], *, key: str | None = None
    ) -> asyncio.Future[ResultT]:
        self._check_writable(operation)
        return self._runner.submit(operation, body, key=key, busy_timeout=self._busy_timeout)

    async def _write(
        self, operation: str, body: Callable[[Tx], ResultT], *, key: str | None = None
    ) -> ResultT:
        """Run a write; ``key`` (a session id) keeps it in order with that session's saves."""
        return await asyncio.shield(self._submit(operation, body, key=key))

    def _save_job(self, session: Session) -> tuple[_ops.SaveJob, StoredState | None]:
        """Check a session and capture its save; return it and the session's new record.

        The job holds the whole state at this moment as rows: the appended rows are built
        now, and the stored prefix is the record's own rows, never the live objects. The
        append-only path is taken only when the record shows the prefix untouched; the
        writer still confirms the record's token, and rewrites whole from these rows if
        another save got there first. The session's record is set now to what this save
        will store, so a save queued behind it appends to it; if it fails, the record is
        dropped (see :func:`forget_unless_stored`).
        """
        token = _tokens.getrandbits(63)
        row = _rows.session_row(session, self._time, token)
        messages, responses = session.user_messages, session.agent_responses
        stored = session._stored
        if stored is not None and stored.appended_only(session):
            expected: int | None = stored.token
            stored_messages: RowLog | None = stored.message_rows
            stored_responses: RowLog | None = stored.response_rows
        else:
            expected, stored_messages, stored_responses = None, None, None
        message_start = stored_messages.count if stored_messages else 0
        response_start = stored_responses.count if stored_responses else 0
        message_rows = RowLog.extend(
            stored_messages,
            _rows.message_rows(session.id, messages[message_start:], self._time, message_start),
        )
        response_rows = RowLog.extend(
            stored_responses,
            _rows.response_rows(session.id, responses[response_start:], self._time, response_start),
        )
        job = _ops.SaveJob(
            session_id=session.id,
            session_row=row,
            expected_token=expected,
            message_rows=message_rows,
            response_rows=response_rows,
            message_start=message_start,
            response_start=response_start,
        )
        record = StoredState.of(token, session, message_rows, response_rows)
        session._stored = record
        return job, record


def forget_unless_stored(
    session: Session, record: StoredState | None, done: asyncio.Future[Any]
) -> None:
    """Drop ``session``'s record if the save that set it did not commit.

    Then the record never claims a state that is not stored, and the next save rewrites
    whole. A later save's record is left alone.
    """
    if (done.cancelled() or done.exception() is not None) and session._stored is record:
        session._stored = None
