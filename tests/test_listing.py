"""Session listing (filters, paging, query plans) and tails, on real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestore import (
    AgentResponse,
    InvalidDataError,
    InvalidNameError,
    Session,
    SessionSummary,
    StateStore,
    UserMessage,
)
from statestore import _sql as statements
from statestore._rows import SQLITE_TIME
from statestore.models import SessionTail

from .test_store import T0, make_session, row_counts

USERS = ("alice", "bob")
PROJECTS = ("p1", "p2", None)


def summary_of(session: Session) -> SessionSummary:
    """Return the summary a listing should show for ``session``."""
    project = session.metadata.get("project_ids")
    return SessionSummary(
        id=session.id,
        user_id=session.user_id,
        message_count=len(session.user_messages),
        active_seed_id=session.active_seed_id,
        project_id=project if isinstance(project, str) else None,
        created_at=session.created_at,
        updated_at=session.updated_at,
    )


def newest_first(sessions: list[Session]) -> list[SessionSummary]:
    """Return the summaries of ``sessions`` in listing order: (updated_at, id) descending."""
    ordered = sorted(sessions, key=lambda s: (s.updated_at, s.id), reverse=True)
    return [summary_of(session) for session in ordered]


def mixed_sessions(count: int = 18) -> list[Session]:
    """Return sessions of two users and three projects (one none), with updated_at ties.

    Ids do not follow update order, so ties are broken by id, not by save order.
    """
    sessions = []
    for index in range(count):
        session = Session(id=f"s{(index * 7) % count:02d}", user_id=USERS[index % 2], created_at=T0)
        project = PROJECTS[index % 3]
        if project is not None:
            session.metadata["project_ids"] = project
        session.updated_at = T0 + timedelta(minutes=(index * 5) % 4)
        sessions.append(session)
    return sessions


async def save_all(store: StateStore, sessions: list[Session]) -> None:
    """Save every session, concurrently (the store group-commits them)."""
    await asyncio.gather(*(store.save_session(session) for session in sessions))


async def walk_pages(store: StateStore, limit: int, **filters: Any) -> list[list[SessionSummary]]:
    """Return every page of a listing, each fetched after the previous page's last summary."""
    pages: list[list[SessionSummary]] = []
    after: SessionSummary | None = None
    for _ in range(10_000):  # a broken cursor must fail the test, not hang it
        page = await store.list_sessions(limit=limit, after=after, **filters)
        if not page:
            return pages
        pages.append(page)
        after = page[-1]
    raise AssertionError("paging never reached an empty page")


# -- filters ----------------------------------------------------------------------------

CUTOFF = T0 + timedelta(minutes=2)

FILTER_CASES = [
    pytest.param({}, lambda s: True, id="no-filter"),
    pytest.param({"user_id": "alice"}, lambda s: s.user_id == "alice", id="user"),
    pytest.param({"user_id": "carol"}, lambda s: False, id="unknown-user"),
    pytest.param(
        {"project_id": "p1"}, lambda s: s.metadata.get("project_ids") == "p1", id="project"
    ),
    pytest.param(
        {"user_id": "bob", "project_id": "p2"},
        lambda s: s.user_id == "bob" and s.metadata.get("project_ids") == "p2",
        id="user-and-project",
    ),
    pytest.param({"updated_before": CUTOFF}, lambda s: s.updated_at < CUTOFF, id="updated-before"),
    pytest.param(
        {"updated_before": CUTOFF.astimezone(timezone(timedelta(hours=-7)))},
        lambda s: s.updated_at < CUTOFF,
        id="updated-before-other-zone",
    ),
    pytest.param(
        {"user_id": "alice", "project_id": "p1", "updated_before": CUTOFF},
        lambda s: (
            s.user_id == "alice" and s.metadata.get("project_ids") == "p1" and s.updated_at < CUTOFF
        ),
        id="user-project-updated-before",
    ),
]


