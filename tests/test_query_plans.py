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

from statestore import AgentResponse, Session, StateStore, UserMessage, _search, _sql, migrate
from statestore._engine import create_engine
from statestore._listing import SessionFilter
from statestore._rows import POSTGRESQL_TIME, SQLITE_TIME
from statestore._search import parse_query
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
                active_persona_id=f"persona-{index % 7}" if index % 2 else None,
                metadata={"tier": ["gold", "silver", "bronze"][index % 3]},
                created_at=at,
            )
            if index % 10 == 9:
                session.parent_session_id = f"s{index - 1:04d}"
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
            "ix_sessions_active_seed_id_updated_at_id",
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


# Each listing filter, as list_sessions builds it (page of 50), with values the data holds.
LISTING_FILTERS = {
    "seed": SessionFilter(active_seed_id="seed-3"),
    "persona": SessionFilter(active_persona_id="persona-3"),
    "forks-of": SessionFilter(forks_of="s0008"),
    "created-range": SessionFilter(created_after=SINCE, created_before=UNTIL),
    "updated-after": SessionFilter(updated_after=UNTIL),
    "user-and-seed": SessionFilter(user_id="user-3", active_seed_id="seed-3"),
    "metadata": SessionFilter(metadata=(("tier", "gold"),)),
    "user-and-metadata": SessionFilter(user_id="user-3", metadata=(("tier", "gold"),)),
}

LISTING_INDEXES = {
    "seed": "ix_sessions_active_seed_id_updated_at_id",
    "persona": "ix_sessions_active_persona_id_updated_at_id",
    "forks-of": "ix_sessions_parent_session_id_updated_at_id",
    "created-range": "ix_sessions_created_at",
    "updated-after": "ix_sessions_updated_at_id",
    "user-and-seed": "ix_sessions_",
    "metadata": "ix_sessions_updated_at_id",
    "user-and-metadata": "ix_sessions_user_id_updated_at_id",
}
"""The index each filter's listing reads. Seed, persona and parent indexes end in
(updated_at, id), as the user's does: a page reads its rows in order. A creation-time
range picks its rows from created_at and sorts them; metadata has no index: it is checked
row by row along the index of the other filters, newest first, until a page is full
(documented in the README)."""

SORTED_BY_UPDATE = {"created-range"}


@pytest.mark.parametrize("name", sorted(LISTING_FILTERS))
def test_sqlite_listing_filters_read_their_index(analysed_db: Path, name: str) -> None:
    """Every listing filter reads an index, never the whole table; only the filters whose
    index holds no update time sort, and then only the rows it gave."""
    filters = LISTING_FILTERS[name]
    params = filters.params("sqlite", SQLITE_TIME) | {"limit": 50}
    plan = sqlite_plan(analysed_db, filters.statement("sqlite", 50, after=False), params)
    assert any(LISTING_INDEXES[name] in line for line in plan), plan
    assert not any(line.startswith("SCAN sessions") and "INDEX" not in line for line in plan), plan
    assert any("USE TEMP B-TREE" in line for line in plan) == (name in SORTED_BY_UPDATE), plan


def test_sqlite_search_reads_the_index_newest_first(analysed_db: Path) -> None:
    """A search walks the FTS5 index in entry order (no sort) and reads each hit's text by
    its key."""
    statement, params = search_statement("sqlite", user_id=None)
    plan = sqlite_plan(analysed_db, statement, params)
    assert any("VIRTUAL TABLE INDEX" in line for line in plan), plan
    assert not any("USE TEMP B-TREE" in line for line in plan), plan
    assert not any(line.startswith("SCAN") and "VIRTUAL" not in line for line in plan), plan


def test_sqlite_search_in_a_session_reads_that_sessions_entries(analysed_db: Path) -> None:
    """With a session id, the search reads that session's entries by their key and checks
    each against the words, rather than walking every match in the store."""
    statement, params = search_statement("sqlite", session_id="s0007")
    plan = sqlite_plan(analysed_db, statement, params)
    assert any("search_entries_1 (session_id=?)" in line for line in plan), plan
    assert any("VIRTUAL TABLE INDEX 0:=" in line for line in plan), plan


def search_statements(dialect: str, **filters: str | None) -> list[tuple[str, dict[str, Any]]]:
    """The SQL and parameters ``search_messages("question")`` runs on ``dialect`` when it
    finds nothing (on PostgreSQL: the newest entries first, then every match)."""
    captured: list[tuple[str, dict[str, Any]]] = []

    class Capture:
        """A transaction that records the search's statements instead of running them."""

        def __init__(self) -> None:
            self.dialect = dialect
            self.time = SQLITE_TIME

        def rows(self, sql: str, params: dict[str, Any]) -> list[Any]:
            captured.append((sql, params))
            return []

    _search.search(
        Capture(),  # type: ignore[arg-type]
        parse_query("question"),
        user_id=filters.get("user_id"),
        session_id=filters.get("session_id"),
        after=None,
        limit=20,
    )
    return captured


def search_statement(dialect: str, **filters: str | None) -> tuple[str, dict[str, Any]]:
    """The last statement of :func:`search_statements`: the one that finds every match."""
    return search_statements(dialect, **filters)[-1]


# -- PostgreSQL -------------------------------------------------------------------------------


