"""The analytics cookbook's queries give the right answers on known data, on every backend.

``docs/analytics.md`` is parsed here: each ``###`` question's first ``sql`` block runs on
SQLite (and on PostgreSQL unless a block marked ``-- PostgreSQL`` follows it) against the
sessions below, and its rows are compared with answers worked out by hand from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from statestore import AgentResponse, Session, StateStore, UserMessage

ROOT = Path(__file__).resolve().parents[1]
COOKBOOK = ROOT / "docs" / "analytics.md"
POSTGRESQL_MARK = "-- PostgreSQL"
TIME_ZONE_AWAY_FROM_UTC = "Pacific/Auckland"  # UTC+13 in March: UTC days and hours differ


@dataclass
class Recipe:
    """One question of the cookbook and its ``sql`` blocks, by dialect."""

    question: str
    shared: list[str] = field(default_factory=list)
    postgresql: list[str] = field(default_factory=list)

    def sql_for(self, backend: str) -> str:
        """Return the SQL to run on ``backend``: PostgreSQL's own block if there is one."""
        if backend == "postgresql" and self.postgresql:
            return self.postgresql[0]
        return self.shared[0]


def parse_cookbook(markdown: str) -> dict[str, Recipe]:
    """Return the cookbook's recipes by question (``sql`` blocks before any go to ``""``)."""
    recipes: dict[str, Recipe] = {}
    question = ""
    for match in re.finditer(r"^### ([^\n]+)$|^```sql\n(.*?)^```$", markdown, re.M | re.S):
        heading, block = match.groups()
        if heading is not None:
            question = heading.strip()
            assert question not in recipes, f"question asked twice: {question}"
            recipes[question] = Recipe(question)
            continue
        recipe = recipes.setdefault(question, Recipe(question))
        if block.startswith(POSTGRESQL_MARK + "\n"):
            recipe.postgresql.append(block)
        else:
            assert not recipe.postgresql, f"a shared block follows PostgreSQL's in {question!r}"
            recipe.shared.append(block)
    return recipes


RECIPES = parse_cookbook(COOKBOOK.read_text(encoding="utf-8"))


def at(moment: str) -> datetime:
    """Return the UTC moment written ``YYYY-MM-DD HH:MM:SS[.f]``."""
    return datetime.fromisoformat(moment).replace(tzinfo=UTC)


def stored(moment: str) -> str:
    """Return a UTC moment as a query returns it (SQLite's stored text)."""
    return at(moment).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(frozen=True)
class Spec:
    """A session of the known data set: its messages' times and its responses."""

    id: str
    user_id: str
    created: str
    metadata: dict[str, Any]
    seed: str | None = None
    persona: str | None = None
    asked: tuple[str, ...] = ()
    answered: tuple[tuple[str, str, str, bool | None], ...] = ()  # time, seed, phase, passed

    def session(self) -> Session:
        """Return the session, updated at its last message or response."""
        messages = [
            UserMessage(content=f"{self.id} question {position}", timestamp=at(moment))
            for position, moment in enumerate(self.asked)
        ]
        responses = [
            AgentResponse(
                content=f"{self.id} answer {position}",
                session_id=self.id,
                seed_id=seed,
                phase_reached=phase,
                evaluation_passed=passed,
                timestamp=at(moment),
            )
            for position, (moment, seed, phase, passed) in enumerate(self.answered)
        ]
        moments = [at(self.created), *(m.timestamp for m in messages)]
        moments += [r.timestamp for r in responses]
        return Session(
            id=self.id,
            user_id=self.user_id,
            user_messages=messages,
            agent_responses=responses,
            active_seed_id=self.seed,
            active_persona_id=self.persona,
            created_at=at(self.created),
            updated_at=max(moments),
            metadata=self.metadata,
        )


A, B, G = "seed-alpha", "seed-beta", "seed-gamma"
APOLLO, ZEPHYR = "proj-apollo", "proj-zephyr"