@pytest.mark.parametrize(("filters", "matches"), FILTER_CASES)
async def test_filters_select_matching_sessions_newest_first(
    store: StateStore, filters: dict[str, Any], matches: Callable[[Session], bool]
) -> None:
    """A filtered listing holds exactly the matching sessions, (updated_at, id) descending."""
    sessions = mixed_sessions()
    await save_all(store, sessions)

    listed = await store.list_sessions(**filters)

    assert listed == newest_first([s for s in sessions if matches(s)])


async def test_updated_before_is_strict(store: StateStore) -> None:
    """A session updated exactly at updated_before is left out; a microsecond later, it is in."""
    session = make_session(updated_at=T0)
    await store.save_session(session)

    assert await store.list_sessions(updated_before=T0) == []
    assert await store.list_sessions(updated_before=T0 + timedelta(microseconds=1)) == [
        summary_of(session)
    ]


async def test_project_filter_follows_the_latest_save(store: StateStore) -> None:
    """A session moved to another project lists under the new project only."""
    session = make_session()
    session.set_metadata("project_ids", "p1")
    await store.save_session(session)
    session.set_metadata("project_ids", "p2")
    await store.save_session(session)

    assert await store.list_sessions(project_id="p1") == []
    assert await store.list_sessions(project_id="p2") == [summary_of(session)]


# -- paging -----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 17, 18, 50], ids=lambda limit: f"limit-{limit}")
async def test_pages_walk_every_session_once_in_listing_order(
    store: StateStore, limit: int
) -> None:
    """Walking pages by their last summary lists every session once, as the unpaged listing."""
    await save_all(store, mixed_sessions())
    unpaged = await store.list_sessions()

    pages = await walk_pages(store, limit)

    assert [summary for page in pages for summary in page] == unpaged
    assert all(len(page) == limit for page in pages[:-1])
    assert 0 < len(pages[-1]) <= limit


async def test_pages_walk_sessions_that_all_share_updated_at(store: StateStore) -> None:
    """Pages break updated_at ties by id, so a page boundary inside a tie loses nothing."""
    sessions = [Session(id=f"tie-{index:02d}", user_id="u", created_at=T0) for index in range(9)]
    await save_all(store, sessions)

    pages = await walk_pages(store, 2)

    assert [summary for page in pages for summary in page] == newest_first(sessions)


@pytest.mark.parametrize(
    "filters",
    [
        {"user_id": "alice"},
        {"project_id": "p2"},
        {"user_id": "bob", "updated_before": CUTOFF},
    ],
    ids=["user", "project", "user-updated-before"],
)
async def test_pages_of_a_filtered_listing_equal_the_unpaged_listing(
    store: StateStore, filters: dict[str, Any]
) -> None:
    """Paging with a filter yields the filtered listing, each session once, in order."""
    await save_all(store, mixed_sessions())
    unpaged = await store.list_sessions(**filters)

    pages = await walk_pages(store, 2, **filters)

    assert [summary for page in pages for summary in page] == unpaged
    assert unpaged  # the case must exercise something


async def test_after_a_deleted_session_still_pages_on(store: StateStore) -> None:
    """A cursor whose session was deleted since still returns the sessions listed after it."""
    sessions = mixed_sessions()
    await save_all(store, sessions)
    unpaged = await store.list_sessions()
    first_page = await store.list_sessions(limit=4)
    await store.delete_session(first_page[-1].id)

    rest = await store.list_sessions(after=first_page[-1])

    assert rest == unpaged[4:]


def _listing_plans() -> st.SearchStrategy[tuple[list[tuple[str, int]], int]]:
    """Sessions as (id, minute offset) with many ties, and a page size."""
    ids = st.lists(st.text(alphabet="abcd", min_size=1, max_size=3), max_size=14, unique=True)
    return st.tuples(
        ids.flatmap(
            lambda names: st.tuples(
                *(st.tuples(st.just(name), st.integers(0, 3)) for name in names)
            ).map(list)
        ),
        st.integers(1, 5),
    )


