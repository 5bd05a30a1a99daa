"""Listing by seed, persona, parent, time ranges and metadata, with keyset paging, on
every backend; each answer checked against the same filter applied in Python."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from statestore import InvalidArgumentError, Session, SessionSummary, StateStore
from statestore._listing import MAX_METADATA_KEYS

T0 = datetime(2026, 4, 1, tzinfo=UTC)

TIERS = ["gold", "silver", 1, 1.5, True, None, "1"]


def sessions() -> list[Session]:
    """36 sessions spread over every filter's values, some updated at the same instant."""
    made = []
    for index in range(36):
        session = Session(
            id=f"s{index:02d}",
            user_id=f"u{index % 3}",
            active_seed_id=f"seed-{index % 4}" if index % 5 else None,
            active_persona_id=f"persona-{index % 2}" if index % 3 else None,
            created_at=T0 + timedelta(hours=index),
            metadata={"tier": TIERS[index % len(TIERS)], "n": index % 4},
        )
        session.updated_at = T0 + timedelta(days=2, hours=index // 2)  # pairs tie
        if index % 6 == 5:
            session.metadata.pop("tier")
        if index % 7 == 3:
            session.parent_session_id = "s00"
            session.forked_at = "2026-04-03T00:00:00Z"
        made.append(session)
    return made


@pytest.fixture
async def stored(store: StateStore) -> list[Session]:
    """Save the sessions; return them."""
    made = sessions()
    for session in made:
        await store.save_session(session)
    return made


def json_equal(stored: object, wanted: object) -> bool:
    """Whether two JSON values are equal as JSON compares them: numbers by value, and
    ``true`` is no number."""

    def kind(value: object) -> str:
        if isinstance(value, bool):
            return "bool"
        return "number" if isinstance(value, int | float) else type(value).__name__

    return kind(stored) == kind(wanted) and stored == wanted


def matches(session: Session, filters: dict[str, Any]) -> bool:
    """The filter, applied in Python: what the listing must return."""
    extra = session.model_extra or {}
    checks = {
        "user_id": lambda value: session.user_id == value,
        "active_seed_id": lambda value: session.active_seed_id == value,
        "active_persona_id": lambda value: session.active_persona_id == value,
        "forks_of": lambda value: extra.get("parent_session_id") == value,
        "created_after": lambda value: session.created_at > value,
        "created_before": lambda value: session.created_at < value,
        "updated_after": lambda value: session.updated_at > value,
        "updated_before": lambda value: session.updated_at < value,
        "metadata": lambda value: all(
            key in session.metadata and json_equal(session.metadata[key], wanted)
            for key, wanted in value.items()
        ),
    }
    return all(checks[name](value) for name, value in filters.items())


def expected_ids(made: list[Session], filters: dict[str, Any]) -> list[str]:
    """The ids the listing must return, newest first (ties: higher id first)."""
    chosen = [session for session in made if matches(session, filters)]
    chosen.sort(key=lambda session: (session.updated_at, session.id), reverse=True)
    return [session.id for session in chosen]


FILTERS: dict[str, dict[str, Any]] = {
    "seed": {"active_seed_id": "seed-1"},
    "persona": {"active_persona_id": "persona-0"},
    "forks-of": {"forks_of": "s00"},
    "forks-of-nothing": {"forks_of": "s01"},
    "created-after": {"created_after": T0 + timedelta(hours=20)},
    "created-range": {
        "created_after": T0 + timedelta(hours=5),
        "created_before": T0 + timedelta(hours=17),
    },
    "updated-after": {"updated_after": T0 + timedelta(days=2, hours=9)},
    "updated-range": {
        "updated_after": T0 + timedelta(days=2, hours=3),
        "updated_before": T0 + timedelta(days=2, hours=12),
    },
    "metadata-text": {"metadata": {"tier": "gold"}},
    "metadata-int-is-float": {"metadata": {"tier": 1.0}},
    "metadata-float": {"metadata": {"tier": 1.5}},
    "metadata-true-is-not-1": {"metadata": {"tier": True}},
    "metadata-null": {"metadata": {"tier": None}},
    "metadata-text-1-is-not-1": {"metadata": {"tier": "1"}},
    "metadata-two-keys": {"metadata": {"tier": "silver", "n": 1}},
    "metadata-missing-key": {"metadata": {"absent": None}},
    "user-seed-persona": {
        "user_id": "u1",
        "active_seed_id": "seed-2",
        "active_persona_id": "persona-1",
    },
    "everything": {
        "user_id": "u0",
        "active_persona_id": "persona-0",
        "created_before": T0 + timedelta(hours=30),
        "updated_after": T0,
        "metadata": {"n": 0},
    },
}


@pytest.mark.parametrize("name", sorted(FILTERS))
async def test_each_filter_lists_exactly_its_sessions(
    store: StateStore, stored: list[Session], name: str
) -> None:
    """A filter lists the sessions it describes, newest first, on every backend."""
    filters = FILTERS[name]
    listed = await store.list_sessions(**filters)
    assert [summary.id for summary in listed] == expected_ids(stored, filters)


@pytest.mark.parametrize("name", sorted(FILTERS))
async def test_keyset_pages_of_every_filter_add_up(
    store: StateStore, stored: list[Session], name: str
) -> None:
    """Pages of 2, each after the last of the previous, give the whole listing once,
    ties of updated_at included; iter_sessions pages the same way."""
    filters = FILTERS[name]
    pages: list[SessionSummary] = []
    after = None
    while True:
        page = await store.list_sessions(limit=2, after=after, **filters)
        pages += page
        if len(page) < 2:
            break
        after = page[-1]
    expected = expected_ids(stored, filters)
    assert [summary.id for summary in pages] == expected
    iterated = [summary.id async for summary in store.iter_sessions(page_size=3, **filters)]
    assert iterated == expected


async def test_combinations_of_two_filters(store: StateStore, stored: list[Session]) -> None:
    """Any two filters together list the sessions both describe."""
    singles = [FILTERS[name] for name in ("seed", "persona", "created-after", "metadata-text")]
    for first, second in itertools.combinations(singles, 2):
        filters = {**first, **second}
        listed = await store.list_sessions(**filters)
        assert [summary.id for summary in listed] == expected_ids(stored, filters), filters


async def test_metadata_keys_of_any_spelling(store: StateStore) -> None:
    """Keys with dots, quotes, backslashes, brackets, spaces or non-ASCII letters match
    exactly, and only at the top level."""
    keys = ["a.b", 'x"y', "back\\slash", "p[0]", "sp ace", "é", "$.tier", ""]
    for index, key in enumerate(keys):
        await store.save_session(
            Session(id=f"k{index}", user_id="u", metadata={key: index, "nested": {key: index}})
        )
    for index, key in enumerate(keys):
        assert [s.id for s in await store.list_sessions(metadata={key: index})] == [f"k{index}"]
    assert await store.list_sessions(metadata={"nested": 0}) == []


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"metadata": ["tier"]}, "metadata"),
        ({"metadata": {"tier": ["gold"]}}, "metadata['tier']"),
        ({"metadata": {"tier": {"a": 1}}}, "metadata['tier']"),
        ({"metadata": {"tier": float("nan")}}, "metadata['tier']"),
        ({"metadata": {"tier": 2**64}}, "metadata['tier']"),
        ({"metadata": {1: "x"}}, "metadata"),
        ({"metadata": {"k\x00": "x"}}, "metadata"),
        ({"metadata": {"tier": "x\x00"}}, "metadata['tier']"),
        ({"metadata": {f"k{n}": n for n in range(MAX_METADATA_KEYS + 1)}}, "metadata"),
        ({"active_seed_id": 3}, "active_seed_id"),
        ({"forks_of": b"s00"}, "forks_of"),
        ({"created_after": datetime(2026, 1, 1)}, "created_after"),
        ({"updated_before": "2026-01-01"}, "updated_before"),
    ],
)
async def test_bad_filters_are_typed_errors(
    store: StateStore, filters: dict[str, Any], field: str
) -> None:
    """A filter of the wrong type or range raises InvalidArgumentError naming it, from
    list_sessions and from iter_sessions' first step."""
    with pytest.raises(InvalidArgumentError) as raised:
        await store.list_sessions(**filters)
    assert raised.value.field == field
    with pytest.raises(InvalidArgumentError):
        await anext(store.iter_sessions(**filters))


