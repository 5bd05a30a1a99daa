"""The edges of what a store accepts: one timestamp range, bounded names and counts, typed
errors from every entry point, and re-imports that never put old state back."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import URL

from statestore import (
    AgentResponse,
    InvalidDataError,
    InvalidNameError,
    PruneConfig,
    Session,
    StateStore,
    UserMessage,
)
from statestore.models import MAX_TIMESTAMP, MIN_TIMESTAMP

from .conftest import SAMPLE_DIR
from .test_store import make_session

EAST = timezone(timedelta(hours=14))
WEST = timezone(timedelta(hours=-12))

# -- one timestamp range on every backend ------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param(datetime.min.replace(tzinfo=UTC), id="datetime.min"),
        pytest.param(datetime.max.replace(tzinfo=UTC), id="datetime.max"),
        pytest.param(datetime(1, 1, 1, 3, tzinfo=EAST), id="before-year-1-in-utc"),
        pytest.param(datetime(9999, 12, 31, 20, tzinfo=WEST), id="after-9999-in-utc"),
        pytest.param(MIN_TIMESTAMP - timedelta(microseconds=1), id="just-before-the-range"),
        pytest.param(MAX_TIMESTAMP + timedelta(microseconds=1), id="just-after-the-range"),
    ],
)
def test_a_timestamp_outside_the_range_is_a_validation_error(moment: datetime) -> None:
    """Models refuse an instant outside the stored range with a ValidationError, never overflow."""
    with pytest.raises(ValidationError, match="outside the range"):
        UserMessage(content="hi", timestamp=moment)
    with pytest.raises(ValidationError, match="outside the range"):
        Session(user_id="u", created_at=moment)


@pytest.mark.parametrize("field", ["created_at", "updated_at"])
async def test_an_assigned_timestamp_outside_the_range_is_refused_at_save(
    store: StateStore, field: str
) -> None:
    """A session given datetime.max after construction fails to save, naming the field."""
    session = make_session()
    setattr(session, field, datetime.max.replace(tzinfo=UTC))
    with pytest.raises(InvalidDataError, match=field):
        await store.save_session(session)
    assert await store.list_sessions() == []


async def test_a_message_timestamp_outside_the_range_is_refused_at_save(store: StateStore) -> None:
    """A message stamped datetime.min after construction fails to save, naming it."""
    session = make_session()
    session.agent_responses[1].timestamp = datetime.min.replace(tzinfo=UTC)
    with pytest.raises(InvalidDataError, match=r"agent_responses\[1\].timestamp"):
        await store.save_session(session)


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param(datetime.max.replace(tzinfo=UTC), id="datetime.max"),
        pytest.param(datetime(9999, 12, 31, 20, tzinfo=WEST), id="overflowing"),
    ],
)
async def test_listing_before_an_instant_outside_the_range_is_refused(
    store: StateStore, moment: datetime
) -> None:
    """updated_before outside the range is an InvalidDataError naming it."""
    with pytest.raises(InvalidDataError, match="updated_before"):
        await store.list_sessions(updated_before=moment)


async def test_the_ends_of_the_range_round_trip_and_list(store: StateStore) -> None:
    """Sessions stamped at the first and last storable instants load and list as saved."""
    early = Session(user_id="u", created_at=MIN_TIMESTAMP)
    early.user_messages.append(UserMessage(content="first", timestamp=MIN_TIMESTAMP))
    late = Session(user_id="u", created_at=MIN_TIMESTAMP, updated_at=MAX_TIMESTAMP)
    late.agent_responses.append(AgentResponse(content="last", timestamp=MAX_TIMESTAMP))
    for session in (early, late):
        await store.save_session(session)

    assert await store.load_session(early.id) == early
    assert await store.load_session(late.id) == late
    listed = await store.list_sessions()
    assert [summary.id for summary in listed] == [late.id, early.id]
    assert listed[0].updated_at.astimezone(EAST) > listed[1].updated_at.astimezone(WEST)


_LIST_IN_LOCAL_TIME = """
import asyncio, sys
from statestore import StateStore