async def open_store(path: Path) -> StateStore:
    """Open a store (a coroutine, for asyncio.Runner.run)."""
    return await StateStore.open(path)


def test_paging_property_lists_every_session_once_in_order(db_path: Path) -> None:
    """For any sessions (ties included) and page size, pages concatenate to the listing."""
    with asyncio.Runner() as runner:
        store = runner.run(open_store(db_path))
        try:

            @settings(max_examples=30, deadline=None)
            @given(plan=_listing_plans())
            def check(plan: tuple[list[tuple[str, int]], int]) -> None:
                placed, limit = plan
                sessions = []
                for name, minutes in placed:
                    session = Session(id=name, user_id="u", created_at=T0)
                    session.updated_at = T0 + timedelta(minutes=minutes)
                    sessions.append(session)

                async def listing() -> tuple[list[SessionSummary], list[SessionSummary]]:
                    for summary in await store.list_sessions():
                        await store.delete_session(summary.id)
                    await save_all(store, sessions)
                    pages = await walk_pages(store, limit)
                    return await store.list_sessions(), [s for page in pages for s in page]

                unpaged, paged = runner.run(listing())
                assert unpaged == newest_first(sessions)
                assert paged == unpaged

            check()
        finally:
            runner.run(store.close())


# -- bad arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        pytest.param({"limit": 0}, "limit", id="limit-zero"),
        pytest.param({"limit": -1}, "limit", id="limit-negative"),
        pytest.param({"limit": True}, "limit", id="limit-bool"),
        pytest.param({"limit": "5"}, "limit", id="limit-str"),
        pytest.param({"limit": 2.0}, "limit", id="limit-float"),
        pytest.param({"after": "s01"}, "after", id="after-id-str"),
        pytest.param({"after": {"id": "s01", "updated_at": T0}}, "after", id="after-dict"),
        pytest.param({"after": Session(id="s01", user_id="u")}, "after", id="after-session"),
        pytest.param({"updated_before": datetime(2026, 3, 1, 12, 0)}, "updated_before", id="naive"),
        pytest.param({"updated_before": "2026-03-01"}, "updated_before", id="updated-before-str"),
        pytest.param({"user_id": 5}, "user_id", id="user-id-int"),
        pytest.param({"project_id": "p\x00"}, "project_id", id="project-id-nul"),
    ],
)
async def test_bad_listing_argument_is_rejected_by_name(
    store: StateStore, filters: dict[str, Any], field: str
) -> None:
    """A listing argument of the wrong kind raises InvalidDataError naming that argument."""
    await store.save_session(make_session())

    with pytest.raises(InvalidDataError, match=field) as caught:
        await store.list_sessions(**filters)

    assert caught.value.field == field


# -- summaries after saves --------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: s.add_user_message("one more"), id="append-message"),
        pytest.param(
            lambda s: s.add_agent_response(AgentResponse(content="late answer")),
            id="append-response-only",
        ),
        pytest.param(lambda s: s.user_messages.clear(), id="clear-messages"),
        pytest.param(lambda s: s.user_messages.pop(0), id="drop-first-message"),
        pytest.param(lambda s: s.set_metadata("project_ids", "p9"), id="change-project"),
        pytest.param(lambda s: s.set_metadata("project_ids", ["p1"]), id="project-becomes-list"),
        pytest.param(lambda s: s.metadata.pop("project_ids"), id="remove-project"),
        pytest.param(lambda s: s.set_active_seed("seed-new"), id="change-seed"),
        pytest.param(lambda s: s.set_active_seed(None), id="clear-seed"),
        pytest.param(lambda s: setattr(s, "user_id", "someone-else"), id="change-user"),
    ],
)
async def test_summary_stays_exact_after_a_changing_save(
    store: StateStore, change: Callable[[Session], object]
) -> None:
    """After a loaded session is changed and saved, its summary matches the new state."""
    original = make_session(messages=3)
    original.set_active_seed("seed-a")
    original.set_metadata("project_ids", "p1")
    await store.save_session(original)
    session = await store.load_session(original.id)
    assert session is not None

    change(session)
    await store.save_session(session)

    assert await store.list_sessions() == [summary_of(session)]


