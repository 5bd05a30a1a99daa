"""Delta saves: appending writes only the new rows; anything else still saves whole."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from statestore import AgentResponse, Session, StateStore, UserMessage

from .test_store import make_session

WRITE_LOG = """
CREATE TABLE write_log (tbl TEXT, op TEXT, position INTEGER);
CREATE TRIGGER log_message_insert AFTER INSERT ON messages
BEGIN INSERT INTO write_log VALUES ('messages', 'insert', new.position); END;
CREATE TRIGGER log_message_update AFTER UPDATE ON messages
BEGIN INSERT INTO write_log VALUES ('messages', 'update', new.position); END;
CREATE TRIGGER log_message_delete AFTER DELETE ON messages
BEGIN INSERT INTO write_log VALUES ('messages', 'delete', old.position); END;
CREATE TRIGGER log_response_insert AFTER INSERT ON responses
BEGIN INSERT INTO write_log VALUES ('responses', 'insert', new.position); END;
CREATE TRIGGER log_response_update AFTER UPDATE ON responses
BEGIN INSERT INTO write_log VALUES ('responses', 'update', new.position); END;
"""


def install_write_log(db_path: Path) -> None:
    """Record every row written to messages and responses in write_log."""
    with sqlite3.connect(db_path) as connection:
        connection.executescript(WRITE_LOG)


def take_write_log(db_path: Path) -> list[tuple[str, str, int]]:
    """Return and clear the rows written since the last call."""
    with sqlite3.connect(db_path) as connection:
        written = connection.execute("SELECT tbl, op, position FROM write_log").fetchall()
        connection.execute("DELETE FROM write_log")
    return written


def exchange(session: Session, text: str) -> None:
    """Append one user message and one agent response."""
    session.add_user_message(text)
    session.add_agent_response(AgentResponse(content=f"re: {text}"))


async def test_appending_to_a_loaded_session_writes_only_the_new_rows(
    store: StateStore, db_path: Path
) -> None:
    """After a load, saving one more exchange inserts two rows and touches no others."""
    await store.save_session(make_session(messages=200))
    install_write_log(db_path)
    [summary] = await store.list_sessions()
    session = await store.load_session(summary.id)
    assert session is not None

    exchange(session, "one more")
    await store.save_session(session)

    assert take_write_log(db_path) == [("messages", "insert", 200), ("responses", "insert", 200)]
    assert await store.load_session(session.id) == session


async def test_repeated_appends_after_a_save_stay_deltas(store: StateStore, db_path: Path) -> None:
    """A saved session keeps saving deltas: each append writes only its own rows."""
    session = make_session(messages=3)
    await store.save_session(session)
    install_write_log(db_path)

    for turn in range(3):
        exchange(session, f"turn {turn}")
        await store.save_session(session)
        assert take_write_log(db_path) == [
            ("messages", "insert", 3 + turn),
            ("responses", "insert", 3 + turn),
        ]
    assert await store.load_session(session.id) == session


async def test_metadata_only_change_writes_no_child_rows(store: StateStore, db_path: Path) -> None:
    """Changing only session fields rewrites the session row and nothing else."""
    session = make_session(messages=5)
    await store.save_session(session)
    install_write_log(db_path)

    session.set_metadata("mood", "calm")
    await store.save_session(session)

    assert take_write_log(db_path) == []
    assert await store.load_session(session.id) == session


async def test_editing_a_loaded_message_in_place_saves_whole(
    store: StateStore, db_path: Path
) -> None:
    """Assigning a field of a stored message is seen: the save rewrites, and loads equal."""
    await store.save_session(make_session(messages=3))
    [summary] = await store.list_sessions()
    session = await store.load_session(summary.id)
    assert session is not None
    install_write_log(db_path)

    session.user_messages[1].content = "edited in place"
    exchange(session, "and appended")
    await store.save_session(session)

    assert ("messages", "update", 1) in take_write_log(db_path)
    loaded = await store.load_session(session.id)
    assert loaded == session
    assert loaded is not None
    assert loaded.user_messages[1].content == "edited in place"


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.user_messages.pop(),
        lambda s: s.user_messages.insert(0, UserMessage(content="first now")),
        lambda s: s.agent_responses.__setitem__(0, AgentResponse(content="swapped")),
        lambda s: setattr(s, "user_messages", []),
        lambda s: s.user_messages.reverse(),
        lambda s: s.agent_responses.sort(key=lambda r: r.content, reverse=True),
        lambda s: s.user_messages.__delitem__(slice(1, 3)),
        lambda s: s.user_messages.remove(s.user_messages[0]),
        lambda s: s.agent_responses.clear(),
        lambda s: setattr(s, "user_messages", [*s.user_messages, UserMessage(content="new")]),
    ],
    ids=[
        "truncate",
        "insert-front",
        "replace-item",
        "clear-by-assignment",
        "reverse",
        "sort",
        "delete-slice",
        "remove",
        "clear",
        "plain-list-assigned",
    ],
)
async def test_changes_other_than_appends_save_whole(store: StateStore, change: object) -> None:
    """Truncation, insertion, replacement and clearing all give exactly the saved state."""
    await store.save_session(make_session(messages=4))
    [summary] = await store.list_sessions()
    session = await store.load_session(summary.id)
    assert session is not None

    change(session)  # type: ignore[operator]
    await store.save_session(session)

    assert await store.load_session(session.id) == session


async def test_two_copies_that_both_append_last_save_wins_whole(store: StateStore) -> None:
    """Two loaded copies each append; the second save (a stale delta) rewrites whole."""
    await store.save_session(make_session(messages=2))
    [summary] = await store.list_sessions()
    first = await store.load_session(summary.id)
    second = await store.load_session(summary.id)
    assert first is not None
    assert second is not None

    exchange(first, "from the first copy")
    await store.save_session(first)
    exchange(second, "from the second copy")
    second.add_user_message("and one more")
    await store.save_session(second)

    assert await store.load_session(summary.id) == second


async def test_a_session_loaded_elsewhere_saves_whole_here(db_path: Path, tmp_path: Path) -> None:
    """A session loaded from another database never writes a delta against this one."""
    async with (
        StateStore.open(db_path) as here,
        StateStore.open(tmp_path / "elsewhere.db") as elsewhere,
    ):
        original = make_session(messages=2)
        await here.save_session(original)
        diverged = original.model_copy(deep=True)
        diverged.user_messages[0] = UserMessage(content="different history")
        await elsewhere.save_session(diverged)
        from_elsewhere = await elsewhere.load_session(diverged.id)
        assert from_elsewhere is not None

        exchange(from_elsewhere, "appended elsewhere")
        await here.save_session(from_elsewhere)

        assert await here.load_session(original.id) == from_elsewhere


async def test_a_deleted_session_saved_again_is_whole(store: StateStore) -> None:
    """Saving a loaded session after it was deleted stores it whole again."""
    await store.save_session(make_session(messages=3))
    [summary] = await store.list_sessions()
    session = await store.load_session(summary.id)
    assert session is not None
    await store.delete_session(session.id)

    exchange(session, "after delete")
    await store.save_session(session)

    assert await store.load_session(session.id) == session


async def test_a_failed_save_leaves_the_next_save_whole(store: StateStore) -> None:
    """A save refused for bad data does not update what the session remembers."""
    session = make_session(messages=2)
    await store.save_session(session)
    session.add_user_message("fine")
    session.add_user_message("bad \x00")
    with pytest.raises(ValueError, match="NUL"):
        await store.save_session(session)

    session.user_messages.pop()
    await store.save_session(session)

    assert await store.load_session(session.id) == session


async def test_version_counts_saves(store: StateStore, db_path: Path) -> None:
    """sessions.version is 1 after the first save and grows by one per save."""
    session = make_session(messages=1)
    for _ in range(3):
        await store.save_session(session)
        exchange(session, "more")

    with sqlite3.connect(db_path) as connection:
        [(version,)] = connection.execute("SELECT version FROM sessions").fetchall()
    assert version == 3


async def test_loaded_and_fresh_sessions_compare_equal(store: StateStore) -> None:
    """What a session remembers about its stored state takes no part in equality."""
    session = make_session(messages=2)
    await store.save_session(session)

    loaded = await store.load_session(session.id)

    assert loaded == session
    assert loaded == Session.model_validate_json(session.model_dump_json())


async def test_extend_and_plus_equals_stay_deltas(store: StateStore, db_path: Path) -> None:
    """Growing the lists with extend() or += is an append: only new rows are written."""
    session = make_session(messages=2)
    await store.save_session(session)
    install_write_log(db_path)

    session.user_messages.extend([UserMessage(content="a"), UserMessage(content="b")])
    session.agent_responses += [AgentResponse(content="c")]
    await store.save_session(session)

    assert take_write_log(db_path) == [
        ("messages", "insert", 2),
        ("messages", "insert", 3),
        ("responses", "insert", 2),
    ]
    assert await store.load_session(session.id) == session


async def test_appends_made_while_a_save_is_queued_are_saved_next(store: StateStore) -> None:
    """A message appended after save_session was called is written by the next save."""
    session = make_session(messages=1)
    await store.save_session(session)

    exchange(session, "saved now")
    pending = asyncio.ensure_future(store.save_session(session))
    await asyncio.sleep(0)  # the save is checked and queued
    exchange(session, "appended while the save waits")
    await pending
    [summary] = await store.list_sessions()
    assert summary.message_count == 2  # the first save stored what it was given
    await store.save_session(session)

    assert await store.load_session(session.id) == session


def test_session_lists_are_tracked_histories() -> None:
    """Built, validated, assigned and defaulted session lists are all held as History."""
    from statestore.models import History

    built = Session(user_id="u", user_messages=[UserMessage(content="x")])
    parsed = Session.model_validate_json(built.model_dump_json())
    assigned = Session(user_id="u")
    assigned.user_messages = [UserMessage(content="y")]
    assigned.agent_responses = []

    for session in (built, parsed, assigned, Session(user_id="u")):
        assert isinstance(session.user_messages, History)
        assert isinstance(session.agent_responses, History)
    assert parsed == built


async def test_appends_after_assigning_a_list_are_deltas_again(
    store: StateStore, db_path: Path
) -> None:
    """After a list is assigned and saved whole once, appends write only new rows again."""
    session = make_session(messages=2)
    session.user_messages = [UserMessage(content="fresh start")]
    await store.save_session(session)
    install_write_log(db_path)

    exchange(session, "appended")
    await store.save_session(session)

    assert take_write_log(db_path) == [("messages", "insert", 1), ("responses", "insert", 2)]


# -- the session's own row on a delta save ----------------------------------------------------

IDENTITY_LOG = """
CREATE TABLE identity_log (id TEXT);
CREATE TRIGGER log_identity_update
AFTER UPDATE OF user_id, active_seed_id, active_persona_id, created_at, extra ON sessions
BEGIN INSERT INTO identity_log VALUES (new.id); END;
"""


def identity_updates(db_path: Path) -> list[str]:
    """Ids of the sessions updated by a statement naming one of IDENTITY_COLUMNS, in order.

    SQLite fires an ``UPDATE OF`` trigger when the statement sets one of its columns, so
    this shows which saves wrote those columns' indexes (the upsert sets every column).
    """
    with sqlite3.connect(db_path) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM identity_log")]


async def test_an_append_leaves_the_columns_it_keeps_unwritten(
    store: StateStore, db_path: Path
) -> None:
    """A delta save that changed no identity column updates the row without naming them."""
    from statestore._rows import IDENTITY_COLUMNS

    assert IDENTITY_COLUMNS == (
        "user_id",
        "active_seed_id",
        "active_persona_id",
        "created_at",
        "extra",
    )
    session = make_session(messages=2)
    session.active_seed_id = "seed-1"
    await store.save_session(session)
    with sqlite3.connect(db_path) as connection:
        connection.executescript(IDENTITY_LOG)

    exchange(session, "appended")
    session.metadata["note"] = "metadata may change on the narrow path"
    await store.save_session(session)
    loaded = await store.load_session(session.id)
    assert loaded is not None
    exchange(loaded, "appended after a load")
    await store.save_session(loaded)

    assert identity_updates(db_path) == []
    assert await store.load_session(session.id) == loaded


def _change_seed(session: Session) -> None:
    session.active_seed_id = "seed-2"


def _change_persona(session: Session) -> None:
    session.active_persona_id = "persona-2"


def _change_user(session: Session) -> None:
    session.user_id = "someone-else"


def _change_created_at(session: Session) -> None:
    session.created_at = session.created_at.replace(year=2020)


def _add_extra_field(session: Session) -> None:
    session.channel = "sms"  # an unmodelled field, kept in sessions.extra


IDENTITY_CHANGES = pytest.mark.parametrize(
    "change",
    [_change_seed, _change_persona, _change_user, _change_created_at, _add_extra_field],
    ids=["seed", "persona", "user", "created-at", "extra-field"],
)


@IDENTITY_CHANGES
async def test_an_append_with_a_changed_identity_column_stores_it(
    store: StateStore, change: object
) -> None:
    """Appending and changing a column an append keeps stores the change, on every backend."""
    session = make_session(messages=2)
    session.active_seed_id = "seed-1"
    await store.save_session(session)
    loaded = await store.load_session(session.id)
    assert loaded is not None

    exchange(loaded, "appended")
    change(loaded)  # type: ignore[operator]
    await store.save_session(loaded)
    exchange(loaded, "and again, unchanged")
    await store.save_session(loaded)

    assert await store.load_session(session.id) == loaded
    [summary] = await store.list_sessions(user_id=loaded.user_id)
    assert (summary.id, summary.active_seed_id) == (loaded.id, loaded.active_seed_id)


@IDENTITY_CHANGES
async def test_a_changed_identity_column_goes_through_the_upsert(
    store: StateStore, db_path: Path, change: object
) -> None:
    """The same change on SQLite: that save (only) names the identity columns."""
    session = make_session(messages=2)
    await store.save_session(session)
    with sqlite3.connect(db_path) as connection:
        connection.executescript(IDENTITY_LOG)

    exchange(session, "appended")
    change(session)  # type: ignore[operator]
    await store.save_session(session)
    exchange(session, "unchanged since")
    await store.save_session(session)

    assert identity_updates(db_path) == [session.id]


# -- unknown fields changed in place --------------------------------------------------------


def _with_extras() -> Session:
    session = make_session(messages=0)
    session.user_messages.append(UserMessage(content="q", tags=["a"], meta={"k": 1}))
    session.agent_responses.append(
        AgentResponse(content="r", tool_calls=[{"name": "x", "args": {"n": 1}}])
    )
    session.user_messages.append(UserMessage(content="plain"))
    return session


EXTRA_EDITS = {
    "append-to-a-list": lambda s: s.user_messages[0].tags.append("b"),
    "set-in-a-nested-object": lambda s: s.user_messages[0].meta.__setitem__("k", 2),
    "add-a-key-to-model-extra": lambda s: s.user_messages[1].model_extra.__setitem__("new", 1),
    "delete-a-key": lambda s: s.user_messages[0].model_extra.__delitem__("tags"),
    "edit-an-object-in-a-list": lambda s: (
        s.agent_responses[0].tool_calls[0].__setitem__("name", "y")
    ),
    "deep-inside": lambda s: s.agent_responses[0].tool_calls[0]["args"].update(n=2),
    "sort-a-list": lambda s: s.user_messages[0].tags.sort(reverse=True),
}


@pytest.mark.parametrize("edit", EXTRA_EDITS.values(), ids=EXTRA_EDITS.keys())
@pytest.mark.parametrize("source", ["loaded", "saved-here"])
async def test_unknown_fields_changed_in_place_are_saved(
    store: StateStore, edit: Any, source: str
) -> None:
    """An in-place change to a stored message's unknown fields (then an append) is stored:
    the containers holding them count every change as an edit."""
    session = _with_extras()
    session.user_messages[0].tags.append("z")  # before any save: plain lists
    await store.save_session(session)
    if source == "loaded":
        loaded = await store.load_session(session.id)
        assert loaded is not None
        session = loaded
    edit(session)
    exchange(session, "then an append")
    await store.save_session(session)
    assert await store.load_session(session.id) == session


@pytest.mark.parametrize("edit", EXTRA_EDITS.values(), ids=EXTRA_EDITS.keys())
async def test_update_with_an_in_place_extra_change_stores_what_it_returns(
    store: StateStore, edit: Any
) -> None:
    """update_session_with's fn may change unknown fields in place: what it returns is
    what is stored."""
    session = _with_extras()
    await store.save_session(session)
    returned = await store.update_session_with(session.id, edit)
    assert returned is not None
    assert await store.load_session(session.id) == returned
