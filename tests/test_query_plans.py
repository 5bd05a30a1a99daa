"""The common analytical queries use an index, not a full scan, on SQLite and PostgreSQL.

Listing plans (per user, per project, pages) and per-session reads on SQLite are in
``test_listing``; here are the time-range filters and the analytics group-bys, and all of
them on PostgreSQL, where the planner only picks an index once a table is big enough to
make it worth it (the tests fill 5,000 sessions and ANALYZE first).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, text

from statestore import AgentResponse, Session, StateStore, UserMessage, _sql, migrate
from statestore._engine import create_engine
from statestore._rows import SQLITE_TIME
from tests.conftest import own_database, run_apart
from tests.test_listing import T0

SINCE = T0 + timedelta(hours=1)
UNTIL = T0 + timedelta(hours=2)

TIME_RANGES = {
    "messages": "SELECT count(*) FROM messages WHERE created_at >= :since AND created_at < :until",
    "responses": (
        "SELECT count(*) FROM responses WHERE created_at >= :since AND created_at < :until"
    ),
    "sessions": "SELECT id FROM sessions WHERE created_at >= :since AND created_at < :until",
}


# -- SQLite ---------------------------------------------------------------------------------


@pytest.fixture
async def analysed_db(db_path: Path) -> Path:
    """Return a SQLite file of 200 sessions with messages and responses, ANALYZEd."""
    async with StateStore.open(db_path) as store:
        for index in range(200):
            at = T0 + timedelta(minutes=index)
            session = Session(
                id=f"s{index:04d}",
                user_id=f"user-{index % 10}",
                active_seed_id=f"seed-{index % 20}",
                created_at=at,
            )
            for turn in range(3):
                session.user_messages.append(UserMessage(content="q", timestamp=at))
                session.agent_responses.append(
                    AgentResponse(
                        content="a",
                        seed_id=f"seed-{turn}",
                        phase_reached="execute",
                        evaluation_passed=turn % 2 == 0,
                        timestamp=at,
                    )
                )
            await store.save_session(session)
    with sqlite3.connect(db_path) as connection:
        connection.execute("ANALYZE")
    return db_path


def sqlite_plan(db_path: Path, statement: str, params: dict[str, Any]) -> list[str]:
    """Return the detail lines of SQLite's plan for ``statement``."""
    with sqlite3.connect(db_path) as connection:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
    return [row[3] for row in rows]


@pytest.mark.parametrize("table", sorted(TIME_RANGES))
def test_sqlite_time_ranges_search_the_created_at_index(analysed_db: Path, table: str) -> None:
    """A time-range filter on created_at searches that column's index."""
    params = {"since": SQLITE_TIME.bind(SINCE), "until": SQLITE_TIME.bind(UNTIL)}
    plan = sqlite_plan(analysed_db, TIME_RANGES[table], params)
    assert any(f"ix_{table}_created_at (created_at>? AND created_at<?)" in line for line in plan), (
        plan
    )


@pytest.mark.parametrize(
    ("statement", "index"),
    [
        pytest.param(
            "SELECT seed_id, count(*), sum(CASE WHEN evaluation_passed THEN 1 ELSE 0 END) "
            "FROM responses WHERE evaluation_passed IS NOT NULL GROUP BY seed_id",
            "ix_responses_seed_id_evaluation_passed",
            id="pass-rate-by-seed",
        ),
        pytest.param(
            "SELECT phase_reached, count(*) FROM responses GROUP BY phase_reached",
            "ix_responses_phase_reached",
            id="responses-by-phase",
        ),
        pytest.param(
            "SELECT id FROM sessions WHERE active_seed_id = 'seed-1'",
            "ix_sessions_active_seed_id",
            id="sessions-of-a-seed",
        ),
    ],
)
def test_sqlite_analytics_group_bys_read_an_index(
    analysed_db: Path, statement: str, index: str
) -> None:
    """Grouping by seed or phase reads a covering index, never the table, and sorts nothing."""
    plan = sqlite_plan(analysed_db, statement, {})
    assert any(index in line for line in plan), plan
    assert not any("USE TEMP B-TREE" in line for line in plan), plan


# -- PostgreSQL -------------------------------------------------------------------------------