async def main():
    async with StateStore.open(sys.argv[1], migrate=False) as store:
        listed = await store.list_sessions()
        loaded = [await store.load_session(s.id) for s in listed]
        print(len(listed), [s.updated_at.astimezone().year for s in loaded])

asyncio.run(main())
"""


def _where(target: Path | URL) -> str:
    """A store's target as a command-line argument."""
    return target.render_as_string(hide_password=False) if isinstance(target, URL) else str(target)


def _list_in_zone(where: str, zone: str) -> str:
    """List and load every session in a process whose local time zone is ``zone``."""
    result = subprocess.run(
        [sys.executable, "-c", _LIST_IN_LOCAL_TIME, where],
        env={**os.environ, "TZ": zone},
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout + result.stderr


async def test_listing_the_ends_of_the_range_works_in_any_process_time_zone(
    store: StateStore, target: Path | URL
) -> None:
    """A store holding the first and last instants lists and loads them under extreme zones."""
    await store.save_session(Session(id="early", user_id="u", created_at=MIN_TIMESTAMP))
    await store.save_session(Session(id="late", user_id="u", updated_at=MAX_TIMESTAMP))
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12"):
        output = await asyncio.to_thread(_list_in_zone, _where(target), zone)
        assert output.startswith("2 "), output


@pytest.mark.parametrize("ttl_hours", [10**9, 10**15])
async def test_a_ttl_longer_than_the_calendar_prunes_nothing(
    store: StateStore, ttl_hours: int
) -> None:
    """A TTL reaching before year 1 is a valid config that deletes nothing."""
    await store.save_session(make_session())
    assert await store.prune_sessions(PruneConfig(max_sessions=0, ttl_hours=ttl_hours)) == 0
    assert len(await store.list_sessions()) == 1


async def test_stats_over_more_days_than_the_calendar_counts_everything(store: StateStore) -> None:
    """stats(days=...) larger than the calendar reports every day there is."""
    await store.save_session(make_session())
    stats = await store.stats(days=10**9)
    assert stats.sessions == 1


# -- typed errors from every entry point ----------------------------------------------------


@pytest.mark.parametrize("limit", [2**63, 10**19])
async def test_a_limit_too_large_for_the_database_is_a_typed_error(
    store: StateStore, limit: int
) -> None:
    """list_sessions(limit=...) past 64 bits is an InvalidDataError naming limit."""
    with pytest.raises(InvalidDataError, match="limit"):
        await store.list_sessions(limit=limit)


async def test_the_largest_limit_lists_everything(store: StateStore) -> None:
    """list_sessions(limit=2**63 - 1) is accepted and lists every session."""
    await store.save_session(make_session())
    assert len(await store.list_sessions(limit=2**63 - 1)) == 1


@pytest.mark.parametrize("page_size", [0, 2**63, True, "10"])
async def test_a_bad_page_size_is_a_typed_error(store: StateStore, page_size: Any) -> None:
    """iter_sessions(page_size=...) out of range is an InvalidDataError naming page_size."""
    with pytest.raises(InvalidDataError, match="page_size"):
        [summary async for summary in store.iter_sessions(page_size=page_size)]


@pytest.mark.parametrize("value", [None, 5, "text", {"a": 1}])
@pytest.mark.parametrize("field", ["user_messages", "agent_responses"])
def test_assigning_something_other_than_a_list_to_a_history_is_a_typed_error(
    field: str, value: Any
) -> None:
    """session.user_messages = None raises InvalidDataError naming the field, and keeps the list."""
    session = make_session()
    before = list(getattr(session, field))
    with pytest.raises(InvalidDataError, match=field):
        setattr(session, field, value)
    assert getattr(session, field) == before


@pytest.mark.parametrize(
    ("target", "says"),
    [
        pytest.param("postgres://localhost/db", "postgres://", id="postgres-scheme"),
        pytest.param("mysql://localhost/db", "mysql://", id="mysql"),
        pytest.param("postgresql+psycopg2://localhost/db", "postgresql+asyncpg", id="sync-driver"),
        pytest.param("sqlite+pysqlite:///x.db", "sqlite+aiosqlite", id="sync-sqlite-driver"),
        pytest.param("postgresql://localhost:port/db", "not a database URL", id="bad-port"),
        pytest.param("://", "not a database URL", id="no-scheme"),
    ],
)
async def test_opening_a_target_statestore_cannot_run_on_is_a_typed_error(
    target: str, says: str
) -> None:
    """StateStore.open of an unsupported URL raises InvalidDataError saying what to use."""
    with pytest.raises(InvalidDataError, match="target") as raised:
        await StateStore.open(target)
    assert says in str(raised.value)


async def test_opening_postgresql_without_asyncpg_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without asyncpg installed, opening PostgreSQL says to install statestore[postgresql]."""
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # import asyncpg now fails
    with pytest.raises(InvalidDataError, match=r"statestore\[postgresql\]"):
        await StateStore.open("postgresql+asyncpg://localhost/db")


async def test_wrapping_an_engine_of_another_database_is_a_typed_error(tmp_path: Path) -> None:
    """StateStore(engine) on a dialect other than SQLite and PostgreSQL is refused."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(URL.create("sqlite+aiosqlite", database=str(tmp_path / "x")))
    engine.dialect.name = "mysql"
    try:
        with pytest.raises(InvalidDataError, match="engine"):
            StateStore(engine)
    finally:
        await engine.dispose()


# -- names fit the file layout ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("session_id", "fits"),
    [
        pytest.param("s" * 250, True, id="250-bytes"),
        pytest.param("s" * 251, False, id="251-bytes"),
        pytest.param("é" * 125, True, id="250-bytes-of-two-byte-chars"),
        pytest.param("é" * 126, False, id="252-bytes-of-two-byte-chars"),
    ],
)
async def test_a_session_id_must_fit_a_file_name(
    store: StateStore, session_id: str, fits: bool
) -> None:
    """A session id whose file name would pass 255 bytes is refused at save, naming it."""
    session = Session(id=session_id, user_id="u")
    if fits:
        await store.save_session(session)
        assert await store.load_session(session_id) == session
    else:
        with pytest.raises(InvalidNameError, match="bytes"):
            await store.save_session(session)
        with pytest.raises(InvalidNameError, match="bytes"):
            await store.get_or_create_session("u", session_id)
        assert await store.list_sessions() == []


