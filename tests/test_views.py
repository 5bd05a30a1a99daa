"""The analytics views give exact numbers, the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from statestore import AgentResponse, Session, StateStore, UserMessage

T0 = datetime(2026, 3, 1, 23, 59, 59, 999_999, tzinfo=UTC)

GAPS = [
    pytest.param(timedelta(microseconds=250), id="250-microseconds"),
    pytest.param(timedelta(microseconds=2), id="across-midnight-by-2-microseconds"),
    pytest.param(timedelta(days=2, seconds=3, microseconds=1), id="two-days"),
]


@pytest.mark.parametrize("gap", GAPS)
async def test_seconds_are_exact_to_the_microsecond(store: StateStore, gap: timedelta) -> None:
    """response_seconds and duration_seconds equal the gap between the timestamps exactly."""
    session = Session(id="s", user_id="u", created_at=T0, updated_at=T0 + gap)
    session.user_messages.append(UserMessage(content="q", timestamp=T0))
    session.agent_responses.append(AgentResponse(content="a", timestamp=T0 + gap))
    await store.save_session(session)
    async with store.engine.connect() as connection:
        response_seconds = (
            await connection.execute(text("SELECT response_seconds FROM session_exchanges"))
        ).scalar_one()
        duration_seconds = (
            await connection.execute(text("SELECT duration_seconds FROM session_overview"))
        ).scalar_one()
    expected = gap.total_seconds()
    assert response_seconds == pytest.approx(expected, abs=1e-9)
    assert duration_seconds == pytest.approx(expected, abs=1e-9)
