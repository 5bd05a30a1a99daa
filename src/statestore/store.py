"""The repository: sessions and named documents in SQL, with the file store's contract."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar, overload

from pydantic import BaseModel
from sqlalchemy import URL, Insert, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from statestore import codec
from statestore import migrate as migrations
from statestore.engine import (
    Synchronous,
    create_engine,
    database_errors,
    prepare_engine,
    resolve_url,
    write_connection,
)
from statestore.errors import InvalidDataError, StoreClosedError
from statestore.models import Session, SessionSummary
from statestore.names import SESSIONS_CATEGORY, check_category, check_name
from statestore.prune import PruneConfig, PruneThrottle
from statestore.schema import documents, messages, responses, sessions

__all__ = ["StateStore"]

logger = logging.getLogger("statestore")

ModelT = TypeVar("ModelT", bound=BaseModel)
ResultT = TypeVar("ResultT")
SessionUpdate = Callable[[Session], Session | Awaitable[Session | None] | None]

_SUMMARY_COLUMNS = (
    sessions.c.id,
    sessions.c.user_id,
    sessions.c.message_count,
    sessions.c.active_seed_id,
    sessions.c.project_id,
    sessions.c.created_at,
    sessions.c.updated_at,
)
_NEWEST_FIRST = (sessions.c.updated_at.desc(), sessions.c.id.desc())


def _upsert(
    table: Any,
    dialect_name: str,
    keys: tuple[str, ...],
    keep: tuple[str, ...] = (),
    **computed: Any,
) -> Insert:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` of every column but ``keys`` and ``keep``.

    ``computed`` gives SQL expressions for columns set from the stored row on update.
    """
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    statement = insert(table)
    unchanged = {*keys, *keep, *computed}
    updates = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in unchanged}
    return statement.on_conflict_do_update(index_elements=list(keys), set_={**updates, **computed})