async def test_document_names_and_category_segments_must_fit_a_file_name(
    store: StateStore,
) -> None:
    """Markdown names take 252 bytes, JSON names 250, category segments 255; longer is refused."""
    await store.save_markdown("notes", "m" * 252, "text")
    await store.save_json("notes", "j" * 250, {"a": 1})
    await store.save_markdown("c" * 255 + "/inner", "x", "text")
    for save in (
        store.save_markdown("notes", "m" * 253, "text"),
        store.save_json("notes", "j" * 251, {"a": 1}),
        store.save_markdown("c" * 256 + "/inner", "x", "text"),
        store.save_json("sessions", "s" * 251, {"user_id": "u"}),
    ):
        with pytest.raises(InvalidNameError, match="bytes"):
            await save
    assert await store.list_category("notes") == sorted(["m" * 252, "j" * 250])


async def test_the_longest_names_export_and_import_back(store: StateStore, tmp_path: Path) -> None:
    """Sessions and documents with the longest names export and re-import unchanged."""
    session = Session(id="s" * 250, user_id="u")
    await store.save_session(session)
    await store.save_markdown("notes", "m" * 252, "text")
    report = await store.export_directory(tmp_path / "out")
    assert (report.sessions, report.documents, report.skipped) == (1, 1, [])
    assert not list((tmp_path / "out").rglob("*.tmp"))
    again = await store.import_directory(tmp_path / "out")
    assert (again.sessions_unchanged, again.documents_unchanged, again.skipped) == (1, 1, [])


