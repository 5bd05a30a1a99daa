"""When old sessions are removed: the prune rules and a throttle for how often to apply them."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from statestore.models import MIN_TIMESTAMP

__all__ = ["PruneConfig", "PruneThrottle"]


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