DATA_SET = [
    Spec(
        "s01",
        "alice",
        "2026-03-02 09:00:00",
        {"project_ids": APOLLO, "channel": "web", "stars": 5},
        A,
        "architect",
        asked=("2026-03-02 09:00:10", "2026-03-02 09:05:00", "2026-03-02 09:20:00"),
        answered=(
            ("2026-03-02 09:00:14", A, "discovery", True),
            ("2026-03-02 09:05:10.5", A, "design", True),
            ("2026-03-02 09:20:06", A, "build", False),
        ),
    ),
    Spec(
        "s02",
        "bob",
        "2026-03-02 14:30:00",
        {"project_ids": APOLLO, "channel": "slack", "stars": 1},
        B,
        "reviewer",
        asked=("2026-03-02 14:30:05", "2026-03-02 14:40:00", "2026-03-02 14:50:00"),
        answered=(
            ("2026-03-02 14:30:25", B, "discovery", False),
            ("2026-03-02 14:40:08", B, "design", True),
            ("2026-03-02 14:50:30", B, "build", True),
        ),
    ),
    Spec(  # late in the UTC day: already the next day in most of the world
        "s03",
        "alice",
        "2026-03-02 23:30:00",
        {"project_ids": ZEPHYR, "channel": "web", "stars": 3},
        A,
        "architect",
        asked=("2026-03-02 23:30:00", "2026-03-02 23:50:00"),
        answered=(
            ("2026-03-02 23:30:03", A, "discovery", True),
            ("2026-03-03 00:10:00", A, "design", None),  # not evaluated
        ),
    ),
    Spec(  # no project; its last message is still waiting
        "s04",
        "carol",
        "2026-03-03 10:00:00",
        {"channel": "api", "stars": 2},
        G,
        asked=("2026-03-03 10:00:00", "2026-03-03 10:01:00", "2026-03-03 10:05:00"),
        answered=(
            ("2026-03-03 10:00:02", G, "discovery", True),
            ("2026-03-03 10:01:30", G, "discovery", True),
        ),
    ),
    Spec(
        "s05",
        "bob",
        "2026-03-04 16:00:00",
        {"project_ids": ZEPHYR, "channel": "slack", "stars": 4},
        B,
        "reviewer",
        asked=(
            "2026-03-04 16:00:00",
            "2026-03-04 16:02:00",
            "2026-03-04 16:10:00",
            "2026-03-04 16:30:00",
        ),
        answered=(
            ("2026-03-04 16:00:12", B, "discovery", True),
            ("2026-03-04 16:02:04", B, "design", True),
            ("2026-03-04 16:10:09", B, "build", True),
            ("2026-03-04 16:30:05", B, "review", False),
        ),
    ),
    Spec(  # one message, never answered
        "s06",
        "dave",
        "2026-03-04 16:45:00",
        {"project_ids": APOLLO, "channel": "web"},
        A,
        asked=("2026-03-04 16:45:00",),
    ),
    Spec("s07", "carol", "2026-03-05 08:00:00", {}),  # empty
    Spec(  # a second response with no message at its position
        "s08",
        "alice",
        "2026-03-05 12:00:00",
        {"project_ids": ZEPHYR, "channel": "api"},
        G,
        "architect",
        asked=("2026-03-05 12:00:00",),
        answered=(
            ("2026-03-05 12:00:07", G, "discovery", False),
            ("2026-03-05 12:00:20", G, "design", False),
        ),
    ),
]


@dataclass(frozen=True)
class Case:
    """A recipe's parameters (times as UTC moments) and the rows it must return."""

    rows: list[tuple[Any, ...]]
    params: dict[str, Any] = field(default_factory=dict)


approx = pytest.approx

