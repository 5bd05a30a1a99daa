"""The headline numbers of a store, read from the analytics views in one transaction."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel

from statestore import _sql
from statestore._tx import Tx
from statestore.errors import InvalidArgumentError
from statestore.models import MIN_TIMESTAMP, UTCTimestamp

__all__ = ["DayActivity", "SeedPassRate", "StoreStats", "first_day", "read_stats"]


class SeedPassRate(BaseModel):
    """How the responses given with one seed fared in evaluation."""

    seed_id: str | None
    evaluated: int
    """Responses with an evaluation result."""
    passed: int

    @property
    def pass_rate(self) -> float:
        """``passed / evaluated``."""
        return self.passed / self.evaluated


class DayActivity(BaseModel):
    """What happened on one UTC day, counted by the user messages sent that day."""

    day: date
    messages: int
    sessions: int
    users: int


class StoreStats(BaseModel):
    """The numbers an operator looks at first.

    ``sessions`` to ``last_activity_at`` cover the whole store; ``days`` lists the recent
    days with activity, oldest first.
    """

    sessions: int
    users: int
    messages: int
    responses: int
    documents: int
    first_activity_at: UTCTimestamp | None
    last_activity_at: UTCTimestamp | None
    pass_rates: list[SeedPassRate]
    days: list[DayActivity]


def first_day(days: object) -> datetime:
    """The start of the first of the last ``days`` UTC days (today included).

    Raises:
        InvalidArgumentError: ``days`` is not an int >= 1.
    """
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise InvalidArgumentError("days", f"must be an int >= 1, not {days!r}")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        return max(today - timedelta(days=days - 1), MIN_TIMESTAMP)
    except OverflowError:  # more days than the calendar holds: all of them
        return MIN_TIMESTAMP


def _day(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def read_stats(tx: Tx, since: datetime) -> StoreStats:
    """Read the store's numbers; ``days`` counts activity from ``since`` on."""
    sessions, users, messages, responses, first, last = tx.rows(_sql.STATS_TOTALS, {})[0]
    documents = tx.rows(_sql.COUNT_DOCUMENTS, {})[0][0]
    pass_rates = [
        SeedPassRate(seed_id=seed_id, evaluated=evaluated, passed=passed)
        for seed_id, evaluated, passed in tx.rows(_sql.STATS_PASS_RATES, {})
    ]
    days = [
        DayActivity(day=_day(day), messages=day_messages, sessions=day_sessions, users=day_users)
        for day, day_messages, day_sessions, day_users in tx.rows(
            _sql.STATS_DAYS[tx.dialect], {"since": tx.time.bind(since)}
        )
    ]
    return StoreStats(
        sessions=sessions,
        users=users,
        messages=messages or 0,
        responses=responses or 0,
        documents=documents,
        first_activity_at=None if first is None else tx.time.read(first),
        last_activity_at=None if last is None else tx.time.read(last),
        pass_rates=pass_rates,
        days=days,
    )
