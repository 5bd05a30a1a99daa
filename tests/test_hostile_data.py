"""Hostile data is data: any unicode, SQL metacharacters, ``%``, ``_`` and quotes in any field.

Whatever the store accepts comes back exactly; whatever it refuses breaks a documented
rule (checked here against rules written out independently); and no value in one field
reaches another row: a listing by a ``user_id`` containing ``%`` returns only that user's
sessions. Only the public API is used, so these run on any backend.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from statestore import (
    AgentResponse,
    InvalidDataError,
    InvalidNameError,
    Session,
    StateStore,
    UserMessage,
)

ResultT = TypeVar("ResultT")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

FRAGMENTS = [
    "%",
    "_",
    "'",
    '"',
    "\\",
    "/",
    ".",
    "..",
    ";",
    "--",
    "*",
    "?",
    "[a]",
    "$1",
    ":id",
    "%s",
    "{}",
    "`",
    "' OR '1'='1",
    "'); DROP TABLE sessions; --",
    "\x00",
    "\ud800",
    "\udfff",
    "\u2028",
    "\ufeff",
    "\U0001f469\U0001f4bb",
    "sessions",
]
"""Pieces that break careless SQL, LIKE patterns, paths, JSON or encodings."""


def _text(pieces: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(pieces, max_size=6).map("".join)


STORABLE_TEXT = _text(
    st.one_of(
        st.characters(codec="utf-8", exclude_characters="\x00"),
        st.sampled_from([f for f in FRAGMENTS if f.isprintable() or f in "\u2028\ufeff"]),
    )
)
ANY_TEXT = _text(st.one_of(st.characters(), st.sampled_from(FRAGMENTS)))
HOSTILE_TEXT = st.one_of(STORABLE_TEXT, STORABLE_TEXT, STORABLE_TEXT, ANY_TEXT)
"""Unicode text rich in hostile fragments; one draw in four may hold NUL or surrogates."""

HOSTILE_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | HOSTILE_TEXT,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(HOSTILE_TEXT, children, max_size=3)
    ),
    max_leaves=8,
)

PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- the documented rules, written out independently of statestore's code ---------------


def is_text(value: str) -> bool:
    """Whether ``value`` is storable text: valid Unicode without NUL."""
    return "\x00" not in value and not any("\ud800" <= c <= "\udfff" for c in value)


def is_name(value: str) -> bool:
    """Whether ``value`` may be a document name or session id."""
    return bool(value) and is_text(value) and not any(f in value for f in ("..", "/", "\\"))


def is_category(value: str) -> bool:
    """Whether ``value`` may be a category."""
    return (
        bool(value)
        and is_text(value)
        and not value.startswith("/")
        and not value.endswith("/")
        and not any(f in value for f in ("//", "..", "\\"))
        and "." not in value.split("/")
    )


def is_json(value: Any) -> bool:
    """Whether every string (and key) in a JSON value is storable text."""
    if isinstance(value, str):
        return is_text(value)
    if isinstance(value, list):
        return all(is_json(item) for item in value)
    if isinstance(value, dict):
        return all(is_text(key) and is_json(item) for key, item in value.items())
    return True


def same_json(loaded: Any, expected: Any) -> bool:
    """Whether two JSON values are equal with the same types and key order."""
    return bool(loaded == expected) and json.dumps(loaded) == json.dumps(expected)


# -- running hypothesis against a store on the test's event loop -------------------------


class OnLoop:
    """Runs coroutines on the test's event loop from the thread hypothesis runs in.

    The store belongs to the loop the fixture opened it on (an asyncpg pool is tied to
    its loop), so the property runs in a worker thread while that loop keeps serving.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __call__(self, coroutine: Coroutine[Any, Any, ResultT]) -> ResultT:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=300)


async def run_in_thread(check: Callable[[OnLoop], None]) -> None:
    """Run ``check`` (a hypothesis test taking an :class:`OnLoop`) beside the running loop."""
    await asyncio.to_thread(check, OnLoop(asyncio.get_running_loop()))


async def assert_empty(store: StateStore, categories: set[str]) -> None:
    """Assert the store holds no session, and no document in ``categories``."""
    assert await store.list_sessions() == []
    for category in categories:
        assert await store.list_category(category) == []