EXPECTED: dict[str, Case] = {
    "How many sessions start each day?": Case(
        [("2026-03-02", 3, 2), ("2026-03-03", 1, 1), ("2026-03-04", 2, 2), ("2026-03-05", 2, 2)]
    ),
    "How many users were active each day since a given day?": Case(
        [("2026-03-03", 1, 3), ("2026-03-04", 2, 5), ("2026-03-05", 1, 1)],
        {"since": at("2026-03-03 00:00:00")},
    ),
    "Which users are most active?": Case(
        [("bob", 2, 7), ("alice", 3, 6), ("carol", 2, 3)], {"top": 3}
    ),
    "What is the busiest hour of the day?": Case(
        [(16, 5), (9, 3), (10, 3), (14, 3), (23, 2), (12, 1)]
    ),
    "Which messages were sent in a time range?": Case(
        [
            ("s02", 0, "bob", stored("2026-03-02 14:30:05")),
            ("s02", 1, "bob", stored("2026-03-02 14:40:00")),
            ("s02", 2, "bob", stored("2026-03-02 14:50:00")),
            ("s03", 0, "alice", stored("2026-03-02 23:30:00")),
            ("s03", 1, "alice", stored("2026-03-02 23:50:00")),
        ],
        {"since": at("2026-03-02 14:00:00"), "until": at("2026-03-03 00:00:00")},
    ),
    "How many sessions does each project have?": Case(
        [(APOLLO, 3, 7, 6), (ZEPHYR, 3, 7, 8), (None, 2, 3, 2)]
    ),
    "What are a user's sessions, newest first?": Case(
        [
            ("s08", ZEPHYR, 1, 2, stored("2026-03-05 12:00:20")),
            ("s03", ZEPHYR, 2, 2, stored("2026-03-03 00:10:00")),
        ],
        {"user_id": "alice", "limit": 2},
    ),
    # Durations 1196, 1225, 2400, 300, 1805 and 20 seconds; s06 and s07 have no response.
    "How long do conversations run?": Case([(6, approx(6946 / 6), approx((1196 + 1225) / 2))]),
    "Which sessions have no agent response yet?": Case(
        [
            ("s06", "dave", 1, stored("2026-03-04 16:45:00")),
            ("s07", "carol", 0, stored("2026-03-05 08:00:00")),
        ]
    ),
    "Which sessions are waiting for an answer?": Case(
        [
            ("s04", "carol", 3, 2, stored("2026-03-03 10:05:00")),
            ("s06", "dave", 1, 0, stored("2026-03-04 16:45:00")),
        ]
    ),
    "Which sessions have a given metadata value?": Case(
        [("s01", "alice", 5), ("s03", "alice", 3), ("s06", "dave", None)], {"channel": "web"}
    ),
    "How do users rate sessions on each channel?": Case(
        [("api", 2, 1, approx(2.0)), ("slack", 2, 2, approx(2.5)), ("web", 3, 2, approx(4.0))]
    ),
    "Which seeds pass evaluation?": Case(
        [(A, 4, 3, approx(0.75)), (B, 7, 5, approx(5 / 7)), (G, 4, 2, approx(0.5))]
    ),
    "What is the pass rate of each persona?": Case(
        [("architect", 6, 3, approx(0.5)), ("reviewer", 7, 5, approx(5 / 7)), (None, 2, 2, 1)]
    ),
    "Which sessions failed evaluation most often?": Case(
        [("s08", "alice", 0, 2), ("s01", "alice", 2, 1), ("s02", "bob", 2, 1), ("s05", "bob", 3, 1)]
    ),
    "Which answers failed evaluation, and what was asked?": Case(
        [
            ("s01", 2, "alice", "s01 question 2", A, "build"),
            ("s02", 0, "bob", "s02 question 0", B, "discovery"),
            ("s05", 3, "bob", "s05 question 3", B, "review"),
            ("s08", 0, "alice", "s08 question 0", G, "discovery"),
            ("s08", 1, "alice", None, G, "design"),
        ]
    ),
    # alpha: 4, 10.5, 6, 3, 1200; beta: 20, 8, 30, 12, 4, 9, 5; gamma: 2, 30, 7 seconds.
    "How quickly does the agent answer?": Case(
        [
            (A, 5, approx(1223.5 / 5), approx(1200)),
            (B, 7, approx(88 / 7), approx(30)),
            (G, 3, approx(13), approx(30)),
        ]
    ),
    "How many responses reach each phase?": Case(
        [("discovery", 7, 6), ("design", 5, 5), ("build", 3, 3), ("review", 1, 1)]
    ),
    "Which sessions mention a term?": Case(
        [
            ("s05", "bob", 4),
            ("s01", "alice", 3),
            ("s02", "bob", 3),
            ("s03", "alice", 2),
            ("s04", "carol", 2),
            ("s08", "alice", 2),
        ],
        {"term": "answer"},
    ),
    "How often is a term mentioned each day?": Case(
        [
            ("2026-03-02", "message", 8),
            ("2026-03-03", "message", 3),
            ("2026-03-04", "message", 5),
            ("2026-03-05", "message", 1),
        ],
        {"term": "question"},
    ),
    "Which seeds lead to the most forks?": Case([(A, 3, 2), (B, 1, 1)]),
    "How much of a conversation do forks keep?": Case(
        [("f01", "s01", 1, 3), ("f01a", "f01", 1, 1), ("f02", "s01", 2, 3), ("f05", "s05", 4, 4)]
    ),
    "What is the furthest phase each session reached?": Case(
        [
            ("s01", "build"),
            ("s02", "build"),
            ("s03", "design"),
            ("s04", "discovery"),
            ("s05", "review"),
            ("s08", "design"),
        ]
    ),
}