async def test_summary_stays_exact_after_update_session_with(store: StateStore) -> None:
    """update_session_with keeps the summary's counts, project and seed in step."""
    session = make_session(messages=2)
    await store.save_session(session)

    def change(current: Session) -> None:
        current.add_user_message("via update")
        current.set_metadata("project_ids", "p3")
        current.set_active_seed("seed-u")

    updated = await store.update_session_with(session.id, change)

    assert updated is not None
    assert await store.list_sessions() == [summary_of(updated)]


# -- query plans ------------------------------------------------------------------------

# The conditions a listing filters by, copied from statestore._sql (a test below checks they
# are still there), joined as statestore._sql.session_summaries joins them.
USER_CONDITION = "user_id = :user_id"
PROJECT_CONDITION = "project_id = :project_id"
AFTER_CONDITION = "(updated_at, id) < (:after_updated_at, :after_id)"
BEFORE_CONDITION = "updated_at < :updated_before"

CURSOR = {"after_updated_at": SQLITE_TIME.bind(T0 + timedelta(minutes=75)), "after_id": "s0150"}


FILTER_OF = {
    USER_CONDITION: "user_id",
    PROJECT_CONDITION: "project_id",
    AFTER_CONDITION: "after",
    BEFORE_CONDITION: "updated_before",
}


def test_plan_conditions_are_the_ones_list_sessions_builds() -> None:
    """The condition strings used for plans below are the ones each listing filter adds."""
    for condition, name in FILTER_OF.items():
        assert f"WHERE {condition} ORDER BY" in statements.session_summaries({name})