# -- properties --------------------------------------------------------------------------


@st.composite
def hostile_sessions(draw: st.DrawFn) -> list[Session]:
    """Sessions whose every text field is hostile; ids and users repeat to collide."""
    ids = draw(st.lists(HOSTILE_TEXT, min_size=1, max_size=3))
    users = draw(st.lists(HOSTILE_TEXT, min_size=1, max_size=2))
    sessions = []
    for index in range(draw(st.integers(1, 4))):
        session = Session(
            id=draw(st.sampled_from(ids)),
            user_id=draw(st.sampled_from(users)),
            created_at=T0,
            metadata=draw(st.dictionaries(HOSTILE_TEXT, HOSTILE_JSON, max_size=3)),
        )
        if draw(st.booleans()):
            session.metadata["project_ids"] = draw(st.sampled_from(users))
        session.active_seed_id = draw(st.none() | HOSTILE_TEXT)
        for turn in range(draw(st.integers(0, 2))):
            moment = T0 + timedelta(minutes=turn)
            session.user_messages.append(UserMessage(content=draw(HOSTILE_TEXT), timestamp=moment))
            session.agent_responses.append(
                AgentResponse(
                    content=draw(HOSTILE_TEXT),
                    session_id=draw(st.none() | HOSTILE_TEXT),
                    seed_id=draw(st.none() | HOSTILE_TEXT),
                    phase_reached=draw(st.none() | HOSTILE_TEXT),
                    timestamp=moment,
                )
            )
        session.updated_at = T0 + timedelta(hours=index)
        sessions.append(session)
    return sessions


def storable(session: Session) -> bool:
    """Whether the rules let ``session`` be stored."""
    texts = [session.user_id, session.active_seed_id or ""]
    texts += [m.content for m in session.user_messages]
    for response in session.agent_responses:
        texts += [response.content, response.session_id or "", response.seed_id or ""]
        texts.append(response.phase_reached or "")
    return is_name(session.id) and all(map(is_text, texts)) and is_json(session.metadata)


async def test_hostile_sessions_round_trip_and_list_only_their_own(store: StateStore) -> None:
    """Accepted sessions load back exactly and list under exactly their user and project."""

    @PROPERTY_SETTINGS
    @given(sessions=hostile_sessions())
    def check(on_loop: OnLoop, sessions: list[Session]) -> None:
        on_loop(assert_empty(store, set()))
        stored: dict[str, Session] = {}
        try:
            for session in sessions:
                if storable(session):
                    on_loop(store.save_session(session))
                    stored[session.id] = session
                else:
                    with pytest.raises((InvalidNameError, InvalidDataError)):
                        on_loop(store.save_session(session))
            event(f"sessions stored: {len(stored)} of {len(sessions)}")
            for session_id, session in stored.items():
                loaded = on_loop(store.load_session(session_id))
                assert loaded is not None
                assert loaded.model_dump_json() == session.model_dump_json()
            assert on_loop(store.list_category("sessions")) == sorted(stored)
            for user in {s.user_id for s in stored.values()}:
                listed = on_loop(store.list_sessions(user_id=user))
                assert sorted(s.id for s in listed) == sorted(
                    i for i, s in stored.items() if s.user_id == user
                )
                projected = on_loop(store.list_sessions(project_id=user))
                assert sorted(s.id for s in projected) == sorted(
                    i for i, s in stored.items() if s.metadata.get("project_ids") == user
                )
        finally:
            for session_id in stored:
                assert on_loop(store.delete_session(session_id))

    await run_in_thread(lambda on_loop: check(on_loop))


@st.composite
def hostile_documents(draw: st.DrawFn) -> list[tuple[str, str, str, Any]]:
    """(category, name, kind, content) with hostile text; categories and names collide."""
    categories = draw(
        st.lists(HOSTILE_TEXT.filter(lambda c: c != "sessions"), min_size=1, max_size=3)
    )
    names = draw(st.lists(HOSTILE_TEXT, min_size=1, max_size=3))
    documents = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["markdown", "json"]))
        content = draw(HOSTILE_TEXT if kind == "markdown" else HOSTILE_JSON)
        documents.append(
            (draw(st.sampled_from(categories)), draw(st.sampled_from(names)), kind, content)
        )
    return documents


