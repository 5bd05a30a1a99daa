"""The repository: sessions and named documents in SQL, with the file store's contract.

:class:`StateStore` is the one public class. It holds a :class:`~statestore._database.Database`
and each method reads as: check the input (:mod:`statestore._validate`), plan the rows
(:mod:`statestore._rows`), one read or write of an operation in :mod:`statestore._ops`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Awaitable, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack, overload

from pydantic import BaseModel
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from statestore import _documents, _ops, _search, filestore, prune
from statestore import migrate as migrations
from statestore._database import Database, Opening, SessionUpdate, acknowledged
from statestore._engine import POOL_SIZE, Checkpoints, Synchronous, create_engine, resolve_url
from statestore._listing import ListingFilters, session_filter
from statestore._validate import (
    MAX_COUNT,
    check_after,
    check_busy_timeout,
    check_count,
    check_fork,
    check_name,
    check_text,
    check_writable_name,
)
from statestore.errors import InvalidArgumentError
from statestore.models import (
    AgentResponse,
    SearchHit,
    Session,
    SessionSummary,
    SessionTail,
    UserMessage,
)
from statestore.prune import PruneConfig, PruneThrottle
from statestore.stats import StoreStats, first_day, read_stats

__all__ = ["MAX_COUNT", "SessionUpdate", "StateStore"]


ModelT = TypeVar("ModelT", bound=BaseModel)


class StateStore:
    """Sessions and named documents kept in SQL tables.

    Open one with :meth:`open` (statestore creates and owns the engine), or wrap an
    ``AsyncEngine`` your application owns with ``StateStore(engine)``; either way call
    :meth:`close` (or use ``async with``) when done. Closing a wrapped engine's store does not
    dispose of the engine.

    Every write is one transaction; saves queued together share one (group commit: on
    SQLite in one writer thread per file, on PostgreSQL on the pool). A write whose caller
    is cancelled still runs to its commit or rollback, so no lock is left held.

    Args:
        engine: An async SQLAlchemy engine on a SQLite file (aiosqlite) or PostgreSQL
            (asyncpg) whose database has statestore's schema (see :mod:`statestore.migrate`).
        synchronous, busy_timeout, checkpoints: As for :meth:`open`.

    Raises:
        InvalidArgumentError: The engine is not SQLite or PostgreSQL, or is in memory.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 30.0,
        checkpoints: Checkpoints = "store",
    ) -> None:
        self._db = Database(
            engine, synchronous=synchronous, busy_timeout=busy_timeout, checkpoints=checkpoints
        )

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
    ) -> Opening[StateStore]:
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
            busy_timeout: Seconds a SQLite write waits for another process's lock.
            pool_size: PostgreSQL connections the store keeps, and the most it opens
                (saves share transactions). Behind PgBouncer, add the URL query
                ``?statement_cache_size=0``.
            checkpoints: ``"store"`` (the default) copies the SQLite WAL into the database
                in a thread of its own; ``"external"`` never does, leaving it to a tool such
                as Litestream (see the README).

        Raises:
            InvalidArgumentError: ``target`` or an option is not valid.
            SchemaVersionError: With ``migrate=False``, the database is not at the newest
                revision; with either, it is at a revision newer than this statestore.
            DatabaseError: The database cannot be opened or migrated.
        """

        async def opener() -> StateStore:
            wait_ms = int(check_busy_timeout(busy_timeout) * 1000)
            engine = create_engine(
                resolve_url(target),
                synchronous=synchronous,
                busy_timeout_ms=wait_ms,
                pool_size=pool_size,
                checkpoints=checkpoints,
            )
            try:
                await (migrations.upgrade(engine) if migrate else migrations.check(engine))
                store = cls(
                    engine,
                    synchronous=synchronous,
                    busy_timeout=busy_timeout,
                    checkpoints=checkpoints,
                )
            except BaseException:
                await engine.dispose()
                raise
            store._db.owns_engine = True
            return store

        return Opening(opener)

    @property
    def engine(self) -> AsyncEngine:
        """The engine this store runs on."""
        return self._db.engine

    async def close(self) -> None:
        """Finish queued writes and background prunes, then release every connection.

        Idempotent, and safe to cancel: the closing goes on, and a later ``close()`` waits
        for it to finish. A store that opened its own engine disposes of it.
        """
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- sessions -----------------------------------------------------------------------

    def save_session(self, session: Session) -> Awaitable[None]:
        """Store ``session`` whole: loading it again returns exactly this state.

        The state is captured when this is called, not when the result is awaited: what
        is stored is the session as it was at the call, however it changes afterwards,
        and saves of one session id commit in the order they were called (called from
        another thread, for the store's loop to run, a save is queued when it starts).
        Await the result for the acknowledgement: it returns after the commit. A save
        whose caller is cancelled, or times out, still commits (in its turn) or fails, as
        a whole.

        A session that was loaded (or saved) by this very object and since only had
        messages and responses appended writes just the session row and the new rows;
        anything else -- edits, removals, a copy or an unpickled session, a stored state
        changed by another save -- rewrites the session whole, so the last save wins, whole.

        Raises:
            InvalidNameError: The session id breaks the naming rules.
            InvalidDataError: A field cannot be stored (the error names it); nothing is
                written. Raised by the call itself.
            DatabaseError: The database failed; nothing is written.
        """
        return acknowledged(self._db.capture_save(session))

    def update_session(self, session: Session) -> Awaitable[None]:
        """Same as :meth:`save_session`."""
        return self.save_session(session)

    def append_to_session(
        self,
        session_id: str,
        *,
        user_messages: Sequence[UserMessage] = (),
        agent_responses: Sequence[AgentResponse] = (),
        metadata: dict[str, Any] | None = None,
    ) -> Awaitable[None]:
        """Append messages and responses to a stored session without loading it.

        One transaction, whatever the history's length: it reads the session's row,
        inserts the new rows after its own, and sets ``updated_at`` to now (and the
        metadata, if given). Captured when called and in call order with the session's
        saves, as :meth:`save_session`; a copy loaded before it saves whole afterwards.

        Raises:
            InvalidNameError: The session id breaks the naming rules.
            InvalidDataError: A message, response or the metadata cannot be stored (raised
                by the call itself).
            SessionNotFoundError: No session has this id; nothing is written.
            DatabaseError: The database failed; nothing is written.
        """
        check_writable_name(session_id, kind="session id")
        return self._db.append(session_id, user_messages, agent_responses, metadata)

    async def load_session(self, session_id: str) -> Session | None:
        """Return the stored session with this id, or ``None`` if there is none."""
        check_name(session_id, kind="session id")
        load = partial(_ops.load_session, session_id=session_id)
        return await self._db.read("load_session", load, session_id=session_id)

    async def load_tail(self, session_id: str, count: int) -> SessionTail | None:
        """Return a session's last ``count`` messages and responses with their positions.

        Reads only those rows, however long the history: for building a prompt. The result
        is a :class:`SessionTail`, not a :class:`Session`, so it cannot be saved as one.
        """
        check_name(session_id, kind="session id")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise InvalidArgumentError("count", f"must be an int >= 0, not {count!r}")
        load = partial(_ops.load_tail, session_id=session_id, count=count)
        return await self._db.read("load_tail", load, session_id=session_id)

    async def list_sessions(
        self,
        *,
        limit: int | None = None,
        after: SessionSummary | None = None,
        **filters: Unpack[ListingFilters],
    ) -> list[SessionSummary]:
        """Return session summaries, most recently updated first (ties: higher id first).

        With no arguments, every session; each filter given narrows the listing (they
        combine with AND). Never reads messages.

        Args:
            limit: At most this many (a page).
            after: Only sessions listed after this summary: pass a page's last summary to
                get the next page (with the same filters).
            **filters: ``user_id``, ``project_id``, ``active_seed_id``,
                ``active_persona_id``, ``forks_of`` (the forks of a session),
                ``created_after``, ``created_before``, ``updated_after``,
                ``updated_before`` (exclusive bounds) and ``metadata`` (``{key: value}``
                pairs the metadata must hold, compared as JSON); see
                :class:`~statestore._listing.ListingFilters`.

        Raises:
            InvalidArgumentError: A filter or argument is not of its type or range.
        """
        checked = session_filter(**filters)
        check_after(after)
        if limit is not None:
            check_count("limit", limit)
        listing = partial(
            _ops.list_summaries,
            filters=checked,
            after=(after.updated_at, after.id) if after is not None else None,
            limit=limit,
        )
        return await self._db.read("list_sessions", listing)

    async def iter_sessions(
        self, *, page_size: int = 500, **filters: Unpack[ListingFilters]
    ) -> AsyncGenerator[SessionSummary, None]:
        """Yield every matching summary, newest first, reading one page at a time.

        The same order and filters as :meth:`list_sessions`, holding at most ``page_size``
        summaries in memory however many sessions there are.
        """
        check_count("page_size", page_size)
        session_filter(**filters)
        after: SessionSummary | None = None
        while True:
            page = await self.list_sessions(limit=page_size, after=after, **filters)
            for summary in page:
                yield summary
            if len(page) < page_size:
                return
            after = page[-1]

    def fork_session(
        self, session_id: str, *, up_to: int | None = None, new_id: str | None = None
    ) -> Awaitable[Session]:
        """Copy a session into a new one that records it as its parent, and return the copy.

        The fork holds the first ``up_to`` user messages and the first ``up_to`` agent
        responses (all by default; 0: none), the source's seed, persona, metadata and
        creation time, ``parent_session_id`` = ``session_id`` and ``forked_at`` = now (also
        its ``updated_at``); its id is ``new_id``, else a new uuid4. The rows are copied
        inside the database, one statement per table in one transaction, queued when
        called and in call order with the source's saves (the fork holds every save of the
        source called before it). Deleting the source later leaves the fork whole.

        Raises:
            SessionNotFoundError: No session has ``session_id``.
            SessionExistsError: A session with ``new_id`` is stored.
        """
        check_name(session_id, kind="session id")
        return self._db.fork(session_id, check_fork(up_to, new_id), up_to)

    async def search_messages(
        self,
        query: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        limit: int = 20,
        after: SearchHit | None = None,
    ) -> list[SearchHit]:
        """Return the user messages and agent responses whose text matches ``query``.

        Hits come most recently written first (a text saved again counts as written
        then), ``limit`` at a time (default 20); pass a page's last hit as ``after`` for
        the next, and ``user_id`` or ``session_id`` to search one user or session. The query
        syntax (words, ``"phrases"``, ``OR``, ``-excluded``, ``prefix*``) is the same on
        SQLite and PostgreSQL; the README says where their word splitting differs.

        Raises:
            InvalidArgumentError: The query is empty or has no word to search for, or an
                argument is out of range.
        """
        find = _search.reader(
            query, user_id=user_id, session_id=session_id, limit=limit, after=after
        )
        return await self._db.read("search_messages", find, session_id=session_id)

    async def rebuild_search_index(self) -> int:
        """Index every stored message and response again, oldest first; return how many.

        The triggers of revision 0006 keep the index in step with every write, plain SQL
        included; rebuild after writing with the triggers dropped, or if a search looks
        wrong. One write transaction: other writes wait while it runs.
        """
        return await self._db.write("rebuild_search_index", _search.rebuild_index)

    def delete_session(self, session_id: str) -> Awaitable[bool]:
        """Delete a session with its messages and responses; return whether it existed
        (queued when called, in call order with the session's saves)."""
        check_name(session_id, kind="session id")
        delete = partial(_ops.delete_session, session_id=session_id)
        return self._db.write_in_order("delete_session", delete, key=session_id)

    def get_or_create_session(
        self, user_id: str, session_id: str | None = None
    ) -> Awaitable[Session]:
        """Return the session with ``session_id``, creating and saving it when missing.

        With no ``session_id`` a new session with a fresh id is created. An existing session
        is returned as stored, whatever its ``user_id``. Atomic: racing callers get one
        session. Queued when called, in call order with the session's saves.
        """
        check_text("user_id", user_id)
        new = Session(user_id=user_id)
        if session_id is not None:
            new.id = check_name(session_id, kind="session id")
        return self._db.get_or_create(new)

    def update_session_with(self, session_id: str, fn: SessionUpdate) -> Awaitable[Session | None]:
        """Load a session, apply ``fn`` to it, and save it, all in one write transaction.

        ``fn`` (sync or async) changes the session in place or returns a replacement. It
        runs on the event loop while the store's write transaction is held, so it must not
        write through this store (reads are fine); keep it short. Concurrent calls on one
        session never lose each other's changes. Queued when called, in call order with the
        session's saves; ``fn`` runs at most once (the transaction is never retried).

        Returns:
            The saved session, or ``None`` if no session has this id (``fn`` is not called).

        Raises:
            Exception: Whatever ``fn`` raises; nothing is saved then.
            InvalidDataError: ``fn`` left the session unstorable or changed its id.
            ReentrantWriteError: ``fn`` wrote through the store.
        """
        check_name(session_id, kind="session id")
        if not callable(fn):
            raise InvalidArgumentError("fn", f"must be a function of the session, not {fn!r}")
        return self._db.update_with(session_id, fn)

    async def delete_user(self, user_id: str) -> int:
        """Delete every session of one user, with their messages and responses.

        One transaction: a privacy-law erasure request either happens whole or not at all.
        Documents are not touched (they belong to no user).

        Returns:
            How many sessions were deleted.
        """
        check_text("user_id", user_id)
        delete = partial(_ops.delete_user_sessions, user_id=user_id)
        return await self._db.write("delete_user", delete)

    async def prune_sessions(self, config: PruneConfig) -> int:
        """Delete old sessions and return how many were deleted.

        First every session not updated within ``config.ttl_hours``, then the least recently
        updated beyond ``config.max_sessions``. A rule set to 0 is off. When there is
        nothing to delete this costs two indexed lookups; otherwise sessions go in
        set-based batches of :data:`~statestore.prune.PRUNE_BATCH`, each its own
        transaction. A prune never deletes a session that a concurrent save made fresh.
        """
        return await prune.prune(self._db, prune.check_config(config))

    async def prunable_sessions(self, config: PruneConfig) -> list[SessionSummary]:
        """Return the sessions :meth:`prune_sessions` would delete now, deleting nothing.

        The same rule as the prune, asked with the same SQL: first every session past the
        TTL, then the least recently updated beyond ``config.max_sessions``, in the order a
        prune deletes them (least recently updated first).
        """
        return await prune.prunable(self._db, prune.check_config(config))

    def save_session_with_prune(
        self,
        session: Session,
        config: PruneConfig,
        *,
        throttle: PruneThrottle | None = None,
    ) -> Awaitable[None]:
        """Save ``session``, then prune in a background task the caller does not wait for.

        The save is captured when this is called, as with :meth:`save_session`; the prune
        starts once the result is awaited and the save acknowledged. Prune errors are
        logged on the ``statestore`` logger. :meth:`close` waits for a prune still running.

        Args:
            session: The session to save.
            config: The prune rules.
            throttle: When given, prune only if ``throttle.should_prune()`` lets it through.
        """
        prune.check_config(config)
        if throttle is not None and not isinstance(throttle, PruneThrottle):
            raise InvalidArgumentError("throttle", f"must be a PruneThrottle, not {throttle!r}")
        pruning = partial(prune.in_background, self._db, config, throttle)
        return self._db.after_save(self._db.capture_save(session), pruning)

    # -- documents ----------------------------------------------------------------------

    async def save_markdown(self, category: str, name: str, content: str) -> None:
        """Store a markdown document, replacing any markdown document of that name."""
        await _documents.save_markdown(self._db, category, name, content)

    async def load_markdown(self, category: str, name: str) -> str | None:
        """Return a markdown document's text, or ``None`` if there is none."""
        return await _documents.load_markdown(self._db, category, name)

    async def save_json(self, category: str, name: str, data: Any) -> None:
        """Store a JSON document: any JSON-able value or a pydantic model.

        In the ``sessions`` category the data is a session's JSON object and is saved as
        that session (its ``id``, if present, must equal ``name``).

        Raises:
            InvalidNameError: The category or name breaks the naming rules.
            InvalidDataError: ``data`` is not JSON-able (the error says where).
            pydantic.ValidationError: Session data that is not a valid session.
        """
        await _documents.save_json(self._db, category, name, data)

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
        return await _documents.load_json(self._db, category, name, model)

    async def list_category(self, category: str) -> list[str]:
        """Return the sorted names of a category's markdown and JSON documents.

        Nested categories are separate: listing ``memory`` does not list ``memory/notes``.
        In the ``sessions`` category the JSON documents are the session ids.
        """
        return await _documents.list_category(self._db, category)

    async def list_categories(self) -> list[str]:
        """Return every category that holds a markdown or JSON document, sorted.

        ``sessions`` is listed only when it holds markdown documents.
        """
        return await _documents.list_categories(self._db)

    async def delete_file(self, category: str, name: str) -> bool:
        """Delete the JSON document of that name if present, else the markdown one.

        In the ``sessions`` category the JSON document is the session. Returns whether
        anything was deleted.
        """
        return await _documents.delete_file(self._db, category, name)

    # -- moving data in and out, upkeep ---------------------------------------------------

    async def import_directory(
        self,
        directory: str | os.PathLike[str],
        *,
        replace_newer: bool = False,
        progress: filestore.Progress | None = None,
        workers: int = 0,
    ) -> filestore.ImportReport:
        """Import a file store's directory: sessions, and documents of every category.

        ``sessions/<id>.json`` files become sessions; every other
        ``<category>/<name>.md|.json`` (nested categories too) a document. Idempotent: what
        is stored exactly so is left alone. A stored session or document whose
        ``updated_at`` is later than the file's is kept (and counted) unless
        ``replace_newer``. :data:`~statestore.filestore.IMPORT_BATCH` files go to a
        transaction, so a crash leaves whole sessions and a rerun finishes the job. A file
        that cannot be imported (not UTF-8 or JSON, an invalid session, a refused name, ...)
        is skipped and listed in the report with the reason; ``*.tmp`` files are counted.

        Args:
            directory: The file store's root folder.
            replace_newer: Replace stored sessions and documents with the files' versions
                even where the stored one is newer.
            progress: Called with ``(files done, files in all)`` after each batch.
            workers: Processes reading files while this one writes, from 2,000 files on
                (0: a thread); ``spawn``ed, so a calling script needs a ``__main__`` guard.

        Raises:
            InvalidArgumentError: ``directory`` is not a directory, or ``workers`` not 0-64.
            DatabaseError: The database failed; batches committed before stay.
        """
        return await filestore.import_directory(
            self._db, Path(directory), progress, replace_newer=replace_newer, workers=workers
        )

    async def export_directory(
        self,
        directory: str | os.PathLike[str],
        *,
        user_id: str | None = None,
        overwrite: bool = False,
        progress: filestore.Progress | None = None,
    ) -> filestore.ExportReport:
        """Write the store out in the file store's layout and format, for a rollback.

        Sessions become ``sessions/<id>.json`` and documents ``<category>/<name>.md|.json``
        as the file store wrote them (its field order, two-space indents, UTC timestamps
        ending in ``Z``; a fork's lineage as two more fields), each to a temp file renamed
        into place, modified at the stored ``updated_at``. Each file is one saved state: stop
        writers first for a snapshot. Files the system refuses are listed in ``skipped``.

        Args:
            directory: Where to write; created if missing.
            user_id: Only this user's sessions (and no documents).
            overwrite: Write into a directory that is not empty, replacing files of the
                same names and leaving the others.
            progress: Called with ``(items done, items in all)`` as it goes.

        Raises:
            InvalidArgumentError: ``directory`` is not empty (without ``overwrite``) or not
                a directory.
        """
        if user_id is not None:
            check_text("user_id", user_id)
        root = Path(directory)
        await filestore.check_export_target(root, overwrite=overwrite)
        session_ids = [summary.id async for summary in self.iter_sessions(user_id=user_id)]
        return await filestore.export_directory(
            self._db, root, session_ids, documents=user_id is None, progress=progress
        )

    async def stats(self, *, days: int = 7) -> StoreStats:
        """Return the store's headline numbers, read from the analytics views.

        Args:
            days: How many recent UTC days (today included) to report activity for.
        """
        since = first_day(days)
        return await self._db.read("stats", partial(read_stats, since=since))

    async def compact(self) -> tuple[int, int]:
        """Give back the space that deleted sessions left, and return the size before and after.

        On SQLite: checkpoint the WAL into the database file, ``VACUUM``, and truncate the
        WAL; sizes are the database file plus its WAL. On PostgreSQL: ``VACUUM (FULL,
        ANALYZE)`` of statestore's tables; sizes are those tables with their indexes.
        Either way writers wait while it runs: run it after a large prune, off-peak.

        Returns:
            ``(bytes before, bytes after)``.
        """
        return await self._db.compact()
