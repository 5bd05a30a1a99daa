"""The session half of the repository: save, load, list, update, delete and prune."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any

from statestore import _ops, _validate
from statestore._tx import Tx
from statestore._validate import check_name
from statestore.base import StoreBase, forget_unless_stored, updating_runner
from statestore.errors import InvalidArgumentError, InvalidDataError
from statestore.models import Session, SessionSummary, SessionTail
from statestore.prune import PruneConfig, PruneThrottle

__all__ = ["PRUNE_BATCH", "SessionStore", "SessionUpdate"]

logger = logging.getLogger("statestore")

SessionUpdate = Callable[[Session], Session | Awaitable[Session | None] | None]

PRUNE_BATCH = 1_000
"""Sessions deleted per prune transaction, so that saves interleave with a large prune."""


MAX_COUNT = 2**63 - 1
"""The largest ``limit`` or ``page_size`` (the databases' 64-bit integers)."""


def _check_count(field: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_COUNT:
        raise InvalidArgumentError(field, f"must be an int from 1 to 2**63 - 1, not {value!r}")


def _check_prune_config(config: object) -> None:
    if not isinstance(config, PruneConfig):
        raise InvalidArgumentError("config", f"must be a PruneConfig, not {config!r}")


async def _acknowledged(queued: Callable[[], asyncio.Future[None]]) -> None:
    """Wait, shielded, for a captured save's commit.

    The save was queued when it was called (or is queued now, if it was called off the
    loop): a cancelled or timed-out waiter leaves it to commit or fail in its turn.
    """
    await asyncio.shield(queued())


class SessionStore(StoreBase):
    """Sessions: every operation on the ``sessions``, ``messages`` and ``responses`` tables."""

    # -- sessions -----------------------------------------------------------------------

    def save_session(self, session: Session) -> Awaitable[None]:
        """Store ``session`` whole: loading it again returns exactly this state.

        The state is captured when this is called, not when the result is awaited: what
        is stored is the session as it was at the call, however it changes afterwards,
        and saves of one session id commit in the order they were called (called from
        another thread, for the store's loop to run, a save is queued when it starts). Await the
        result for the acknowledgement: it returns after the commit. A save whose caller
        is cancelled, or times out, still commits (in its turn) or fails, as a whole.

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
        self._check_writable("save_session")
        return _acknowledged(self._capture_save(session))

    def _capture_save(self, session: Session) -> Callable[[], asyncio.Future[None]]:
        """Capture a save of ``session`` now; return what gives its queued future.

        On the event loop the save is queued at once. Called from another thread (for the
        store's loop to run the result), it is queued when the result starts running.
        """
        job, record = self._save_job(session)

        def queue() -> asyncio.Future[None]:
            done = self._runner.submit_batched(
                "save_session",
                _ops.save_sessions,
                job,
                session.id,
                busy_timeout=self._busy_timeout,
            )
            done.add_done_callback(partial(forget_unless_stored, session, record))
            return done

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return queue
        queued = queue()
        return lambda: queued

    def update_session(self, session: Session) -> Awaitable[None]:
        """Same as :meth:`save_session`."""
        return self.save_session(session)

    async def load_session(self, session_id: str) -> Session | None:
        """Return the stored session with this id, or ``None`` if there is none."""
        check_name(session_id, kind="session id")
        return await self._read("load_session", partial(_ops.load_session, session_id=session_id))

    async def load_tail(self, session_id: str, count: int) -> SessionTail | None:
        """Return a session's last ``count`` messages and responses with their positions.

        Reads only those rows, however long the history: for building a prompt. The result
        is a :class:`SessionTail`, not a :class:`Session`, so it cannot be saved as one.
        """
        check_name(session_id, kind="session id")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise InvalidArgumentError("count", f"must be an int >= 0, not {count!r}")
        return await self._read(
            "load_tail", partial(_ops.load_tail, session_id=session_id, count=count)
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
            _validate.check_text("user_id", user_id)
            conditions.append("user_id = :user_id")
            params["user_id"] = user_id
        if project_id is not None:
            _validate.check_text("project_id", project_id)
            conditions.append("project_id = :project_id")
            params["project_id"] = project_id
        if after is not None:
            if not isinstance(after, SessionSummary):
                raise InvalidArgumentError("after", "must be a SessionSummary from a listing")
            conditions.append("(updated_at, id) < (:after_updated_at, :after_id)")
            params["after_updated_at"] = self._time.bind(after.updated_at)
            params["after_id"] = after.id
        if updated_before is not None:
            _validate.check_timestamp("updated_before", updated_before)
            conditions.append("updated_at < :updated_before")
            params["updated_before"] = self._time.bind(updated_before)
        if limit is not None:
            _check_count("limit", limit)
        return await self._read(
            "list_sessions",
            partial(_ops.list_summaries, conditions=conditions, params=params, limit=limit),
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
        _check_count("page_size", page_size)
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
            "delete_session", partial(_ops.delete_session, session_id=session_id), key=session_id
        )

    async def get_or_create_session(self, user_id: str, session_id: str | None = None) -> Session:
        """Return the session with ``session_id``, creating and saving it when missing.

        With no ``session_id`` a new session with a fresh id is created. An existing session
        is returned as stored, whatever its ``user_id``. Atomic: racing callers get one session.
        """
        _validate.check_text("user_id", user_id)
        if session_id is None:
            new_session = Session(user_id=user_id)
        else:
            new_session = Session(user_id=user_id, id=check_name(session_id, kind="session id"))
        job, record = self._save_job(new_session)

        def body(tx: Tx) -> Session | None:
            if _ops.insert_session_if_missing(tx, job.session_row):
                return None
            return _ops.load_session(tx, new_session.id)

        done = self._submit("get_or_create_session", body, key=new_session.id)
        done.add_done_callback(partial(forget_unless_stored, new_session, record))
        existing = await asyncio.shield(done)
        return new_session if existing is None else existing

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
            raise InvalidArgumentError("fn", f"must be a function of the session, not {fn!r}")
        outcome: dict[str, Any] = {}

        async def apply(session: Session) -> _ops.SaveJob:
            marker = updating_runner.set(self._runner)
            try:
                returned = fn(session)
                if inspect.isawaitable(returned):
                    returned = await returned
            finally:
                updating_runner.reset(marker)
            if isinstance(returned, Session):
                session = returned
            if session.id != session_id:
                raise InvalidDataError("id", f"fn changed the session id to {session.id!r}")
            job, outcome["record"] = self._save_job(session)
            outcome["session"] = session
            return job

        def body(tx: Tx) -> bool:
            session = _ops.load_session(tx, session_id, lock=True)
            if session is None:
                return False
            _ops.save_sessions(tx, [tx.call_in_loop(apply(session))])
            return True

        def settled(done: asyncio.Future[bool]) -> None:
            if "session" in outcome:
                forget_unless_stored(outcome["session"], outcome["record"], done)

        done = self._submit("update_session_with", body, key=session_id)
        done.add_done_callback(settled)
        if not await asyncio.shield(done):
            return None
        saved: Session = outcome["session"]
        return saved

    async def delete_user(self, user_id: str) -> int:
        """Delete every session of one user, with their messages and responses.

        One transaction: a privacy-law erasure request either happens whole or not at all.
        Documents are not touched (they belong to no user).

        Returns:
            How many sessions were deleted.
        """
        _validate.check_text("user_id", user_id)
        return await self._write("delete_user", partial(_ops.delete_user_sessions, user_id=user_id))

    async def prune_sessions(self, config: PruneConfig) -> int:
        """Delete old sessions and return how many were deleted.

        First every session not updated within ``config.ttl_hours``, then the least recently
        updated beyond ``config.max_sessions``. A rule set to 0 is off. When there is
        nothing to delete this costs two indexed lookups; otherwise sessions go in
        set-based batches of :data:`PRUNE_BATCH`, each its own transaction.
        """
        _check_prune_config(config)
        cutoff = config.cutoff()
        pending = await self._read(
            "prune_sessions",
            partial(_ops.prune_pending, cutoff=cutoff, max_sessions=config.max_sessions),
        )
        if not pending:
            return 0
        deleted = 0
        # A batch goes on until one deletes nothing: a batch can delete fewer than it took
        # aim at while there is more to do, when a concurrent save made one of its
        # sessions fresh (that session is skipped, and the rest of the work remains).
        if cutoff is not None:
            while removed := await self._write(
                "prune_sessions",
                partial(_ops.delete_stale_sessions, cutoff=cutoff, batch=PRUNE_BATCH),
            ):
                deleted += removed
        if config.max_sessions:
            while removed := await self._write(
                "prune_sessions",
                partial(
                    _ops.delete_excess_sessions,
                    max_sessions=config.max_sessions,
                    batch=PRUNE_BATCH,
                ),
            ):
                deleted += removed
        return deleted

    async def prunable_sessions(self, config: PruneConfig) -> list[SessionSummary]:
        """Return the sessions :meth:`prune_sessions` would delete now, deleting nothing.

        The same rule as the prune, asked with the same SQL: first every session past the
        TTL, then the least recently updated beyond ``config.max_sessions``, in the order a
        prune deletes them (least recently updated first).
        """
        _check_prune_config(config)
        return await self._read(
            "prunable_sessions",
            partial(
                _ops.prunable_sessions,
                cutoff=config.cutoff(),
                max_sessions=config.max_sessions,
            ),
        )

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
        _check_prune_config(config)
        if throttle is not None and not isinstance(throttle, PruneThrottle):
            raise InvalidArgumentError("throttle", f"must be a PruneThrottle, not {throttle!r}")
        self._check_writable("save_session_with_prune")
        return self._prune_after(self._capture_save(session), config, throttle)

    async def _prune_after(
        self,
        queued: Callable[[], asyncio.Future[None]],
        config: PruneConfig,
        throttle: PruneThrottle | None,
    ) -> None:
        await _acknowledged(queued)
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