async def test_hostile_documents_round_trip_and_list_only_their_own(store: StateStore) -> None:
    """Accepted documents load back exactly, list only in their category, delete alone."""

    @PROPERTY_SETTINGS
    @given(documents=hostile_documents())
    def check(on_loop: OnLoop, documents: list[tuple[str, str, str, Any]]) -> None:
        stored: dict[tuple[str, str, str], Any] = {}
        try:
            for category, name, kind, content in documents:
                valid = is_category(category) and is_name(name)
                if kind == "markdown":
                    valid = valid and is_text(content)
                    save = store.save_markdown(category, name, content)
                else:
                    valid = valid and is_json(content)
                    save = store.save_json(category, name, content)
                if valid:
                    on_loop(save)
                    stored[(category, name, kind)] = content
                else:
                    with pytest.raises((InvalidNameError, InvalidDataError)):
                        on_loop(save)
            event(f"documents stored: {len(stored)} of {len(documents)}")
            categories = {category for category, _, _ in stored}
            for category in categories:
                expected = sorted({n for c, n, _ in stored if c == category})
                assert on_loop(store.list_category(category)) == expected
            for (category, name, kind), content in stored.items():
                if kind == "markdown":
                    assert on_loop(store.load_markdown(category, name)) == content
                else:
                    assert same_json(on_loop(store.load_json(category, name)), content)
            if stored:
                category, name, kind = next(iter(stored))
                assert on_loop(store.delete_file(category, name))
                gone = (category, name, "json" if (category, name, "json") in stored else kind)
                del stored[gone]
                for (c, n, k), content in stored.items():
                    load = store.load_markdown(c, n) if k == "markdown" else store.load_json(c, n)
                    assert same_json(on_loop(load), content)
        finally:
            for category, name, _ in list(stored):
                on_loop(store.delete_file(category, name))
            on_loop(assert_empty(store, {c for c, _, _ in stored}))

    await run_in_thread(lambda on_loop: check(on_loop))


# -- SQL metacharacters, one by one ------------------------------------------------------

LOOKALIKES = [
    "%",
    "_",
    "%%",
    "a%",
    "%a",
    "a_c",
    "abc",
    "aXc",
    "'",
    "''",
    '"',
    "\\%",
    "a\\_c",
    "' OR '1'='1",
    "%' --",
    "*",
    "?",
    "[a]",
    "a",
]
"""Values that match each other under LIKE, GLOB or careless quoting, but not under =."""


async def test_listing_by_a_metacharacter_value_returns_only_its_sessions(
    store: StateStore,
) -> None:
    """A user_id or project_id containing %, _, quotes or brackets selects only itself."""
    for index, value in enumerate(LOOKALIKES):
        for copy in range(2):
            session = Session(id=f"s{index}-{copy}", user_id=value, created_at=T0)
            session.metadata["project_ids"] = value
            await store.save_session(session)

    for index, value in enumerate(LOOKALIKES):
        expected = [f"s{index}-1", f"s{index}-0"]
        assert [s.id for s in await store.list_sessions(user_id=value)] == expected
        assert [s.id for s in await store.list_sessions(project_id=value)] == expected


async def test_documents_with_metacharacter_names_stay_apart(store: StateStore) -> None:
    """Categories and names with %, _ and quotes list, load and delete only themselves."""
    names = [value for value in LOOKALIKES if "\\" not in value]
    categories = ["%", "_", "a_c", "abc", "' OR '1'='1", "[a]"]
    for category in categories:
        for name in names:
            await store.save_markdown(category, name, f"{category}|{name}")
        await store.save_json(f"{category}/%", "_", [category])

    for category in categories:
        assert await store.list_category(category) == sorted(names)
        assert await store.list_category(f"{category}/%") == ["_"]
        assert await store.delete_file(category, "_")
        assert await store.list_category(category) == sorted(set(names) - {"_"})
        for name in names:
            expected = None if name == "_" else f"{category}|{name}"
            assert await store.load_markdown(category, name) == expected
        assert await store.load_json(f"{category}/%", "_") == [category]