_FILL = [
    """
    INSERT INTO sessions (id, user_id, project_id, message_count, response_count, created_at,
                          updated_at, metadata, version, state_token)
    SELECT 's' || n, 'user-' || (n % 500), 'project-' || (n % 20), 10, 10,
           {t0} + n * interval '1 minute', {t0} + n * interval '1 minute' + interval '5 minutes',
           '{}', 1, n
    FROM generate_series(1, 5000) AS n
    """,
    """
    INSERT INTO messages (session_id, position, content, created_at)
    SELECT 's' || n, p, 'question', {t0} + n * interval '1 minute' + p * interval '10 seconds'
    FROM generate_series(1, 5000) AS n, generate_series(0, 9) AS p
    """,
    """
    INSERT INTO responses (session_id, position, content, seed_id, phase_reached,
                           evaluation_passed, created_at)
    SELECT 's' || n, p, 'answer', 'seed-' || (p % 3), 'execute', p % 2 = 0,
           {t0} + n * interval '1 minute' + p * interval '10 seconds' + interval '5 seconds'
    FROM generate_series(1, 5000) AS n, generate_series(0, 9) AS p
    """,
]
FILL = [statement.replace("{t0}", "CAST(:t0 AS timestamptz)") for statement in _FILL]


def pg_index_scans(plan: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """Return every node of a JSON plan as (node type, relation, index)."""
    nodes = [(plan["Node Type"], plan.get("Relation Name"), plan.get("Index Name"))]
    for child in plan.get("Plans", []):
        nodes.extend(pg_index_scans(child))
    return nodes


async def fill(url: URL) -> None:
    """Migrate a new database and fill it with 5,000 sessions of 10 exchanges, ANALYZEd."""
    await migrate.upgrade(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in FILL:
                await connection.execute(text(statement), {"t0": T0})
        async with engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.exec_driver_sql("ANALYZE sessions, messages, responses")
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def filled_postgresql() -> Iterator[URL]:
    """Yield a database of its own, filled once for the module's plan tests; drop it after."""
    with own_database("statestore_plans") as url:
        run_apart(fill(url))
        yield url


async def pg_plan(
    url: URL, statement: str, params: dict[str, Any]
) -> list[tuple[str, str | None, str | None]]:
    """Return the nodes of PostgreSQL's plan for ``statement``."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(text(f"EXPLAIN (FORMAT JSON) {statement}"), params)
            document = result.scalar_one()
    finally:
        await engine.dispose()
    plan = json.loads(document) if isinstance(document, str) else document
    return pg_index_scans(plan[0]["Plan"])


PG_QUERIES = [
    pytest.param(
        _sql.session_summaries({"user_id", "limit"}).replace(":limit", "50"),
        {"user_id": "user-7"},
        "ix_sessions_user_id_updated_at_id",
        id="per-user-listing",
    ),
    pytest.param(
        _sql.session_summaries({"limit"}).replace(":limit", "50"),
        {},
        "ix_sessions_updated_at_id",
        id="newest-50",
    ),
    pytest.param(
        _sql.SELECT_MESSAGES,
        {"session_id": "s1234", "start": 0},
        "pk_messages",
        id="per-session-messages",
    ),
    pytest.param(
        _sql.SELECT_RESPONSES,
        {"session_id": "s1234", "start": 0},
        "pk_responses",
        id="per-session-responses",
    ),
    *(
        pytest.param(
            TIME_RANGES[table],
            {"since": SINCE + timedelta(days=3), "until": UNTIL + timedelta(days=3)},
            f"ix_{table}_created_at",
            id=f"time-range-{table}",
        )
        for table in sorted(TIME_RANGES)
    ),
]


@pytest.mark.postgresql
@pytest.mark.parametrize(("statement", "params", "index"), PG_QUERIES)
async def test_postgresql_plans_use_the_index(
    filled_postgresql: URL, statement: str, params: dict[str, Any], index: str
) -> None:
    """On 5,000 sessions, PostgreSQL serves the query from its index, scanning no table."""
    nodes = await pg_plan(filled_postgresql, statement, params)
    assert any(found_index == index for _, _, found_index in nodes), nodes
    assert not any(node_type == "Seq Scan" for node_type, _, _ in nodes), nodes