def plain(value: object) -> object:
    """Return a result value in a form both backends share."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bool):
        return int(value)
    return value


def bound(params: dict[str, Any], backend: str) -> dict[str, Any]:
    """Return the parameters as the backend takes them: SQLite compares times as text."""
    if backend == "postgresql":
        return params
    return {
        name: value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else value
        for name, value in params.items()
    }


async def run_query(
    store: StateStore, backend: str, sql: str, params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """Run ``sql`` on the store's database and return its rows in plain values."""
    async with store.engine.connect() as connection:
        if backend == "postgresql":
            # Off UTC, a query that takes the date or hour without converting answers wrongly.
            await connection.exec_driver_sql(f"SET LOCAL TIME ZONE '{TIME_ZONE_AWAY_FROM_UTC}'")
        result = await connection.execute(text(sql), bound(params, backend))
        return [tuple(plain(value) for value in row) for row in result.all()]


@pytest.fixture
async def filled(store: StateStore) -> StateStore:
    """Return the store holding the known data set."""
    for spec in DATA_SET:
        await store.save_session(spec.session())
    return store


def test_the_readme_links_the_cookbook() -> None:
    """The README's storage layout section links to docs/analytics.md."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/analytics.md)" in readme


def test_every_sql_block_belongs_to_a_question() -> None:
    """No sql block stands before the first ### question, where no test would run it."""
    assert "" not in RECIPES


def test_every_recipe_has_one_block_per_dialect() -> None:
    """Each question has one shared (SQLite) block and at most one PostgreSQL block."""
    for recipe in RECIPES.values():
        assert len(recipe.shared) == 1, recipe.question
        assert len(recipe.postgresql) <= 1, recipe.question


def test_every_recipe_has_an_expected_answer() -> None:
    """The cookbook has at least ten questions, and each has a checked answer here."""
    assert len(RECIPES) >= 10
    assert set(RECIPES) == set(EXPECTED)


async def test_the_data_set_is_stored_as_built(filled: StateStore) -> None:
    """The known data set loads back unchanged, so the answers describe what is stored."""
    loaded = [await filled.load_session(spec.id) for spec in DATA_SET]

    assert loaded == [spec.session() for spec in DATA_SET]
    assert sum(len(session.user_messages) for session in loaded if session) == 17
    assert sum(len(session.agent_responses) for session in loaded if session) == 16


FORKS = [("s01", 1, "f01"), ("s01", 2, "f02"), ("s05", None, "f05"), ("f01", None, "f01a")]
"""Forks the fork recipes are asked about: (source, up_to, fork id), made in this order."""

FORK_QUESTIONS = {
    "Which seeds lead to the most forks?",
    "How much of a conversation do forks keep?",
}


@pytest.mark.parametrize("question", list(EXPECTED), ids=lambda question: question[:-1])
async def test_recipe_answers_its_question(filled: StateStore, backend: str, question: str) -> None:
    """The recipe's SQL for this backend returns the answer worked out from the data set
    (with forks made first, for the fork recipes)."""
    recipe = RECIPES[question]
    case = EXPECTED[question]
    if question in FORK_QUESTIONS:
        for source, up_to, fork_id in FORKS:
            await filled.fork_session(source, up_to=up_to, new_id=fork_id)

    rows = await run_query(filled, backend, recipe.sql_for(backend), case.params)

    assert rows == case.rows


@pytest.mark.parametrize(
    ("question", "index"),
    [
        ("Which messages were sent in a time range?", "ix_messages_created_at"),
        ("What are a user's sessions, newest first?", "ix_sessions_user_id_updated_at_id"),
    ],
    ids=["time-range", "user-listing"],
)
@pytest.mark.sqlite_only
async def test_recipe_reads_the_index_it_names(
    filled: StateStore, backend: str, question: str, index: str
) -> None:
    """SQLite's query plan for the recipe searches the index the cookbook says serves it."""
    case = EXPECTED[question]
    plan = await run_query(
        filled, backend, "EXPLAIN QUERY PLAN " + RECIPES[question].sql_for(backend), case.params
    )

    assert any(f"USING INDEX {index}" in str(step[-1]) for step in plan), plan