async def test_unknown_filters_are_refused(store: StateStore) -> None:
    """A misspelt filter is a TypeError, not a silently wider listing."""
    with pytest.raises(TypeError):
        await store.list_sessions(seed="s1")  # type: ignore[call-arg]


@pytest.mark.parametrize("session_id", ["\udc80", "a\x00b", 5], ids=["surrogate", "nul", "int"])
async def test_a_forged_listing_cursor_is_a_typed_error(
    store: StateStore, session_id: object
) -> None:
    """A summary handed back by a client with an id no session can have is refused."""
    forged = SessionSummary.model_construct(
        id=session_id,
        user_id="u",
        message_count=0,
        active_seed_id=None,
        project_id=None,
        created_at=T0,
        updated_at=T0,
        parent_session_id=None,
    )
    with pytest.raises(InvalidArgumentError, match="after"):
        await store.list_sessions(after=forged)


@pytest.mark.parametrize("value", [2.0**53 + 2, -1e300], ids=["beyond-2**53", "huge"])
async def test_floats_too_large_to_compare_exactly_are_refused(
    store: StateStore, value: float
) -> None:
    """A float beyond 2**53, which SQLite and PostgreSQL would compare differently with a
    stored integer, is an InvalidArgumentError naming the key."""
    with pytest.raises(InvalidArgumentError, match="2\\*\\*53"):
        await store.list_sessions(metadata={"k": value})
