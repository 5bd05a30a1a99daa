"""The repository: sessions and named documents in SQL, with the file store's contract."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Coroutine, Generator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

from pydantic import BaseModel
from sqlalchemy import URL

from statestore import _ops, _rows, _validate, filestore
from statestore import migrate as migrations
from statestore._engine import Synchronous, create_engine, resolve_url
from statestore._tx import Tx
from statestore._validate import (
    SESSIONS_CATEGORY,
    check_category,
    check_name,
    check_writable_category,
    check_writable_name,
)
from statestore.errors import InvalidArgumentError
from statestore.models import MIN_TIMESTAMP
from statestore.sessions import SessionStore
from statestore.stats import StoreStats, read_stats

__all__ = ["StateStore"]

ModelT = TypeVar("ModelT", bound=BaseModel)


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


class StateStore(SessionStore):
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

    # -- documents ----------------------------------------------------------------------

    async def _save_document(self, category: str, name: str, kind: str, content: str) -> None:
        await self._write(
            "save_document",
            partial(
                _ops.save_document,
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
            partial(_ops.load_document, category=category, name=name, kind=kind),
        )

    async def save_markdown(self, category: str, name: str, content: str) -> None:
        """Store a markdown document, replacing any markdown document of that name."""
        check_writable_category(category)
        check_writable_name(name, suffix=".md")
        _validate.check_text("content", content)
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
        check_writable_category(category)
        check_writable_name(name)
        if category == SESSIONS_CATEGORY:
            await self.save_session(_validate.session_from_document(name, data))
            return
        await self._save_document(category, name, "json", _rows.dump_json_document("data", data))

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
            names = set(_ops.list_document_names(tx, category))
            if category == SESSIONS_CATEGORY:
                names.update(_ops.list_session_ids(tx))
            return sorted(names)

        return await self._read("list_category", body)

    async def list_categories(self) -> list[str]:
        """Return every category that holds a markdown or JSON document, sorted.

        ``sessions`` is listed only when it holds markdown documents.
        """
        return await self._read("list_categories", _ops.list_categories)

    async def delete_file(self, category: str, name: str) -> bool:
        """Delete the JSON document of that name if present, else the markdown one.

        In the ``sessions`` category the JSON document is the session. Returns whether
        anything was deleted.
        """
        check_category(category)
        check_name(name)

        def body(tx: Tx) -> bool:
            if category == SESSIONS_CATEGORY:
                deleted_json = _ops.delete_session(tx, name)
            else:
                deleted_json = _ops.delete_document(tx, category, name, "json")
            return deleted_json or _ops.delete_document(tx, category, name, "markdown")

        return await self._write("delete_file", body)

    # -- moving data in and out, upkeep ---------------------------------------------------

    async def import_directory(
        self,
        directory: str | os.PathLike[str],
        *,
        replace_newer: bool = False,
        progress: filestore.Progress | None = None,
    ) -> filestore.ImportReport:
        """Import a file store's directory: sessions, and documents of every category.

        ``sessions/<id>.json`` files become sessions with their messages and responses;
        every other ``<category>/<name>.md|.json`` (nested categories too) becomes a
        document. Idempotent: what is already stored exactly so is left alone, so
        importing a directory twice changes nothing. A stored session or document whose
        ``updated_at`` is later than the file's was saved since the file was written: it is
        kept (and counted as kept) unless ``replace_newer``. Files are imported
        :data:`~statestore.filestore.IMPORT_BATCH` to a transaction, so a crash leaves only
        whole sessions and a rerun finishes the job.

        A file that cannot be imported (not UTF-8, not JSON, not a valid session, a name
        the rules refuse, ...) is skipped and listed in the report with the reason;
        nothing else is skipped because of it. Leftover ``*.tmp`` files are counted.

        Args:
            directory: The file store's root folder.
            replace_newer: Replace stored sessions and documents with the files' versions
                even where the stored one is newer.
            progress: Called with ``(files done, files in all)`` after each batch.

        Raises:
            InvalidDataError: ``directory`` is not a directory.
            DatabaseError: The database failed; batches committed before stay.
        """
        return await filestore.import_directory(
            self, Path(directory), progress, replace_newer=replace_newer
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
            raise InvalidArgumentError("days", f"must be an int >= 1, not {days!r}")
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        try:
            since = max(today - timedelta(days=days - 1), MIN_TIMESTAMP)
        except OverflowError:  # more days than the calendar holds: all of them
            since = MIN_TIMESTAMP
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