def _insert_if_missing(table: Any, dialect_name: str) -> Insert:
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing()


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

    Every write is one transaction: a save replaces the whole stored session or nothing.
    On SQLite, writes in one store are serialized and begin with ``BEGIN IMMEDIATE``; a
    write whose caller is cancelled still runs to its commit or rollback, so the write lock
    is never left held.

    Args:
        engine: An async SQLAlchemy engine on SQLite (aiosqlite) or PostgreSQL (asyncpg)
            whose database has statestore's schema (see :mod:`statestore.migrate`).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        prepare_engine(engine)
        self._engine = engine
        self._owns_engine = False
        self._closed = False
        self._write_lock = asyncio.Lock()
        self._writes: set[asyncio.Task[Any]] = set()
        self._prunes: set[asyncio.Task[None]] = set()
        dialect_name = engine.dialect.name
        self._upsert_session = _upsert(
            sessions, dialect_name, ("id",), version=sessions.c.version + 1
        )
        self._upsert_message = _upsert(messages, dialect_name, ("session_id", "position"))
        self._upsert_response = _upsert(responses, dialect_name, ("session_id", "position"))
        self._upsert_document = _upsert(
            documents, dialect_name, ("category", "name", "kind"), keep=("created_at",)
        )
        self._insert_session_if_missing = _insert_if_missing(sessions, dialect_name)

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
            target: A filesystem path (SQLite through aiosqlite) or a URL such as
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
                store = cls(engine)
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
        """Finish pending writes and background prunes, then release connections.

        Idempotent. A store that opened its own engine disposes of it.
        """
        if self._closed:
            return
        while pending := [*self._writes, *self._prunes]:
            await asyncio.gather(*pending, return_exceptions=True)
        self._closed = True
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

    # -- transactions -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("this StateStore is closed")

    @asynccontextmanager
    async def _reading(self, operation: str) -> AsyncIterator[AsyncConnection]:
        self._check_open()
        with database_errors(operation):
            async with self._engine.connect() as connection, connection.begin():
                yield connection

    async def _write(
        self, operation: str, work: Callable[[AsyncConnection], Awaitable[ResultT]]
    ) -> ResultT:
        """Run ``work`` in one write transaction that the caller's cancellation cannot cut."""
        self._check_open()
        task = asyncio.ensure_future(self._write_unit(operation, work))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await asyncio.shield(task)

    async def _write_unit(
        self, operation: str, work: Callable[[AsyncConnection], Awaitable[ResultT]]
    ) -> ResultT:
        async with self._write_lock:
            with database_errors(operation):
                async with self._engine.connect() as connection:
                    connection = await write_connection(connection)
                    async with connection.begin():
                        return await work(connection)

    # -- sessions ---------------------------------------------------------------------

    async def _save_in(self, connection: AsyncConnection, session: Session) -> None:
        session_row = codec.session_row(session)
        message_rows = codec.message_rows(session.id, session.user_messages)
        response_rows = codec.response_rows(session.id, session.agent_responses)
        await connection.execute(self._upsert_session, [session_row])
        for table, upsert, rows in (
            (messages, self._upsert_message, message_rows),
            (responses, self._upsert_response, response_rows),
        ):
            await connection.execute(
                delete(table).where(table.c.session_id == session.id, table.c.position >= len(rows))
            )
            if rows:
                await connection.execute(upsert, rows)

    async def save_session(self, session: Session) -> None:
        """Store ``session`` whole: loading it again returns exactly this state.

        The session row is upserted and its messages and responses replaced in one
        transaction, so a stale copy saved over a newer one wins whole (last save wins).

        Raises:
            InvalidNameError: The session id breaks the naming rules.
            InvalidDataError: A field cannot be stored (the error names it); nothing is written.
            DatabaseError: The database failed; nothing is written.
        """
        codec.session_row(session)

        async def work(connection: AsyncConnection) -> None:
            await self._save_in(connection, session)

        await self._write("save_session", work)

    async def update_session(self, session: Session) -> None:
        """Same as :meth:`save_session`."""
        await self.save_session(session)

    async def _load_in(self, connection: AsyncConnection, session_id: str) -> Session | None:
        result = await connection.execute(select(sessions).where(sessions.c.id == session_id))
        row = result.first()
        if row is None:
            return None
        message_rows: Any = ()
        if row.message_count:
            message_rows = await connection.execute(
                select(messages.c.content, messages.c.created_at, messages.c.extra)
                .where(messages.c.session_id == session_id)
                .order_by(messages.c.position)
            )
        response_rows: Any = ()
        if row.response_count:
            response_rows = await connection.execute(
                select(
                    responses.c.content,
                    responses.c.reported_session_id,
                    responses.c.seed_id,
                    responses.c.phase_reached,
                    responses.c.evaluation_passed,
                    responses.c.created_at,
                    responses.c.extra,
                )
                .where(responses.c.session_id == session_id)
                .order_by(responses.c.position)
            )
        return codec.session_from_rows(row, message_rows, response_rows)

    async def load_session(self, session_id: str) -> Session | None:
        """Return the stored session with this id, or ``None`` if there is none."""
        check_name(session_id, kind="session id")
        async with self._reading("load_session") as connection:
            return await self._load_in(connection, session_id)

    async def list_sessions(self) -> list[SessionSummary]:
        """Return a summary of every session, most recently updated first (ties by id)."""
        async with self._reading("list_sessions") as connection:
            result = await connection.execute(select(*_SUMMARY_COLUMNS).order_by(*_NEWEST_FIRST))
            return [codec.summary_from_row(row) for row in result]

    async def delete_session(self, session_id: str) -> bool:
        """Delete a session with its messages and responses; return whether it existed."""
        check_name(session_id, kind="session id")

        async def work(connection: AsyncConnection) -> bool:
            result = await connection.execute(delete(sessions).where(sessions.c.id == session_id))
            return result.rowcount > 0

        return await self._write("delete_session", work)

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
        row = codec.session_row(new_session)

        async def work(connection: AsyncConnection) -> Session:
            result = await connection.execute(self._insert_session_if_missing, [row])
            if result.rowcount:
                return new_session
            existing = await self._load_in(connection, new_session.id)
            assert existing is not None, "a conflicting session row must exist"
            return existing

        return await self._write("get_or_create_session", work)

    async def update_session_with(self, session_id: str, fn: SessionUpdate) -> Session | None:
        """Load a session, apply ``fn`` to it, and save it, all in one write transaction.

        ``fn`` (sync or async) changes the session in place or returns a replacement.
        Concurrent calls on one session never lose each other's changes.

        Returns:
            The saved session, or ``None`` if no session has this id (``fn`` is not called).

        Raises:
            Exception: Whatever ``fn`` raises; nothing is saved then.
            InvalidDataError: ``fn`` left the session unstorable or changed its id.
        """
        check_name(session_id, kind="session id")

        async def work(connection: AsyncConnection) -> Session | None:
            session = await self._load_in(connection, session_id)
            if session is None:
                return None
            outcome = fn(session)
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if isinstance(outcome, Session):
                session = outcome
            if session.id != session_id:
                raise InvalidDataError("id", f"fn changed the session id to {session.id!r}")
            await self._save_in(connection, session)
            return session

        return await self._write("update_session_with", work)

    async def prune_sessions(self, config: PruneConfig) -> int:
        """Delete old sessions and return how many were deleted.

        First every session not updated within ``config.ttl_hours``, then the least recently
        updated beyond ``config.max_sessions``. A rule set to 0 is off.
        """

        async def work(connection: AsyncConnection) -> int:
            deleted = 0
            if config.ttl_hours:
                cutoff = datetime.now(UTC) - timedelta(hours=config.ttl_hours)
                result = await connection.execute(
                    delete(sessions).where(sessions.c.updated_at < cutoff)
                )
                deleted += result.rowcount
            if config.max_sessions:
                beyond_max = (
                    select(sessions.c.id).order_by(*_NEWEST_FIRST).offset(config.max_sessions)
                )
                result = await connection.execute(
                    delete(sessions).where(sessions.c.id.in_(beyond_max.scalar_subquery()))
                )
                deleted += result.rowcount
            return deleted

        return await self._write("prune_sessions", work)

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
        await self.save_session(session)
        if throttle is not None and not throttle.should_prune():
            return
        task = asyncio.create_task(self._prune_in_background(config))
        self._prunes.add(task)
        task.add_done_callback(self._prunes.discard)

    async def _prune_in_background(self, config: PruneConfig) -> None:
        try:
            deleted = await self.prune_sessions(config)
        except StoreClosedError:
            return
        except Exception:
            logger.exception("background prune failed")
            return
        if deleted:
            logger.info("pruned %d sessions", deleted)

    # -- documents --------------------------------------------------------------------

    async def _save_document(self, category: str, name: str, kind: str, content: str) -> None:
        now = datetime.now(UTC)
        row = {
            "category": category,
            "name": name,
            "kind": kind,
            "content": content,
            "created_at": now,
            "updated_at": now,
        }

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(self._upsert_document, [row])

        await self._write("save_document", work)

    async def _load_document(self, category: str, name: str, kind: str) -> str | None:
        async with self._reading("load_document") as connection:
            result = await connection.execute(
                select(documents.c.content).where(
                    documents.c.category == category,
                    documents.c.name == name,
                    documents.c.kind == kind,
                )
            )
            content: str | None = result.scalar()
            return content

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
            await self.save_session(self._session_document(name, data))
            return
        await self._save_document(category, name, "json", codec.dump_json_document("data", data))

    @staticmethod
    def _session_document(name: str, data: Any) -> Session:
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        if not isinstance(data, dict):
            raise InvalidDataError("data", "a session document must be a JSON object")
        data = {"id": name, **data}
        if data["id"] != name:
            raise InvalidDataError("data.id", f"{data['id']!r} does not match the name {name!r}")
        return Session.model_validate(data)

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
        async with self._reading("list_category") as connection:
            result = await connection.execute(
                select(documents.c.name).where(documents.c.category == category)
            )
            names = set(result.scalars())
            if category == SESSIONS_CATEGORY:
                names.update((await connection.execute(select(sessions.c.id))).scalars())
        return sorted(names)

    async def delete_file(self, category: str, name: str) -> bool:
        """Delete the JSON document of that name if present, else the markdown one.

        In the ``sessions`` category the JSON document is the session. Returns whether
        anything was deleted.
        """
        check_category(category)
        check_name(name)

        async def work(connection: AsyncConnection) -> bool:
            if category == SESSIONS_CATEGORY:
                json_delete = delete(sessions).where(sessions.c.id == name)
            else:
                json_delete = delete(documents).where(
                    documents.c.category == category,
                    documents.c.name == name,
                    documents.c.kind == "json",
                )
            if (await connection.execute(json_delete)).rowcount:
                return True
            markdown_delete = delete(documents).where(
                documents.c.category == category,
                documents.c.name == name,
                documents.c.kind == "markdown",
            )
            return bool((await connection.execute(markdown_delete)).rowcount)

        return await self._write("delete_file", work)