_FILL = [
    """
    INSERT INTO sessions (id, user_id, project_id, active_seed_id, active_persona_id,
                          parent_session_id, message_count, response_count, created_at,
                          updated_at, metadata, version, state_token)
    SELECT 's' || n, 'user-' || (n % 500), 'project-' || (n % 20), 'seed-' || (n % 200),
           CASE WHEN n % 2 = 1 THEN 'persona-' || (n % 300) END,
           CASE WHEN n % 10 = 9 THEN 's' || (n - 1) END, 10, 10,
           {t0} + n * interval '1 minute', {t0} + n * interval '1 minute' + interval '5 minutes',
           CAST('{"tier": "' || (ARRAY['gold', 'silver', 'bronze'])[n % 3 + 1] || '"}' AS json),
           1, n
    FROM generate_series(1, 5000) AS n
    """,
    """
    INSERT INTO messages (session_id, position, content, created_at)
    SELECT 's' || n, p, 'question about topic' || (n % 997) || ' ' || md5(n::text || p::text),
           {t0} + n * interval '1 minute' + p * interval '10 seconds'
    FROM generate_series(1, 5000) AS n, generate_series(0, 9) AS p
    """,
    """
    INSERT INTO responses (session_id, position, content, seed_id, phase_reached,
                           evaluation_passed, created_at)
    SELECT 's' || n, p, 'answer on topic' || (n % 991) || ' ' || md5(p::text || n::text),
           'seed-' || (p % 3), 'execute', p % 2 = 0,
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
            await connection.exec_driver_sql(
                "ANALYZE sessions, messages, responses, search_entries"
            )
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


PG_LISTING_FILTERS = {
    "seed": SessionFilter(active_seed_id="seed-3"),
    "persona": SessionFilter(active_persona_id="persona-3"),
    "forks-of": SessionFilter(forks_of="s8"),
    "created-range": SessionFilter(
        created_after=SINCE + timedelta(days=1), created_before=UNTIL + timedelta(days=1)
    ),
    "updated-after": SessionFilter(updated_after=T0 + timedelta(minutes=4900)),
    "user-and-metadata": SessionFilter(user_id="user-3", metadata=(("tier", "gold"),)),
}
PG_LISTING_INDEXES = {
    **LISTING_INDEXES,
    "created-range": "ix_sessions_created_at",
}


@pytest.mark.postgresql
@pytest.mark.parametrize("name", sorted(PG_LISTING_FILTERS))
async def test_postgresql_listing_filters_read_their_index(
    filled_postgresql: URL, name: str
) -> None:
    """On 5,000 sessions each listing filter reads its index, scanning no table."""
    filters = PG_LISTING_FILTERS[name]
    statement = filters.statement("postgresql", 50, after=False).replace(":limit", "50")
    params = filters.params("postgresql", POSTGRESQL_TIME)
    nodes = await pg_plan(filled_postgresql, statement, params)
    assert any(index == PG_LISTING_INDEXES[name] for _, _, index in nodes), nodes
    assert not any(node_type == "Seq Scan" for node_type, _, _ in nodes), nodes


@pytest.mark.postgresql
async def test_postgresql_search_in_a_session_reads_its_entries(filled_postgresql: URL) -> None:
    """With a session id, PostgreSQL reads that session's entries by their key."""
    statement, params = search_statement("postgresql", session_id="s1234")
    nodes = await pg_plan(filled_postgresql, statement.replace(":limit", "20"), params)
    assert any(found == "uq_search_entries_session_id_kind_position" for *_, found in nodes), nodes
    assert not any(node_type == "Seq Scan" for node_type, _, _ in nodes), nodes


@pytest.mark.postgresql
@pytest.mark.parametrize("term", ["question", "nowhere"], ids=["common-term", "rare-term"])
async def test_postgresql_search_reads_the_newest_entries_then_the_gin_index(
    filled_postgresql: URL, term: str
) -> None:
    """A search first walks the newest entries along the key (a common word fills its
    page there); a rare word's page is then asked of the GIN index."""
    (recent, recent_params), (every, every_params) = search_statements("postgresql")
    nodes = await pg_plan(
        filled_postgresql,
        recent.replace(":limit", "20").replace(":recent", str(_search.RECENT_ENTRIES)),
        {**recent_params, "term_0": term},
    )
    assert any(found == "pk_search_entries" for *_, found in nodes), nodes
    assert not any(node_type == "Seq Scan" for node_type, _, _ in nodes), nodes
    nodes = await pg_plan(
        filled_postgresql, every.replace(":limit", "20"), {**every_params, "term_0": term}
    )
    if term == "nowhere":  # a common word never gets here: the newest entries held a page
        assert any(found == "ix_search_entries_document" for *_, found in nodes), nodes
        assert not any(node_type == "Seq Scan" for node_type, _, _ in nodes), nodes


@pytest.mark.postgresql
@pytest.mark.parametrize(("statement", "params", "index"), PG_QUERIES)
async def test_postgresql_plans_use_the_index(
    filled_postgresql: URL, statement: str, params: dict[str, Any], index: str
) -> None:
    """On 5,000 sessions, PostgreSQL serves the query from its index, scanning no table."""
    nodes = await pg_plan(filled_postgresql, statement, params)
    assert any(found_index == index for _, _, found_index in nodes), nodes
    assert not any(node_type == "Seq Scan" for node_type, _, _ in nodes), nodes
