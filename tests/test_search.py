"""Full-text search over messages and responses: syntax, order, paging, and an index that
stays in step with every write, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from statestore import (
    AgentResponse,
    InvalidArgumentError,
    PruneConfig,
    SearchHit,
    Session,
    StateStore,
    UserMessage,
    _search,
)
from statestore._search import MAX_QUERY_TERMS, parse_query, snippet

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def conversation(session_id: str, user_id: str, *texts: str) -> Session:
    """A session whose messages and responses alternate through ``texts``."""
    session = Session(id=session_id, user_id=user_id, created_at=T0)
    for index, content in enumerate(texts):
        at = T0 + timedelta(seconds=index)
        if index % 2 == 0:
            session.user_messages.append(UserMessage(content=content, timestamp=at))
        else:
            session.agent_responses.append(AgentResponse(content=content, timestamp=at))
    return session


def places(hits: list[SearchHit]) -> list[tuple[str, str, int]]:
    """Where each hit is: (session, kind, position)."""
    return [(hit.session_id, hit.kind, hit.position) for hit in hits]


@pytest.fixture
async def filled(store: StateStore) -> StateStore:
    """A store of two users' conversations about refunds and shipping."""
    await store.save_session(
        conversation(
            "s1",
            "alice",
            "I want a refund for my order",
            "Refunds take three days",
            "What's the refund policy?",
            "Our policy: don't worry, refunds are automatic",
        )
    )
    await store.save_session(
        conversation("s2", "bob", "Where is my parcel?", "Shipping takes a week, no refund")
    )
    return store


async def test_finds_messages_and_responses_newest_written_first(filled: StateStore) -> None:
    """Each hit names its session, list, position, user and timestamp; newest first."""
    hits = await filled.search_messages("refund")

    assert places(hits) == [("s2", "response", 0), ("s1", "message", 1), ("s1", "message", 0)]
    assert hits[0].user_id == "bob"
    assert hits[0].timestamp == T0 + timedelta(seconds=1)
    assert [hit.entry_id for hit in hits] == sorted((hit.entry_id for hit in hits), reverse=True)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(
            "REFUND", [("s2", "response", 0), ("s1", "message", 1), ("s1", "message", 0)], id="case"
        ),
        pytest.param("refund policy", [("s1", "message", 1)], id="all-words"),
        pytest.param('"policy refund"', [], id="phrase-order"),
        pytest.param('"refund policy"', [("s1", "message", 1)], id="phrase"),
        pytest.param(
            "parcel OR policy",
            [("s2", "message", 0), ("s1", "response", 1), ("s1", "message", 1)],
            id="or",
        ),
        pytest.param("refund -order -shipping", [("s1", "message", 1)], id="excluded"),
        pytest.param(
            "refund*",
            [
                ("s2", "response", 0),
                ("s1", "response", 1),
                ("s1", "response", 0),
                ("s1", "message", 1),
                ("s1", "message", 0),
            ],
            id="prefix",
        ),
        pytest.param("don't", [("s1", "response", 1)], id="apostrophe"),
        pytest.param("week refund OR nothing", [("s2", "response", 0)], id="or-binds-tighter"),
    ],
)
async def test_query_syntax(
    filled: StateStore, query: str, expected: list[tuple[str, str, int]]
) -> None:
    """Words, phrases, OR, exclusion and prefixes mean the same on every backend."""
    assert places(await filled.search_messages(query)) == expected


@pytest.mark.parametrize(
    "query",
    [
        '"',
        "(",
        ")",
        "-",
        "*",
        "  ",
        "",
        "'",
        "\\",
        "-refund",
        "--",
        '""',
        "OR",
        "OR OR",
        "-( -)",
        "\x00",
        "x\x00",
        "\udc80",
    ],
)
async def test_queries_with_nothing_to_find_are_clear_errors(
    filled: StateStore, query: str
) -> None:
    """An empty, punctuation-only, exclusion-only or unstorable query is an InvalidArgumentError."""
    with pytest.raises(InvalidArgumentError, match="query"):
        await filled.search_messages(query)


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("refund)", 3),
        ("(refund", 3),
        ('"refund', 3),
        ("refund AND", 0),
        ("NOT refund", 0),
        ("NEAR(refund policy)", 0),
        ("policy:refund", 0),
        ("^refund", 3),
        ("refund +policy", 1),
        ("{refund}", 3),
        ("refund*x", 0),
        ("ref*und", 0),
        ('refund" OR "policy', 4),
        ("refund " * MAX_QUERY_TERMS, 3),
    ],
)
async def test_operator_characters_are_plain_words(
    filled: StateStore, query: str, found: int
) -> None:
    """Quotes, parentheses, colons, carets and FTS5 or tsquery keywords never reach the
    engine as syntax: the query runs with them as words."""
    assert len(await filled.search_messages(query)) == found