async def test_export_reports_a_file_it_cannot_write_and_writes_the_rest(
    store: StateStore, db_path: Path, tmp_path: Path
) -> None:
    """A session stored with a name too long for a file is skipped with a reason; others go out."""
    await store.save_session(make_session())
    await store.save_markdown("notes", "n", "text")
    with sqlite3.connect(db_path) as connection:  # a name stored before names were bounded
        connection.execute("UPDATE sessions SET id = ?", ("x" * 300,))
    await store.save_session(make_session("second"))

    report = await store.export_directory(tmp_path / "out")

    assert [skipped.path for skipped in report.skipped] == [f"sessions/{'x' * 300}.json"]
    assert "cannot be written" in report.skipped[0].reason
    assert (report.sessions, report.documents, report.complete) == (1, 1, False)
    assert len(list((tmp_path / "out" / "sessions").iterdir())) == 1
    assert await store.load_session("x" * 300) is not None  # still readable by its id


# -- re-import keeps what was saved since ----------------------------------------------------------


async def test_reimport_keeps_a_session_saved_since_the_import(
    store: StateStore, tmp_path: Path
) -> None:
    """A session the service saved after an import stays as saved when the files come again."""
    root = tmp_path / "files"
    shutil.copytree(SAMPLE_DIR, root)
    await store.import_directory(root)
    session_id = "02e9c9fb-d093-4b64-b414-c2dce9f8f71f"
    session = await store.load_session(session_id)
    assert session is not None
    session.add_user_message("said after the import")
    await store.save_session(session)
    await store.save_markdown("memory", "notes", "rewritten after the import")

    report = await store.import_directory(root)

    assert (report.sessions_kept, report.sessions_updated, report.sessions_unchanged) == (1, 0, 39)
    assert report.documents_kept == (1 if (root / "memory" / "notes.md").exists() else 0)
    assert await store.load_session(session_id) == session


async def test_reimport_replacing_newer_puts_the_files_back(
    store: StateStore, tmp_path: Path
) -> None:
    """With replace_newer=True the files' versions replace sessions and documents saved since."""
    root = tmp_path / "files"
    (root / "sessions").mkdir(parents=True)
    file_session = make_session()
    (root / "sessions" / f"{file_session.id}.json").write_text(
        file_session.model_dump_json(), encoding="utf-8"
    )
    (root / "notes").mkdir()
    (root / "notes" / "n.md").write_text("from the file", encoding="utf-8")
    old = (datetime.now(UTC) - timedelta(days=1)).timestamp()
    os.utime(root / "notes" / "n.md", (old, old))
    await store.import_directory(root)
    newer = await store.load_session(file_session.id)
    assert newer is not None
    newer.add_user_message("newer")
    await store.save_session(newer)
    await store.save_markdown("notes", "n", "newer")

    kept = await store.import_directory(root)
    assert (kept.sessions_kept, kept.documents_kept) == (1, 1)
    assert await store.load_markdown("notes", "n") == "newer"

    replaced = await store.import_directory(root, replace_newer=True)
    assert (replaced.sessions_updated, replaced.documents_updated) == (1, 1)
    assert await store.load_session(file_session.id) == file_session
    assert await store.load_markdown("notes", "n") == "from the file"


async def test_reimport_still_takes_a_file_newer_than_the_stored_session(
    store: StateStore, tmp_path: Path
) -> None:
    """A file whose session is newer than the stored one replaces it (no flag needed)."""
    root = tmp_path / "files"
    (root / "sessions").mkdir(parents=True)
    session = make_session()
    path = root / "sessions" / f"{session.id}.json"
    path.write_text(session.model_dump_json(), encoding="utf-8")
    await store.import_directory(root)
    session.add_user_message("written to the file later")
    path.write_text(session.model_dump_json(), encoding="utf-8")

    report = await store.import_directory(root)

    assert (report.sessions_updated, report.sessions_kept) == (1, 0)
    assert await store.load_session(session.id) == session


# -- a new session's JSON ------------------------------------------------------------------------


async def test_get_or_create_writes_every_field_in_its_json(store: StateStore) -> None:
    """A session get_or_create_session made dumps and exports its empty lists and metadata."""
    created = await store.get_or_create_session("u", "fresh")
    loaded = await store.load_session("fresh")
    for session in (created, loaded):
        assert session is not None
        dumped = json.loads(session.model_dump_json())
        assert (dumped["user_messages"], dumped["agent_responses"], dumped["metadata"]) == (
            [],
            [],
            {},
        )
