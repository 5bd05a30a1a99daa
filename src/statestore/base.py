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
from typing import Self, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from statestore import codec, queries
from statestore.engine import Synchronous, prepare_engine
from statestore.errors import InvalidDataError, StateStoreError, StoreClosedError
from statestore.models import Session, StoredState, edit_count
from statestore.runner import (
    AlchemyRunner,
    Runner,
    SQLiteRunner,
    acquire_sqlite_runner,
    release_sqlite_runner,
)
from statestore.tx import Tx

__all__ = ["StoreBase"]

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
        self._owns_engine = False
        self._closed = False
        self._prunes: set[asyncio.Task[None]] = set()
        self._runner: Runner
        if engine.dialect.name == "sqlite":
            path = engine.url.database
            if not path or path == ":memory:" or "mode=memory" in path:
                raise InvalidDataError(
                    "target", "statestore needs a SQLite file, not an in-memory database"
                )
            self._runner = acquire_sqlite_runner(
                path, synchronous=synchronous, busy_timeout_ms=int(busy_timeout * 1000)
            )
            self._time = codec.SQLITE_TIME
        else:
            self._runner = AlchemyRunner(engine)
            self._time = codec.POSTGRESQL_TIME

    @property
    def engine(self) -> AsyncEngine:
        """The engine this store runs on."""
        return self._engine

    async def close(self) -> None:
        """Finish queued writes and background prunes, then release every connection.

        Idempotent. A store that opened its own engine disposes of it.
        """
        if self._closed:
            return
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
            raise StateStoreError(
                f"{operation} called from inside update_session_with's fn, which holds this "
                "database's write transaction: change the session passed to fn instead"
            )

    async def _write(self, operation: str, body: Callable[[Tx], ResultT]) -> ResultT:
        self._check_writable(operation)
        return await self._runner.write(operation, body)

    def _save_job(self, session: Session) -> tuple[queries.SaveJob, Callable[[], None]]:
        """Check a session and prepare its save; return it and what to do once committed.

        Only the appended rows are checked and turned into rows when the session's stored
        state says nothing else changed; the writer still confirms that state's token.
        """
        token = _tokens.getrandbits(63)
        edits = edit_count()
        row = codec.session_row(session, self._time, token)
        messages, responses = session.user_messages, session.agent_responses
        stored = session._stored
        if stored is not None and stored.appended_only(session):
            expected: int | None = stored.token
            message_start, response_start = stored.message_count, stored.response_count
        else:
            expected, message_start, response_start = None, 0, 0
        job = queries.SaveJob(
            session_id=session.id,
            session_row=row,
            expected_token=expected,
            message_rows=codec.message_rows(
                session.id, messages[message_start:], self._time, message_start
            ),
            response_rows=codec.response_rows(
                session.id, responses[response_start:], self._time, response_start
            ),
            user_messages=messages,
            agent_responses=responses,
        )
        saved = StoredState.of(token, session, edits)

        def remember() -> None:
            session._stored = saved

        return job, remember