async def test_too_many_terms_are_refused(store: StateStore) -> None:
    """A query of more than MAX_QUERY_TERMS terms is refused, naming the limit."""
    with pytest.raises(InvalidArgumentError, match=str(MAX_QUERY_TERMS)):
        await store.search_messages("word " * (MAX_QUERY_TERMS + 1))


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"query": 3}, "query"),
        ({"query": "x", "limit": 0}, "limit"),
        ({"query": "x", "limit": True}, "limit"),
        ({"query": "x", "user_id": 5}, "user_id"),
        ({"query": "x", "session_id": "../x"}, "session id"),
        ({"query": "x", "after": "hit"}, "after"),
    ],
)
async def test_bad_arguments_are_typed_errors(
    store: StateStore, arguments: dict[str, object], field: str
) -> None:
    """Every argument is checked before the database is asked, and the error names it."""
    with pytest.raises(ValueError, match=field):
        await store.search_messages(**arguments)  # type: ignore[arg-type]


async def test_pages_follow_each_other(store: StateStore) -> None:
    """Pages of ``limit`` hits, each after the last hit of the previous, hold every hit once."""
    for index in range(7):
        await store.save_session(conversation(f"s{index}", "u", f"needle {index}", "needle back"))
    everything = places(await store.search_messages("needle", limit=100))
    paged: list[tuple[str, str, int]] = []
    after = None
    while True:
        page = await store.search_messages("needle", limit=3, after=after)
        paged += places(page)
        if len(page) < 3:
            break
        after = page[-1]
    assert len(everything) == 14
    assert paged == everything


async def test_user_and_session_filters(filled: StateStore) -> None:
    """``user_id`` and ``session_id`` keep to one user's or one session's texts."""
    assert places(await filled.search_messages("refund", user_id="bob")) == [("s2", "response", 0)]
    assert places(await filled.search_messages("refund", session_id="s1")) == [
        ("s1", "message", 1),
        ("s1", "message", 0),
    ]
    assert await filled.search_messages("refund", user_id="bob", session_id="s1") == []
    assert await filled.search_messages("refund", session_id="missing") == []


async def test_edits_and_deletes_keep_the_index_in_step(filled: StateStore) -> None:
    """An edited text is found by its new words only; deleted sessions, dropped messages,
    erased users and pruned sessions are found no more."""
    session = await filled.load_session("s1")
    assert session is not None
    session.user_messages[0].content = "I want a replacement for my order"
    del session.agent_responses[1:]
    await filled.save_session(session)
    assert places(await filled.search_messages("replacement")) == [("s1", "message", 0)]
    assert places(await filled.search_messages("refund", session_id="s1")) == [("s1", "message", 1)]
    assert await filled.search_messages("automatic") == []

    await filled.delete_session("s1")
    assert places(await filled.search_messages("refund")) == [("s2", "response", 0)]
    await filled.delete_user("bob")
    assert await filled.search_messages("refund") == []

    await filled.save_session(conversation("old", "u", "ancient refund"))
    await filled.prune_sessions(PruneConfig(max_sessions=0, ttl_hours=1))
    assert await filled.search_messages("ancient") == []


async def test_an_edited_text_counts_as_written_again(filled: StateStore) -> None:
    """A text saved with new content moves to the front of the order."""
    session = await filled.load_session("s1")
    assert session is not None
    session.user_messages[0].content = "refund, please, for my order"
    await filled.save_session(session)
    assert places(await filled.search_messages("refund"))[0] == ("s1", "message", 0)


async def test_appends_and_forks_are_searchable(filled: StateStore) -> None:
    """append_to_session's rows and a fork's copies are indexed like any other."""
    await filled.append_to_session(
        "s2", user_messages=[UserMessage(content="any update on the tracking?")]
    )
    fork = await filled.fork_session("s2", new_id="s2-fork")
    hits = await filled.search_messages("tracking")
    assert places(hits) == [("s2-fork", "message", 1), ("s2", "message", 1)]
    assert fork.user_messages[1].content == "any update on the tracking?"


async def test_rows_written_in_plain_sql_are_indexed(filled: StateStore) -> None:
    """The index is kept by triggers: an INSERT, UPDATE or DELETE from outside statestore
    is reflected too."""
    stored_t0 = T0 if filled.engine.dialect.name == "postgresql" else "2026-05-01 00:00:00.000000"
    async with filled.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO messages (session_id, position, content, created_at) "
                "VALUES ('s2', 5, 'written by hand', :at)"
            ),
            {"at": stored_t0},
        )
        await connection.execute(
            text("UPDATE responses SET content = 'edited by hand' WHERE session_id = 's2'")
        )
        await connection.execute(text("DELETE FROM messages WHERE session_id = 's1'"))
    assert places(await filled.search_messages("hand")) == [
        ("s2", "response", 0),
        ("s2", "message", 5),
    ]
    assert places(await filled.search_messages("automatic")) == [("s1", "response", 1)]
    assert await filled.search_messages("refund") == []


