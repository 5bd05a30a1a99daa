"""A blocking face on :class:`~statestore.StateStore`, for code with no event loop of its own.

Django and Flask views, Celery tasks and scripts call :class:`SyncStateStore`: each method
runs the store's own coroutine on an event loop in a thread the store keeps, and returns
when it is done, so a save returns after its commit. One store may be shared by any number
of threads; their calls run concurrently on that loop, with every guarantee of the async
store (a save captures the session when called, saves of one session commit in call
order, saves called together share a transaction).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack, overload

from pydantic import BaseModel
from sqlalchemy import URL

from statestore import filestore
from statestore._database import SessionUpdate
from statestore._engine import POOL_SIZE, Checkpoints, Synchronous
from statestore._listing import ListingFilters
from statestore.errors import ReentrantWriteError, StoreClosedError
from statestore.models import (
    AgentResponse,
    SearchHit,
    Session,
    SessionSummary,
    SessionTail,
    UserMessage,
)
from statestore.prune import PruneConfig, PruneThrottle
from statestore.stats import StoreStats
from statestore.store import StateStore

__all__ = ["SyncStateStore"]

ResultT = TypeVar("ResultT")
ModelT = TypeVar("ModelT", bound=BaseModel)


class SyncStateStore:
    """:class:`~statestore.StateStore`'s methods, blocking, usable from any thread.

    Open one with :meth:`open` and close it with :meth:`close` (or use ``with``). Every
    method is the async store's, with the same arguments, results and errors; the
    callables it is given (``update_session_with``'s ``fn``, an import's ``progress``) run
    on the store's thread, and must not call this store.
    """

    def __init__(
        self, store: StateStore, loop: asyncio.AbstractEventLoop, thread: threading.Thread
    ):
        self._store = store
        self._loop = loop
        self._thread = thread
        self._closed = False
        self._closing = threading.Lock()
        self._stopped = threading.Event()
        self._calls: set[concurrent.futures.Future[Any]] = set()
        """Calls waiting for their result: close() ends any the stopped loop left behind."""

    @classmethod
    def open(
        cls,
        target: str | os.PathLike[str] | URL,
        *,
        migrate: bool = True,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 30.0,
        pool_size: int = POOL_SIZE,
        checkpoints: Checkpoints = "store",
    ) -> SyncStateStore:
        """Open a store as :meth:`StateStore.open` does, on a thread of its own.

        Raises:
            The errors of :meth:`StateStore.open`; no thread is left running.
        """
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="statestore-sync", daemon=True)
        thread.start()
        opening = StateStore.open(
            target,
            migrate=migrate,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            pool_size=pool_size,
            checkpoints=checkpoints,
        )
        try:
            store = asyncio.run_coroutine_threadsafe(_awaited(opening), loop).result()
        except BaseException:
            _stop(loop, thread)
            raise
        return cls(store, loop, thread)

    def _refuse_own_thread(self, done: str, why: str) -> None:
        if threading.current_thread() is self._thread:
            raise ReentrantWriteError(
                f"a SyncStateStore was {done} from its own thread (inside "
                f"update_session_with's fn or a progress callback): {why}"
            )

    def _run(self, work: Callable[[], Awaitable[ResultT]]) -> ResultT:
        """Run ``work()`` on the store's loop and wait for its result."""
        self._refuse_own_thread("called", "that call would wait for itself forever")
        with self._closing:
            if self._closed:
                raise StoreClosedError("the store is closed")
            call = asyncio.run_coroutine_threadsafe(_called(work), self._loop)
            self._calls.add(call)
        try:
            return call.result()
        except concurrent.futures.CancelledError:
            raise StoreClosedError("the store was closed while this call waited") from None
        finally:
            self._calls.discard(call)

    def close(self) -> None:
        """Finish queued writes and background prunes, release every connection, and stop
        the store's thread. Idempotent; a call still waiting (a read, say) then raises
        :class:`StoreClosedError`.

        Raises:
            ReentrantWriteError: Called from the store's own thread (inside
                ``update_session_with``'s fn or a progress callback).
        """
        self._refuse_own_thread("closed", "closing waits for that very call")
        with self._closing:
            closing_here = not self._closed
            self._closed = True  # no call starts from here on
        if not closing_here:
            self._stopped.wait()  # another thread is closing: return once it has
            return
        try:
            asyncio.run_coroutine_threadsafe(self._store.close(), self._loop).result()
        finally:
            _stop(self._loop, self._thread)
            for call in list(self._calls):
                call.cancel()
            self._stopped.set()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- sessions -----------------------------------------------------------------------

    def save_session(self, session: Session) -> None:
        """:meth:`StateStore.save_session`; returns after the commit."""
        self._run(lambda: self._store.save_session(session))

    def update_session(self, session: Session) -> None:
        """Same as :meth:`save_session`."""
        self.save_session(session)

    def append_to_session(
        self,
        session_id: str,
        *,
        user_messages: Sequence[UserMessage] = (),
        agent_responses: Sequence[AgentResponse] = (),
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """:meth:`StateStore.append_to_session`."""
        self._run(
            lambda: self._store.append_to_session(
                session_id,
                user_messages=user_messages,
                agent_responses=agent_responses,
                metadata=metadata,
            )
        )

    def load_session(self, session_id: str) -> Session | None:
        """:meth:`StateStore.load_session`."""
        return self._run(lambda: self._store.load_session(session_id))

    def load_tail(self, session_id: str, count: int) -> SessionTail | None:
        """:meth:`StateStore.load_tail`."""
        return self._run(lambda: self._store.load_tail(session_id, count))

    def list_sessions(
        self,
        *,
        limit: int | None = None,
        after: SessionSummary | None = None,
        **filters: Unpack[ListingFilters],
    ) -> list[SessionSummary]:
        """:meth:`StateStore.list_sessions`."""
        return self._run(lambda: self._store.list_sessions(limit=limit, after=after, **filters))

    def iter_sessions(
        self, *, page_size: int = 500, **filters: Unpack[ListingFilters]
    ) -> Iterator[SessionSummary]:
        """:meth:`StateStore.iter_sessions`, as a plain iterator (one page read at a time)."""
        pages = self._store.iter_sessions(page_size=page_size, **filters)
        try:
            while True:
                try:
                    yield self._run(lambda: _next(pages))
                except StopAsyncIteration:
                    return
        finally:
            # At interpreter exit the store's (daemon) thread is frozen: nothing to close.
            if not self._closed and not sys.is_finalizing():
                self._run(pages.aclose)

    def fork_session(
        self, session_id: str, *, up_to: int | None = None, new_id: str | None = None
    ) -> Session:
        """:meth:`StateStore.fork_session`."""
        return self._run(lambda: self._store.fork_session(session_id, up_to=up_to, new_id=new_id))

    def search_messages(
        self,
        query: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        limit: int = 20,
        after: SearchHit | None = None,
    ) -> list[SearchHit]:
        """:meth:`StateStore.search_messages`."""
        return self._run(
            lambda: self._store.search_messages(
                query, user_id=user_id, session_id=session_id, limit=limit, after=after
            )
        )

    def rebuild_search_index(self) -> int:
        """:meth:`StateStore.rebuild_search_index`."""
        return self._run(self._store.rebuild_search_index)

    def delete_session(self, session_id: str) -> bool:
        """:meth:`StateStore.delete_session`."""
        return self._run(lambda: self._store.delete_session(session_id))

    def get_or_create_session(self, user_id: str, session_id: str | None = None) -> Session:
        """:meth:`StateStore.get_or_create_session`."""
        return self._run(lambda: self._store.get_or_create_session(user_id, session_id))

    def update_session_with(self, session_id: str, fn: SessionUpdate) -> Session | None:
        """:meth:`StateStore.update_session_with`; ``fn`` runs on the store's thread."""
        return self._run(lambda: self._store.update_session_with(session_id, fn))

    def delete_user(self, user_id: str) -> int:
        """:meth:`StateStore.delete_user`."""
        return self._run(lambda: self._store.delete_user(user_id))

    def prune_sessions(self, config: PruneConfig) -> int:
        """:meth:`StateStore.prune_sessions`."""
        return self._run(lambda: self._store.prune_sessions(config))

    def prunable_sessions(self, config: PruneConfig) -> list[SessionSummary]:
        """:meth:`StateStore.prunable_sessions`."""
        return self._run(lambda: self._store.prunable_sessions(config))

    def save_session_with_prune(
        self, session: Session, config: PruneConfig, *, throttle: PruneThrottle | None = None
    ) -> None:
        """:meth:`StateStore.save_session_with_prune`: returns after the save; the prune
        goes on in the store's thread (:meth:`close` waits for it)."""
        self._run(lambda: self._store.save_session_with_prune(session, config, throttle=throttle))

    # -- documents ----------------------------------------------------------------------

    def save_markdown(self, category: str, name: str, content: str) -> None:
        """:meth:`StateStore.save_markdown`."""
        self._run(lambda: self._store.save_markdown(category, name, content))

    def load_markdown(self, category: str, name: str) -> str | None:
        """:meth:`StateStore.load_markdown`."""
        return self._run(lambda: self._store.load_markdown(category, name))

    def save_json(self, category: str, name: str, data: Any) -> None:
        """:meth:`StateStore.save_json`."""
        self._run(lambda: self._store.save_json(category, name, data))

    @overload
    def load_json(self, category: str, name: str) -> Any: ...

    @overload
    def load_json(self, category: str, name: str, model: type[ModelT]) -> ModelT | None: ...

    def load_json(self, category: str, name: str, model: type[BaseModel] | None = None) -> Any:
        """:meth:`StateStore.load_json`."""
        if model is None:
            return self._run(lambda: self._store.load_json(category, name))
        return self._run(lambda: self._store.load_json(category, name, model))

    def list_category(self, category: str) -> list[str]:
        """:meth:`StateStore.list_category`."""
        return self._run(lambda: self._store.list_category(category))

    def list_categories(self) -> list[str]:
        """:meth:`StateStore.list_categories`."""
        return self._run(self._store.list_categories)

    def delete_file(self, category: str, name: str) -> bool:
        """:meth:`StateStore.delete_file`."""
        return self._run(lambda: self._store.delete_file(category, name))

    # -- moving data in and out, upkeep ---------------------------------------------------

    def import_directory(
        self,
        directory: str | os.PathLike[str],
        *,
        replace_newer: bool = False,
        progress: filestore.Progress | None = None,
        workers: int = 0,
    ) -> filestore.ImportReport:
        """:meth:`StateStore.import_directory`; ``progress`` is called on the store's thread."""
        return self._run(
            lambda: self._store.import_directory(
                directory, replace_newer=replace_newer, progress=progress, workers=workers
            )
        )

    def export_directory(
        self,
        directory: str | os.PathLike[str],
        *,
        user_id: str | None = None,
        overwrite: bool = False,
        progress: filestore.Progress | None = None,
    ) -> filestore.ExportReport:
        """:meth:`StateStore.export_directory`; ``progress`` is called on the store's thread."""
        return self._run(
            lambda: self._store.export_directory(
                directory, user_id=user_id, overwrite=overwrite, progress=progress
            )
        )

    def stats(self, *, days: int = 7) -> StoreStats:
        """:meth:`StateStore.stats`."""
        return self._run(lambda: self._store.stats(days=days))

    def compact(self) -> tuple[int, int]:
        """:meth:`StateStore.compact`."""
        return self._run(self._store.compact)


async def _awaited(work: Awaitable[ResultT]) -> ResultT:
    return await work


async def _called(work: Callable[[], Awaitable[ResultT]]) -> ResultT:
    # Called on the store's loop: a save is captured here, while its caller waits.
    return await work()


async def _next(pages: AsyncGenerator[SessionSummary, None]) -> SessionSummary:
    return await pages.__anext__()


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Stop the store's loop and thread, then finish the loop here (its executor's threads
    joined, as ``asyncio.run`` does)."""
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
