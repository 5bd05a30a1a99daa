"""The repository: sessions and named documents in SQL, with the file store's contract."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

from pydantic import BaseModel
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from statestore import codec, filestore, queries
from statestore import migrate as migrations
from statestore.engine import Synchronous, create_engine, prepare_engine, resolve_url
from statestore.errors import InvalidDataError, StateStoreError, StoreClosedError
from statestore.models import Session, SessionSummary, SessionTail, StoredState, edit_count
from statestore.names import SESSIONS_CATEGORY, check_category, check_name
from statestore.prune import PruneConfig, PruneThrottle
from statestore.runner import (
    AlchemyRunner,
    Runner,
    SQLiteRunner,
    acquire_sqlite_runner,
    release_sqlite_runner,
)
from statestore.stats import StoreStats, read_stats
from statestore.tx import Tx

__all__ = ["StateStore"]

logger = logging.getLogger("statestore")

ModelT = TypeVar("ModelT", bound=BaseModel)
ResultT = TypeVar("ResultT")
SessionUpdate = Callable[[Session], Session | Awaitable[Session | None] | None]

PRUNE_BATCH = 1_000
"""Sessions deleted per prune transaction, so that saves interleave with a large prune."""

# State tokens only need to differ from each other; a PRNG seeded from the OS (again in
# every forked child, so that no two processes share a sequence) is 100 times cheaper than
# a system call per save.
_tokens = random.Random()
os.register_at_fork(after_in_child=_tokens.seed)

# The runner whose write transaction an update_session_with fn is running inside: stores
# on one SQLite file share a runner, so a write through any of them would wait forever.
_updating: contextvars.ContextVar[Runner | None] = contextvars.ContextVar(
    "statestore_updating", default=None
)


def _check_prune_config(config: object) -> None:
    if not isinstance(config, PruneConfig):
        raise InvalidDataError("config", f"must be a PruneConfig, not {config!r}")


class _Opening:
    """What :meth:`StateStore.open` returns: await it, or use it with ``async with``."""

    def __init__(self, opener: Callable[[], Coroutine[Any, Any, StateStore]]) -> None:
        self._opener = opener
        self._store: StateStore | None = None

    def __await__(self) -> Generator[Any, None, StateStore]:
        return self._opener().__await__()

    async def __aenter__(self) -> StateStore:
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


class StateStore:
    """Sessions and named documents kept in SQL tables.

    Open one with :meth:`open` (statestore creates and owns the engine), or wrap an
    ``AsyncEngine`` your application owns with ``StateStore(engine)``; either way call
    :meth:`close` (or use ``async with``) when done. Closing a wrapped engine's store does not
    dispose of the engine.

    Every write is one transaction. On SQLite, the writes of every store in the process on
    one file go through one writer thread that commits the saves queued together in one
    transaction (group commit), and reads run in their own threads; a write whose caller is
    cancelled still runs to its commit or rollback, so the write lock is never left held.

    Args:
        engine: An async SQLAlchemy engine on a SQLite file (aiosqlite) or PostgreSQL
            (asyncpg) whose database has statestore's schema (see :mod:`statestore.migrate`).
        synchronous: SQLite's ``synchronous`` level for the store's own connections.
        busy_timeout: Seconds a SQLite connection waits for another process's lock.

    Raises:
        InvalidDataError: The engine is on an in-memory SQLite database.
    """

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

    @classmethod
    def open(
        cls,
        target: str | os.PathLike[str] | URL,
        *,
        migrate: bool = True,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 30.0,
    ) -> _Opening:
        """Open a store on a SQLite file path or an async database URL.

        Use as ``store = await StateStore.open(...)`` (then ``await store.close()``) or as
        ``async with StateStore.open(...) as store:``.

        Args:
            target: A filesystem path (SQLite) or a URL such as
                ``"postgresql+asyncpg://host/db"``.
            migrate: Bring the schema to the newest revision first. With ``False`` the
                database must already be at it.
            synchronous: SQLite's ``synchronous`` level. ``"FULL"`` (the default) keeps
                every acknowledged save through a power loss; ``"NORMAL"`` is faster and
                keeps them through an application crash only.
            busy_timeout: Seconds a SQLite connection waits for another process's lock.

        Raises:
            InvalidDataError: ``target`` or an option is not valid.
            SchemaVersionError: With ``migrate=False``, the database is not at the newest
                revision; with either, it is at a revision newer than this statestore.
            DatabaseError: The database cannot be opened or migrated.
        """

        async def opener() -> StateStore:
            engine = create_engine(
                resolve_url(target),
                synchronous=synchronous,
                busy_timeout_ms=int(busy_timeout * 1000),
            )
            try:
                if migrate:
                    await migrations.upgrade(engine)
                else:
                    await migrations.check(engine)
                store = cls(engine, synchronous=synchronous, busy_timeout=busy_timeout)
            except BaseException:
                await engine.dispose()
                raise
            store._owns_engine = True
            return store

        return _Opening(opener)

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

    async def __aenter__(self) -> StateStore:
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
        if _updating.get() is self._runner:
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

    # -- sessions -----------------------------------------------------------------------

    async def save_session(self, session: Session) -> None:
        """Store ``session`` whole: loading it again returns exactly this state.

        A session that was loaded (or saved) through this store and since only had
        messages and responses appended writes just the session row and the new rows;
        anything else -- edits, removals, a copy whose stored state changed since it was
        loaded -- rewrites the session whole, so the last save wins, whole.

        Raises:
            InvalidNameError: The session id breaks the naming rules.
            InvalidDataError: A field cannot be stored (the error names it); nothing is written.
            DatabaseError: The database failed; nothing is written.
        """
        self._check_writable("save_session")
        job, remember = self._save_job(session)
        await self._runner.write_batched("save_session", queries.save_sessions, job, session.id)
        remember()

    async def update_session(self, session: Session) -> None:
        """Same as :meth:`save_session`."""
        await self.save_session(session)

    async def load_session(self, session_id: str) -> Session | None:
        """Return the stored session with this id, or ``None`` if there is none."""
        check_name(session_id, kind="session id")
        return await self._read(
            "load_session", partial(queries.load_session, session_id=session_id)
        )

    async def load_tail(self, session_id: str, count: int) -> SessionTail | None:
        """Return a session's last ``count`` messages and responses with their positions.

        Reads only those rows, however long the history: for building a prompt. The result
        is a :class:`SessionTail`, not a :class:`Session`, so it cannot be saved as one.
        """
        check_name(session_id, kind="session id")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise InvalidDataError("count", f"must be an int >= 0, not {count!r}")
        return await self._read(
            "load_tail", partial(queries.load_tail, session_id=session_id, count=count)
        )

    async def list_sessions(
        self,
        *,
        user_id: str | None = None,
        project_id: str | None = None,
        limit: int | None = None,
        after: SessionSummary | None = None,
        updated_before: datetime | None = None,
    ) -> list[SessionSummary]:
        """Return session summaries, most recently updated first (ties: higher id first).

        With no arguments, every session. Never reads messages.

        Args:
            user_id: Only this user's sessions.
            project_id: Only sessions of this project.
            limit: At most this many (a page).
            after: Only sessions listed after this summary: pass a page's last summary to
                get the next page.
            updated_before: Only sessions last updated before this instant.
        """
        conditions: list[str] = []
        params: dict[str, Any] = {}
        if user_id is not None:
            codec.check_text("user_id", user_id)
            conditions.append("user_id = :user_id")
            params["user_id"] = user_id
        if project_id is not None:
            codec.check_text("project_id", project_id)
            conditions.append("project_id = :project_id")
            params["project_id"] = project_id
        if after is not None:
            if not isinstance(after, SessionSummary):
                raise InvalidDataError("after", "must be a SessionSummary from a listing")
            conditions.append("(updated_at, id) < (:after_updated_at, :after_id)")
            params["after_updated_at"] = self._time.bind(after.updated_at)
            params["after_id"] = after.id
        if updated_before is not None:
            if not isinstance(updated_before, datetime) or updated_before.tzinfo is None:
                raise InvalidDataError("updated_before", "must be a timezone-aware datetime")
            conditions.append("updated_at < :updated_before")
            params["updated_before"] = self._time.bind(updated_before)
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 1
        ):
            raise InvalidDataError("limit", f"must be an int >= 1, not {limit!r}")
        return await self._read(
            "list_sessions",
            partial(queries.list_summaries, conditions=conditions, params=params, limit=limit),
        )

    async def iter_sessions(
        self,
        *,
        user_id: str | None = None,
        project_id: str | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[SessionSummary]:
        """Yield every matching summary, newest first, reading one page at a time.

        The same order and filters as :meth:`list_sessions`, holding at most ``page_size``
        summaries in memory however many sessions there are.
        """
        after: SessionSummary | None = None
        while True:
            page = await self.list_sessions(
                user_id=user_id, project_id=project_id, limit=page_size, after=after
            )
            for summary in page:
                yield summary
            if len(page) < page_size:
                return
            after = page[-1]

    async def delete_session(self, session_id: str) -> bool:
        """Delete a session with its messages and responses; return whether it existed."""
        check_name(session_id, kind="session id")
        return await self._write(
            "delete_session", partial(queries.delete_session, session_id=session_id)
        )

    async def get_or_create_session(self, user_id: str, session_id: str | None = None) -> Session:
        """Return the session with ``session_id``, creating and saving it when missing.

        With no ``session_id`` a new session with a fresh id is created. An existing session
        is returned as stored, whatever its ``user_id``. Atomic: racing callers get one session.
        """
        codec.check_text("user_id", user_id)
        if session_id is None:
            new_session = Session(user_id=user_id)
        else:
            new_session = Session(user_id=user_id, id=check_name(session_id, kind="session id"))
        job, remember = self._save_job(new_session)

        def body(tx: Tx) -> Session | None:
            if queries.insert_session_if_missing(tx, job.session_row):
                return None
            return queries.load_session(tx, new_session.id)

        existing = await self._write("get_or_create_session", body)
        if existing is not None:
            return existing
        remember()
        return new_session

    async def update_session_with(self, session_id: str, fn: SessionUpdate) -> Session | None:
        """Load a session, apply ``fn`` to it, and save it, all in one write transaction.

        ``fn`` (sync or async) changes the session in place or returns a replacement. It
        runs on the event loop while the store's write transaction is held, so it must not
        write through this store (reads are fine); keep it short. Concurrent calls on one
        session never lose each other's changes.

        Returns:
            The saved session, or ``None`` if no session has this id (``fn`` is not called).

        Raises:
            Exception: Whatever ``fn`` raises; nothing is saved then.
            InvalidDataError: ``fn`` left the session unstorable or changed its id.
        """
        check_name(session_id, kind="session id")
        if not callable(fn):
            raise InvalidDataError("fn", f"must be a function of the session, not {fn!r}")
        outcome: dict[str, Any] = {}

        async def apply(session: Session) -> queries.SaveJob:
            marker = _updating.set(self._runner)
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
            job, outcome["remember"] = self._save_job(session)
            outcome["session"] = session
            return job

        def body(tx: Tx) -> bool:
            session = queries.load_session(tx, session_id, lock=True)
            if session is None:
                return False
            queries.save_sessions(tx, [tx.call_in_loop(apply(session))])
            return True

        if not await self._write("update_session_with", body):
            return None
        outcome["remember"]()
        saved: Session = outcome["session"]
        return saved

    async def delete_user(self, user_id: str) -> int:
        """Delete every session of one user, with their messages and responses.

        One transaction: a privacy-law erasure request either happens whole or not at all.
        Documents are not touched (they belong to no user).

        Returns:
            How many sessions were deleted.
        """
        codec.check_text("user_id", user_id)
        return await self._write(
            "delete_user", partial(queries.delete_user_sessions, user_id=user_id)
        )

    async def prune_sessions(self, config: PruneConfig) -> int:
        """Delete old sessions and return how many were deleted.

        First every session not updated within ``config.ttl_hours``, then the least recently
        updated beyond ``config.max_sessions``. A rule set to 0 is off. When there is
        nothing to delete this costs two indexed lookups; otherwise sessions go in
        set-based batches of :data:`PRUNE_BATCH`, each its own transaction.
        """
        _check_prune_config(config)
        cutoff = datetime.now(UTC) - timedelta(hours=config.ttl_hours) if config.ttl_hours else None
        pending = await self._read(
            "prune_sessions",
            partial(queries.prune_pending, cutoff=cutoff, max_sessions=config.max_sessions),
        )
        if not pending:
            return 0
        deleted = 0
        if cutoff is not None:
            while True:
                removed = await self._write(
                    "prune_sessions",
                    partial(queries.delete_stale_sessions, cutoff=cutoff, batch=PRUNE_BATCH),
                )
                deleted += removed
                if removed < PRUNE_BATCH:
                    break
        if config.max_sessions:
            while True:
                removed = await self._write(
                    "prune_sessions",
                    partial(
                        queries.delete_excess_sessions,
                        max_sessions=config.max_sessions,
                        batch=PRUNE_BATCH,
                    ),
                )
                deleted += removed
                if removed < PRUNE_BATCH:
                    break
        return deleted

    async def save_session_with_prune(
        self,
        session: Session,
        config: PruneConfig,
        *,
        throttle: PruneThrottle | None = None,
    ) -> None:
        """Save ``session``, then prune in a background task the caller does not wait for.

        Prune errors are logged on the ``statestore`` logger. :meth:`close` waits for a
        prune still running.

        Args:
            session: The session to save.
            config: The prune rules.
            throttle: When given, prune only if ``throttle.should_prune()`` lets it through.
        """
        _check_prune_config(config)
        if throttle is not None and not isinstance(throttle, PruneThrottle):
            raise InvalidDataError("throttle", f"must be a PruneThrottle, not {throttle!r}")
        await self.save_session(session)
        if throttle is not None and not throttle.should_prune():
            return
        task = asyncio.create_task(self._prune_in_background(config))
        self._prunes.add(task)
        task.add_done_callback(self._prunes.discard)

    async def _prune_in_background(self, config: PruneConfig) -> None:
        try:
            deleted = await self.prune_sessions(config)
        except Exception:
            logger.exception("background prune failed")
            return
        if deleted:
            logger.info("pruned %d sessions", deleted)

    # -- documents ----------------------------------------------------------------------

    async def _save_document(self, category: str, name: str, kind: str, content: str) -> None:
        await self._write(
            "save_document",
            partial(
                queries.save_document,
                category=category,
                name=name,
                kind=kind,
                content=content,
                now=datetime.now(UTC),
            ),
        )

    async def _load_document(self, category: str, name: str, kind: str) -> str | None:
        return await self._read(
            "load_document",
            partial(queries.load_document, category=category, name=name, kind=kind),
        )

    async def save_markdown(self, category: str, name: str, content: str) -> None:
        """Store a markdown document, replacing any markdown document of that name."""
        check_category(category)
        check_name(name)
        codec.check_text("content", content)
        await self._save_document(category, name, "markdown", content)

    async def load_markdown(self, category: str, name: str) -> str | None:
        """Return a markdown document's text, or ``None`` if there is none."""
        check_category(category)
        check_name(name)
        return await self._load_document(category, name, "markdown")

    async def save_json(self, category: str, name: str, data: Any) -> None:
        """Store a JSON document: any JSON-able value or a pydantic model.

        In the ``sessions`` category the data is a session's JSON object and is saved as
        that session (its ``id``, if present, must equal ``name``).

        Raises:
            InvalidNameError: The category or name breaks the naming rules.
            InvalidDataError: ``data`` is not JSON-able (the error says where).
            pydantic.ValidationError: Session data that is not a valid session.
        """
        check_category(category)
        check_name(name)
        if category == SESSIONS_CATEGORY:
            await self.save_session(codec.session_from_document(name, data))
            return
        await self._save_document(category, name, "json", codec.dump_json_document("data", data))

    @overload
    async def load_json(self, category: str, name: str) -> Any: ...

    @overload
    async def load_json(self, category: str, name: str, model: type[ModelT]) -> ModelT | None: ...

    async def load_json(
        self, category: str, name: str, model: type[BaseModel] | None = None
    ) -> Any:
        """Return a JSON document parsed, or validated into ``model``; ``None`` if missing.

        In the ``sessions`` category this is the session's JSON object.
        """
        check_category(category)
        check_name(name)
        if category == SESSIONS_CATEGORY:
            session = await self.load_session(name)
            if session is None:
                return None
            dumped = session.model_dump(mode="json")
            return dumped if model is None else model.model_validate(dumped)
        text = await self._load_document(category, name, "json")
        if text is None:
            return None
        return json.loads(text) if model is None else model.model_validate_json(text)

    async def list_category(self, category: str) -> list[str]:
        """Return the sorted names of a category's markdown and JSON documents.

        Nested categories are separate: listing ``memory`` does not list ``memory/notes``.
        In the ``sessions`` category the JSON documents are the session ids.
        """
        check_category(category)

        def body(tx: Tx) -> list[str]:
            names = set(queries.list_document_names(tx, category))
            if category == SESSIONS_CATEGORY:
                names.update(queries.list_session_ids(tx))
            return sorted(names)

        return await self._read("list_category", body)

    async def list_categories(self) -> list[str]:
        """Return every category that holds a markdown or JSON document, sorted.

        ``sessions`` is listed only when it holds markdown documents.
        """
        return await self._read("list_categories", queries.list_categories)

    async def delete_file(self, category: str, name: str) -> bool:
        """Delete the JSON document of that name if present, else the markdown one.

        In the ``sessions`` category the JSON document is the session. Returns whether
        anything was deleted.
        """
        check_category(category)
        check_name(name)

        def body(tx: Tx) -> bool:
            if category == SESSIONS_CATEGORY:
                deleted_json = queries.delete_session(tx, name)
            else:
                deleted_json = queries.delete_document(tx, category, name, "json")
            return deleted_json or queries.delete_document(tx, category, name, "markdown")

        return await self._write("delete_file", body)

    # -- moving data in and out, upkeep ---------------------------------------------------

    async def import_directory(
        self, directory: str | os.PathLike[str], *, progress: filestore.Progress | None = None
    ) -> filestore.ImportReport:
        """Import a file store's directory: sessions, and documents of every category.

        ``sessions/<id>.json`` files become sessions with their messages and responses;
        every other ``<category>/<name>.md|.json`` (nested categories too) becomes a
        document. Idempotent: what is already stored exactly so is left alone, so
        importing a directory twice changes nothing. Files are imported
        :data:`~statestore.filestore.IMPORT_BATCH` to a transaction, so a crash leaves only
        whole sessions and a rerun finishes the job.

        A file that cannot be imported (not UTF-8, not JSON, not a valid session, a name
        the rules refuse, ...) is skipped and listed in the report with the reason;
        nothing else is skipped because of it. Leftover ``*.tmp`` files are counted.

        Args:
            directory: The file store's root folder.
            progress: Called with ``(files done, files in all)`` after each batch.

        Raises:
            InvalidDataError: ``directory`` is not a directory.
            DatabaseError: The database failed; batches committed before stay.
        """
        return await filestore.import_directory(self, Path(directory), progress)

    async def export_directory(
        self,
        directory: str | os.PathLike[str],
        *,
        user_id: str | None = None,
        overwrite: bool = False,
        progress: filestore.Progress | None = None,
    ) -> filestore.ExportReport:
        """Write the store out in the file store's layout and format, for a rollback.

        Sessions become ``sessions/<id>.json`` and documents ``<category>/<name>.md|.json``,
        as the file store wrote them (JSON indented by two spaces, its field order, UTC
        timestamps ending in ``Z``); each file is written to a temp file and renamed, and
        its modification time is the stored ``updated_at``. Each file is one saved state;
        stop writers first for a snapshot of the whole store.

        Args:
            directory: Where to write; created if missing.
            user_id: Only this user's sessions (and no documents).
            overwrite: Write into a directory that is not empty, replacing files of the
                same names and leaving the others.
            progress: Called with ``(items done, items in all)`` as it goes.

        Raises:
            InvalidDataError: ``directory`` is not empty (without ``overwrite``) or not a
                directory.
        """
        return await filestore.export_directory(
            self, Path(directory), user_id=user_id, overwrite=overwrite, progress=progress
        )

    async def stats(self, *, days: int = 7) -> StoreStats:
        """Return the store's headline numbers, read from the analytics views.

        Args:
            days: How many recent UTC days (today included) to report activity for.
        """
        if not isinstance(days, int) or isinstance(days, bool) or days < 1:
            raise InvalidDataError("days", f"must be an int >= 1, not {days!r}")
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        since = today - timedelta(days=days - 1)
        return await self._read("stats", partial(read_stats, since=since))

    async def compact(self) -> tuple[int, int]:
        """Give back the space that deleted sessions left, and return the size before and after.

        On SQLite: checkpoint the WAL into the database file, ``VACUUM``, and truncate the
        WAL; sizes are the database file plus its WAL. On PostgreSQL: ``VACUUM (FULL,
        ANALYZE)`` of statestore's tables; sizes are those tables with their indexes.
        Either way writers wait while it runs: run it after a large prune, off-peak.

        Returns:
            ``(bytes before, bytes after)``.
        """
        self._check_writable("compact")
        return await self._runner.compact()