async def test_rebuild_restores_an_index_that_drifted(filled: StateStore) -> None:
    """rebuild_search_index indexes every stored text again (here after the index was
    emptied behind the triggers' back) and returns how many it holds."""
    async with filled.engine.begin() as connection:
        await connection.execute(text("DELETE FROM search_entries"))
    assert await filled.search_messages("refund") == []

    assert await filled.rebuild_search_index() == 6
    hits = await filled.search_messages("refund")
    assert sorted(places(hits)) == [
        ("s1", "message", 0),
        ("s1", "message", 1),
        ("s2", "response", 0),
    ]
    # Rebuilt oldest first: the newest timestamp comes first.
    assert places(hits)[0] == ("s1", "message", 1)


async def test_a_very_long_text_saves_and_is_found(store: StateStore) -> None:
    """A 2,000,000-character message saves on every backend (PostgreSQL indexes its first
    100,000 characters) and is found by a word at its start."""
    session = conversation("big", "u", "beginning " + "lorem ipsum dolor " * 111_111)
    await store.save_session(session)
    assert places(await store.search_messages("beginning")) == [("big", "message", 0)]


async def test_hits_are_search_hits_with_snippets(filled: StateStore) -> None:
    """A hit's snippet is the text around the first match, the match marked."""
    [hit] = await filled.search_messages("parcel")
    assert hit.snippet == "Where is my **parcel**?"
    assert hit.kind == "message"


def test_snippets_cut_long_texts_around_the_first_match() -> None:
    """Far from the start, the snippet opens and closes with an ellipsis."""
    content = " ".join(f"w{index}" for index in range(100)) + " needle " + "tail " * 50
    cut = snippet(content, parse_query("needle"))
    assert cut.startswith("…")
    assert cut.endswith("…")
    assert "**needle**" in cut
    assert len(cut.split()) <= 12


def test_snippets_mark_prefix_and_phrase_words() -> None:
    """Every word a term matches is marked, prefixes included."""
    query = parse_query('refund* "the policy"')
    assert snippet("Refunds follow the policy.", query) == "**Refunds** follow **the** **policy**."


async def test_compact_keeps_search_right(filled: StateStore) -> None:
    """After deletes and a compaction (VACUUM on SQLite), search finds exactly what is left."""
    await filled.delete_session("s2")
    await filled.compact()
    assert places(await filled.search_messages("refund")) == [
        ("s1", "message", 1),
        ("s1", "message", 0),
    ]
    await filled.save_session(conversation("s3", "u", "new refund"))
    assert places(await filled.search_messages("refund"))[0] == ("s3", "message", 0)


async def test_words_beyond_the_newest_entries_are_found_and_paged(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A word only in old texts, or too rare to fill a page from the newest entries, is
    found whole (PostgreSQL then asks the GIN index), page after page."""
    monkeypatch.setattr(_search, "RECENT_ENTRIES", 3)
    for index in range(10):
        words = "rare common" if index in (1, 4) else "common"
        await store.save_session(conversation(f"s{index}", "u", f"{words} {index}", "filler"))
    assert places(await store.search_messages("rare")) == [
        ("s4", "message", 0),
        ("s1", "message", 0),
    ]
    pages = []
    after = None
    for _ in range(4):
        page = await store.search_messages("common", limit=3, after=after)
        pages.append([hit.session_id for hit in page])
        after = page[-1] if page else None
    assert pages == [["s9", "s8", "s7"], ["s6", "s5", "s4"], ["s3", "s2", "s1"], ["s0"]]


def test_a_snippet_deep_in_a_long_text_shows_the_match() -> None:
    """A match a million characters in is shown with its neighbours, cut on both sides."""
    content = "x " * 500_000 + "the needle here" + " tail" * 10
    assert snippet(content, parse_query("needle")) == (
        "…x x x the **needle** here tail tail tail tail tail tail…"
    )


@pytest.mark.sqlite_only
async def test_words_left_by_a_replace_never_come_back(store: StateStore) -> None:
    """A text replaced by plain SQL's INSERT OR REPLACE (which fires no delete trigger)
    leaves its words under an entry id no later text gets: they never find another text."""
    await store.save_session(conversation("s1", "u", "older text"))
    await store.save_session(conversation("s2", "u", "zebra newest text"))
    async with store.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT OR REPLACE INTO messages (session_id, position, content, created_at) "
                "VALUES ('s2', 0, 'giraffe replaced', '2026-05-01 00:00:00.000000')"
            )
        )
    await store.delete_session("s2")
    await store.save_session(conversation("s3", "other-user", "unrelated content"))
    assert await store.search_messages("zebra") == []
    assert places(await store.search_messages("unrelated")) == [("s3", "message", 0)]


@pytest.mark.parametrize("entry_id", [0, -1, 2**63], ids=["zero", "negative", "too-big"])
async def test_a_forged_cursor_is_a_typed_error(store: StateStore, entry_id: int) -> None:
    """A hit handed back by a client with an entry id no entry can have is refused."""
    forged = SearchHit(
        entry_id=entry_id,
        session_id="s",
        user_id="u",
        kind="message",
        position=0,
        timestamp=T0,
        snippet="",
    )
    with pytest.raises(InvalidArgumentError, match="after"):
        await store.search_messages("word", after=forged)
