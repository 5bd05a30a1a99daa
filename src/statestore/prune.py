"""When old sessions are removed: the prune rules, how a prune applies them, and a throttle.

A prune deletes first every session past the TTL, then the least recently updated beyond
the maximum, in batches; its dry run (:func:`prunable`) asks the same SQL without deleting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from statestore import _ops
from statestore._database import Database
from statestore.errors import InvalidArgumentError
from statestore.models import MIN_TIMESTAMP, SessionSummary

__all__ = [
    "PRUNE_BATCH",
    "PruneConfig",
    "PruneThrottle",
    "check_config",
    "in_background",
    "prunable",
    "prune",
]

logger = logging.getLogger("statestore")

PRUNE_BATCH = 1_000
"""Sessions deleted per prune transaction, so that saves interleave with a large prune."""


class PruneConfig(BaseModel):
    """Which sessions a prune removes. ``0`` turns a rule off.

    Attributes:
        max_sessions: Keep at most this many sessions, the most recently updated.
        ttl_hours: Remove sessions not updated within this many hours.
    """

    model_config = ConfigDict(frozen=True)

    max_sessions: int = Field(default=100, ge=0)
    ttl_hours: int = Field(default=168, ge=0)

    def cutoff(self) -> datetime | None:
        """Return the instant before which a session is past the TTL (``None``: TTL off)."""
        if not self.ttl_hours:
            return None
        try:
            return max(datetime.now(UTC) - timedelta(hours=self.ttl_hours), MIN_TIMESTAMP)
        except OverflowError:  # a TTL longer than the calendar: nothing is that old
            return MIN_TIMESTAMP


class PruneThrottle:
    """Lets a prune through at most once per cooldown; safe to share between threads.

    Args:
        cooldown_secs: Seconds that must pass between two prunes that are let through.
    """

    def __init__(self, cooldown_secs: float) -> None:
        if cooldown_secs < 0:
            raise ValueError(f"cooldown_secs must be >= 0, not {cooldown_secs!r}")
        self.cooldown_secs = cooldown_secs
        self._lock = threading.Lock()
        self._last: float | None = None

    def should_prune(self) -> bool:
        """Return True on the first call, then True at most once per cooldown."""
        now = time.monotonic()
        with self._lock:
            if self._last is not None and now - self._last < self.cooldown_secs:
                return False
            self._last = now
            return True


def check_config(config: object) -> PruneConfig:
    """Return ``config`` if it is a :class:`PruneConfig`, else raise InvalidArgumentError."""
    if not isinstance(config, PruneConfig):
        raise InvalidArgumentError("config", f"must be a PruneConfig, not {config!r}")
    return config


def in_background(
    database: Database, config: PruneConfig, throttle: PruneThrottle | None
) -> Coroutine[Any, Any, None] | None:
    """``save_session_with_prune``'s prune, to run after its save: None if ``throttle``
    holds it back, else a prune that logs how it went on the ``statestore`` logger (nobody
    awaits it)."""
    if throttle is not None and not throttle.should_prune():
        return None
    return _logged(database, config)


async def _logged(database: Database, config: PruneConfig) -> None:
    try:
        deleted = await prune(database, config)
    except Exception:
        logger.exception("background prune failed")
        return
    if deleted:
        logger.info("pruned %d sessions", deleted)


async def prune(database: Database, config: PruneConfig) -> int:
    """Apply ``config`` to ``database``: delete what it rules out; return how many went.

    When there is nothing to delete this costs two indexed lookups; otherwise sessions go
    in set-based batches of :data:`PRUNE_BATCH`, each its own transaction. A batch goes on
    until one deletes nothing: a batch can delete fewer than it aimed at while there is
    more to do, when a concurrent save made one of its sessions fresh (that one is kept).
    """
    cutoff = config.cutoff()
    pending = await database.read(
        "prune_sessions",
        partial(_ops.prune_pending, cutoff=cutoff, max_sessions=config.max_sessions),
    )
    if not pending:
        return 0
    deleted = 0
    if cutoff is not None:
        while removed := await database.write(
            "prune_sessions",
            partial(_ops.delete_stale_sessions, cutoff=cutoff, batch=PRUNE_BATCH),
        ):
            deleted += removed
    if config.max_sessions:
        while removed := await database.write(
            "prune_sessions",
            partial(
                _ops.delete_excess_sessions, max_sessions=config.max_sessions, batch=PRUNE_BATCH
            ),
        ):
            deleted += removed
    return deleted


async def prunable(database: Database, config: PruneConfig) -> list[SessionSummary]:
    """Return what :func:`prune` would delete now, in its order, asking the same SQL."""
    return await database.read(
        "prunable_sessions",
        partial(_ops.prunable_sessions, cutoff=config.cutoff(), max_sessions=config.max_sessions),
    )