@pytest.fixture
async def populated_db(store: StateStore, db_path: Path) -> Path:
    """Return the path of a database holding 300 sessions of 10 users and 5 projects."""
    sessions = []
    for index in range(300):
        session = make_session(f"user-{index % 10}", messages=1)
        session.id = f"s{index:04d}"
        session.metadata["project_ids"] = f"project-{index % 5}"
        session.updated_at = T0 + timedelta(minutes=index // 2)
        sessions.append(session)
    await save_all(store, sessions)
    return db_path


def query_plan(db_path: Path, statement: str, params: dict[str, Any]) -> list[str]:
    """Return the detail lines of SQLite's plan for ``statement``."""
    with sqlite3.connect(db_path) as connection:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
    return [row[3] for row in rows]


def summaries_statement(conditions: list[str]) -> str:
    """Return the SQL list_sessions runs for these conditions and a page of 50."""
    given = {FILTER_OF[condition] for condition in conditions} | {"limit"}
    return statements.session_summaries(given).replace(":limit", "50")


@pytest.mark.parametrize(
    ("conditions", "params"),
    [
        pytest.param([], {}, id="newest-50"),
        pytest.param([USER_CONDITION], {"user_id": "user-3"}, id="user"),
        pytest.param([PROJECT_CONDITION], {"project_id": "project-2"}, id="project"),
        pytest.param([AFTER_CONDITION], CURSOR, id="after-cursor"),
        pytest.param(
            [BEFORE_CONDITION],
            {"updated_before": CURSOR["after_updated_at"]},
            id="updated-before",
        ),
        pytest.param(
            [USER_CONDITION, AFTER_CONDITION], {"user_id": "user-3", **CURSOR}, id="user-after"
        ),
        pytest.param(
            [PROJECT_CONDITION, AFTER_CONDITION],
            {"project_id": "project-2", **CURSOR},
            id="project-after",
        ),
    ],
)
def test_listing_plan_uses_an_index_and_no_sort(
    populated_db: Path, conditions: list[str], params: dict[str, Any]
) -> None:
    """A listing query is served in order by an index: no bare table scan, no temp sort."""
    plan = query_plan(populated_db, summaries_statement(conditions), params)

    assert any("USING INDEX" in line or "USING COVERING INDEX" in line for line in plan), plan
    assert not any(line.startswith("SCAN sessions") and "INDEX" not in line for line in plan), plan
    assert not any("USE TEMP B-TREE" in line for line in plan), plan


@pytest.mark.parametrize(
    "statement",
    [statements.SELECT_MESSAGES, statements.SELECT_RESPONSES],
    ids=["messages", "responses"],
)
def test_child_rows_are_read_by_primary_key(populated_db: Path, statement: str) -> None:
    """Messages and responses are read through their (session_id, position) key, in order."""
    plan = query_plan(populated_db, statement, {"session_id": "s0007", "start": 0})

    assert any("sqlite_autoindex" in line or "PRIMARY KEY" in line for line in plan), plan
    assert not any("USE TEMP B-TREE" in line for line in plan), plan


# -- tails ------------------------------------------------------------------------------


def conversation(messages: int, responses: int) -> Session:
    """Return a session with ``messages`` user messages and ``responses`` agent responses."""
    session = Session(id="talk", user_id="talker", created_at=T0)
    for index in range(messages):
        session.user_messages.append(
            UserMessage(content=f"m{index}", timestamp=T0 + timedelta(seconds=index))
        )
    for index in range(responses):
        session.agent_responses.append(
            AgentResponse(
                content=f"r{index}",
                seed_id="seed",
                evaluation_passed=index % 2 == 0,
                timestamp=T0 + timedelta(seconds=index, milliseconds=500),
            )
        )
    if session.user_messages:  # an unmodelled field must come back in the tail too
        session.user_messages[-1] = UserMessage(
            content="last", timestamp=T0 + timedelta(hours=1), mood="curious"
        )
    session.updated_at = T0 + timedelta(hours=2)
    return session


async def test_tail_returns_last_items_with_their_positions(store: StateStore) -> None:
    """A tail of 2 from 5 messages and 3 responses starts at positions 3 and 1."""
    await store.save_session(conversation(5, 3))

    tail = await store.load_tail("talk", 2)

    assert tail is not None
    assert (tail.session_id, tail.user_id) == ("talk", "talker")
    assert (tail.message_count, tail.response_count) == (5, 3)
    assert (tail.message_start, tail.response_start) == (3, 1)
    assert [m.content for m in tail.user_messages] == ["m3", "last"]
    assert [r.content for r in tail.agent_responses] == ["r1", "r2"]


async def test_tail_longer_than_history_returns_everything(store: StateStore) -> None:
    """A count beyond both histories returns every item, starting at position 0."""
    session = conversation(4, 2)
    await store.save_session(session)

    tail = await store.load_tail("talk", 10)

    assert tail is not None
    assert (tail.message_start, tail.response_start) == (0, 0)
    assert tail.user_messages == session.user_messages
    assert tail.agent_responses == session.agent_responses


async def test_tail_of_zero_is_empty(store: StateStore) -> None:
    """A count of 0 returns no items, with the full counts and starts at the ends."""
    await store.save_session(conversation(4, 2))

    tail = await store.load_tail("talk", 0)

    assert tail is not None
    assert (tail.user_messages, tail.agent_responses) == ([], [])
    assert (tail.message_count, tail.response_count) == (4, 2)
    assert (tail.message_start, tail.response_start) == (4, 2)


async def test_tail_of_missing_session_is_none(store: StateStore) -> None:
    """A tail of a session that was never saved is None."""
    assert await store.load_tail("missing", 3) is None


@pytest.mark.parametrize("count", [-1, True, "3", 2.0], ids=["negative", "bool", "str", "float"])
async def test_bad_tail_count_is_rejected(store: StateStore, count: object) -> None:
    """A count that is not an int >= 0 raises InvalidDataError naming count."""
    await store.save_session(conversation(2, 2))

    with pytest.raises(InvalidDataError, match="count") as caught:
        await store.load_tail("talk", count)  # type: ignore[arg-type]

    assert caught.value.field == "count"


async def test_tail_bad_session_id_is_rejected(store: StateStore) -> None:
    """A session id breaking the naming rules raises InvalidNameError."""
    with pytest.raises(InvalidNameError, match="session id"):
        await store.load_tail("a/b", 1)


@pytest.mark.parametrize(
    ("messages", "responses", "count"),
    [
        pytest.param(5, 3, 2, id="more-messages"),
        pytest.param(2, 6, 3, id="more-responses"),
        pytest.param(4, 0, 3, id="no-responses"),
        pytest.param(0, 0, 3, id="empty-session"),
        pytest.param(3, 3, 3, id="count-equals-history"),
        pytest.param(7, 4, 5, id="count-between-lengths"),
        pytest.param(3, 1, 0, id="count-zero"),
    ],
)
async def test_tail_equals_slices_of_the_full_session(
    store: StateStore, messages: int, responses: int, count: int
) -> None:
    """A tail's items equal the full session's lists sliced from the tail's starts."""
    await store.save_session(conversation(messages, responses))
    full = await store.load_session("talk")

    tail = await store.load_tail("talk", count)

    assert full is not None
    assert tail is not None
    assert tail.message_start == max(0, messages - count)
    assert tail.response_start == max(0, responses - count)
    assert tail.user_messages == full.user_messages[tail.message_start :]
    assert tail.agent_responses == full.agent_responses[tail.response_start :]


async def test_tail_sees_appended_items_after_a_delta_save(store: StateStore) -> None:
    """Items appended to a loaded session and saved show in the next tail."""
    await store.save_session(conversation(3, 3))
    session = await store.load_session("talk")
    assert session is not None
    session.add_user_message("newest")
    await store.save_session(session)

    tail = await store.load_tail("talk", 1)

    assert tail is not None
    assert tail.message_start == 3
    assert tail.user_messages == session.user_messages[3:]


async def test_a_tail_cannot_be_saved_as_a_session(store: StateStore, db_path: Path) -> None:
    """save_session refuses a SessionTail with InvalidDataError and stores nothing."""
    await store.save_session(conversation(5, 3))
    tail = await store.load_tail("talk", 2)
    assert isinstance(tail, SessionTail)
    before = row_counts(db_path)
    stored = await store.load_session("talk")

    with pytest.raises(InvalidDataError, match="session"):
        await store.save_session(tail)  # type: ignore[arg-type]

    assert row_counts(db_path) == before
    assert await store.load_session("talk") == stored


async def test_iter_sessions_yields_the_listing_a_page_at_a_time(store: StateStore) -> None:
    """iter_sessions yields exactly list_sessions' order, fetching page_size at a time."""
    now = datetime.now(UTC)
    for index in range(23):
        session = Session(id=f"s{index:02d}", user_id=f"u{index % 2}", created_at=now)
        session.updated_at = now - timedelta(minutes=index // 3)  # ties of three
        await store.save_session(session)
    pages: list[int] = []
    list_sessions = store.list_sessions

    async def counting_list_sessions(**options: Any) -> list[SessionSummary]:
        page = await list_sessions(**options)
        pages.append(len(page))
        return page

    store.list_sessions = counting_list_sessions  # type: ignore[method-assign]
    walked = [summary async for summary in store.iter_sessions(page_size=5)]
    mine = [summary async for summary in store.iter_sessions(user_id="u1", page_size=4)]
    del store.list_sessions

    assert walked == await store.list_sessions()
    assert mine == await store.list_sessions(user_id="u1")
    assert max(pages) <= 5
    assert pages[:5] == [5, 5, 5, 5, 3]
