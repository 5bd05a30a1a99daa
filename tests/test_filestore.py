"""Moving a file store's directory into the database and back out (statestore.filestore)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from statestore import (
    DatabaseError,
    InvalidArgumentError,
    InvalidDataError,
    Session,
    StateStore,
    UserMessage,
    _ops,
    filestore,
)
from tests.conftest import SAMPLE_DIR, Traced

DAMAGED = {
    "personas/not-json.json": "not valid JSON",
    "seeds/latin1.md": "not UTF-8",
    "sessions/README.txt": "not a .md or .json file",
    "sessions/corrupt-half-written.json": "not valid JSON",
}

_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def _microseconds(value: Any) -> Any:
    """Return ``value`` with every RFC 3339 timestamp read to microsecond precision."""
    if isinstance(value, dict):
        return {key: _microseconds(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_microseconds(item) for item in value]
    if isinstance(value, str) and (match := _TIMESTAMP.match(value)):
        whole, fraction, zone = match.groups()
        text = f"{whole}.{(fraction or '0')[:6]:0<6}{'+00:00' if zone == 'Z' else zone}"
        return datetime.fromisoformat(text).astimezone(UTC)
    return value


def _sample_values(root: Path) -> dict[str, Any]:
    """Return every readable file under ``root`` by relative path: JSON parsed, markdown as text."""
    values: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_dir() or relative in DAMAGED or relative.endswith(".tmp"):
            continue
        text = path.read_text(encoding="utf-8")
        values[relative] = _microseconds(json.loads(text)) if path.suffix == ".json" else text
    return values


async def _everything(store: StateStore) -> tuple[list[Session], dict[tuple[str, str], Any]]:
    """Return every session (sorted by id) and every document by (category, name)."""
    summaries = await store.list_sessions()
    sessions = [await store.load_session(summary.id) for summary in summaries]
    documents: dict[tuple[str, str], Any] = {}
    for category in await store.list_categories():
        for name in await store.list_category(category):
            documents[(category, name)] = (
                await store.load_markdown(category, name),
                await store.load_json(category, name),
            )
    return sorted((s for s in sessions if s is not None), key=lambda s: s.id), documents


# -- import ---------------------------------------------------------------------------------


@pytest.fixture(params=[0, 1], ids=["read-in-a-thread", "read-in-a-worker-process"])
def workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many worker processes an import reads with (used whatever the file count)."""
    monkeypatch.setattr(filestore, "PARALLEL_IMPORT_MIN_FILES", 1)
    workers: int = request.param
    return workers


async def test_import_of_the_sample_reports_what_it_stored_and_skipped(
    store: StateStore, workers: int
) -> None:
    """Every readable file is imported; each damaged file is named with its reason."""
    report = await store.import_directory(SAMPLE_DIR, workers=workers)
    assert (report.sessions_added, report.sessions_updated, report.sessions_unchanged) == (40, 0, 0)
    assert (report.documents_added, report.documents_updated) == (12, 0)
    assert report.temp_files == 1
    assert {skipped.path: skipped.reason for skipped in report.skipped}.keys() == DAMAGED.keys()
    for skipped in report.skipped:
        assert DAMAGED[skipped.path] in skipped.reason
    assert [skipped.path for skipped in report.skipped] == sorted(DAMAGED)
    assert not report.complete
    assert len(await store.list_sessions()) == 40
    assert await store.list_categories() == ["agents", "memory/notes", "personas", "seeds"]


async def test_imported_sessions_equal_their_files(store: StateStore, workers: int) -> None:
    """Each session loads equal to its file read by the model, unknown fields included."""
    await store.import_directory(SAMPLE_DIR, workers=workers)
    for path in sorted((SAMPLE_DIR / "sessions").glob("*.json")):
        if f"sessions/{path.name}" in DAMAGED:
            continue
        expected = Session.model_validate_json(path.read_text(encoding="utf-8"))
        assert await store.load_session(path.stem) == expected, path.name


async def test_second_import_changes_nothing(store: StateStore, workers: int) -> None:
    """Importing the same directory again writes no row: every save counter stays."""
    await store.import_directory(SAMPLE_DIR, workers=workers)
    before = await _everything(store)
    versions = await _versions(store)
    report = await store.import_directory(SAMPLE_DIR, workers=workers)
    assert (report.sessions_added, report.sessions_updated, report.sessions_unchanged) == (0, 0, 40)
    assert (report.documents_added, report.documents_updated, report.documents_unchanged) == (
        0,
        0,
        12,
    )
    assert await _everything(store) == before
    assert await _versions(store) == versions


async def _versions(store: StateStore) -> dict[str, tuple[int, int]]:
    def body(tx: Any) -> dict[str, tuple[int, int]]:
        rows = tx.rows("SELECT id, version, state_token FROM sessions", {})
        return {session_id: (version, token) for session_id, version, token in rows}

    result: dict[str, tuple[int, int]] = await store._db.read("test", body)
    return result


async def test_import_replaces_a_session_whose_file_changed(
    store: StateStore, tmp_path: Path
) -> None:
    """A changed file updates its session whole; unchanged files stay unchanged."""
    root = tmp_path / "files"
    shutil.copytree(SAMPLE_DIR, root)
    await store.import_directory(root)
    path = root / "sessions" / "02e9c9fb-d093-4b64-b414-c2dce9f8f71f.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["user_messages"] = data["user_messages"][:1]
    path.write_text(json.dumps(data), encoding="utf-8")
    report = await store.import_directory(root)
    assert (report.sessions_added, report.sessions_updated, report.sessions_unchanged) == (0, 1, 39)
    session = await store.load_session(path.stem)
    assert session is not None
    assert len(session.user_messages) == 1


def _write(root: Path, path: str, content: str | bytes) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content, encoding="utf-8")


BAD_FILES = [
    pytest.param(
        "sessions/s.json", '{"user_id": "u", "user_mess', "not valid JSON", id="truncated"
    ),
    pytest.param("notes/a.md", b"caf\xe9", "not UTF-8", id="latin-1-markdown"),
    pytest.param("notes/b.json", b'{"a": "\xff"}', "not UTF-8", id="latin-1-json"),
    pytest.param("notes/c.json", "not json", "not valid JSON", id="json-document-not-json"),
    pytest.param("notes/d.json", '{"a": NaN}', "not a JSON number", id="nan"),
    pytest.param("sessions/s.json", '{"user_messages": []}', "user_id", id="session-no-user"),
    pytest.param("sessions/s.json", "[1, 2]", "JSON object", id="session-not-object"),
    pytest.param("sessions/s.json", '{"id": "t", "user_id": "u"}', "does not match", id="id"),
    pytest.param(
        "sessions/s.json",
        '{"user_id": "u", "created_at": "2026-01-01T00:00:00"}',
        "created_at",
        id="naive-timestamp",
    ),
    pytest.param(
        "sessions/s.json",
        '{"user_id": "u", "user_messages": [{"content": "a\\u0000b"}]}',
        "NUL",
        id="nul-in-message",
    ),
    pytest.param("notes/e.md", "a\x00b", "NUL", id="nul-in-markdown"),
    pytest.param("top.json", "{}", "not inside a category folder", id="no-category"),
    pytest.param("notes/x..y.md", "text", "x..y", id="bad-name"),
    pytest.param("notes/f.txt", "text", "not a .md or .json file", id="other-suffix"),
    pytest.param("notes/g.json", "[" * 100 + "]" * 100, "deeper", id="too-deep"),
]


@pytest.mark.parametrize(("path", "content", "reason"), BAD_FILES)
async def test_a_bad_file_is_skipped_with_its_reason_and_nothing_else(
    store: StateStore, tmp_path: Path, path: str, content: str | bytes, reason: str
) -> None:
    """A file that cannot be imported is reported by path and reason; its neighbours import."""
    root = tmp_path / "files"
    _write(root, path, content)
    _write(root, "sessions/good.json", '{"user_id": "u"}')
    _write(root, "notes/good.md", "fine")
    report = await store.import_directory(root)
    assert [skipped.path for skipped in report.skipped] == [path]
    assert reason in report.skipped[0].reason
    assert (report.sessions_added, report.documents_added) == (1, 1)
    assert await store.load_markdown("notes", "good") == "fine"


async def test_temp_files_are_counted_not_imported(store: StateStore, tmp_path: Path) -> None:
    """Leftover ``*.tmp`` files anywhere are ignored and counted, and are not skips."""
    root = tmp_path / "files"
    _write(root, "sessions/a.json.1234.tmp", '{"user_id": "u"')
    _write(root, "memory/notes/b.md.tmp", "half")
    _write(root, "memory/notes/b.md", "whole")
    report = await store.import_directory(root)
    assert report.temp_files == 2
    assert report.complete
    assert await store.list_category("memory/notes") == ["b"]
    assert await store.list_sessions() == []


async def test_nested_categories_and_sessions_markdown_are_documents(
    store: StateStore, tmp_path: Path
) -> None:
    """Nested folders become nested categories; markdown under sessions/ is a document."""
    root = tmp_path / "files"
    _write(root, "a/b/c/deep.json", '{"k": [1, 2]}')
    _write(root, "sessions/readme.md", "# about")
    report = await store.import_directory(root)
    assert report.complete
    assert await store.load_json("a/b/c", "deep") == {"k": [1, 2]}
    assert await store.load_markdown("sessions", "readme") == "# about"


async def test_document_takes_its_file_modification_time(store: StateStore, tmp_path: Path) -> None:
    """An imported document's updated_at is its file's modification time."""
    root = tmp_path / "files"
    _write(root, "notes/a.md", "text")
    moment = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    os.utime(root / "notes/a.md", (moment.timestamp(), moment.timestamp()))
    await store.import_directory(root)
    rows = await store._db.read("test", lambda tx: _ops.documents_in(tx, "notes"))
    assert rows == [("a", "markdown", "text", moment)]


async def test_import_of_a_missing_directory_is_refused(store: StateStore, tmp_path: Path) -> None:
    """A path that is not a directory gives InvalidDataError naming it."""
    with pytest.raises(InvalidDataError, match="not a directory"):
        await store.import_directory(tmp_path / "nowhere")


async def test_a_failed_batch_leaves_whole_sessions_and_a_rerun_finishes(
    store: StateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """A crash in the second batch keeps the first whole and writes none of the second."""
    root = tmp_path / "files"
    for index in range(10):
        body = {
            "user_id": "u",
            "created_at": "2026-03-01T00:00:00Z",
            "user_messages": [
                {"content": f"m{index}-{n}", "timestamp": "2026-03-01T00:00:01Z"} for n in range(3)
            ],
        }
        _write(root, f"sessions/s{index}.json", json.dumps(body))
    monkeypatch.setattr(filestore, "IMPORT_BATCH", 4)
    calls = 0
    import_sessions = _ops.import_sessions

    def failing_second_batch(tx: Any, items: Any, **options: Any) -> _ops.ImportCounts:
        nonlocal calls
        calls += 1
        result = import_sessions(tx, items, **options)  # write the rows, then fail before commit
        if calls == 2:
            raise OSError("simulated crash")
        return result

    monkeypatch.setattr(_ops, "import_sessions", failing_second_batch)
    with pytest.raises(DatabaseError, match="simulated crash"):
        await store.import_directory(root, workers=workers)
    stored = sorted(summary.id for summary in await store.list_sessions())
    assert stored == ["s0", "s1", "s2", "s3"]
    for session_id in stored:
        session = await store.load_session(session_id)
        assert session is not None
        assert len(session.user_messages) == 3

    monkeypatch.setattr(_ops, "import_sessions", import_sessions)
    report = await store.import_directory(root, workers=workers)
    assert (report.sessions_added, report.sessions_unchanged) == (6, 4)
    assert len(await store.list_sessions()) == 10


async def test_a_cancelled_import_keeps_whole_batches_and_a_rerun_finishes(
    store: StateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Cancelled after its first batch, an import leaves that batch whole and stops its
    readers; the store goes on working, and importing again finishes the job."""
    root = tmp_path / "files"
    for index in range(12):
        body = {
            "user_id": "u",
            "created_at": "2026-03-01T00:00:00Z",
            "user_messages": [{"content": f"m{index}", "timestamp": "2026-03-01T00:00:01Z"}],
        }
        _write(root, f"sessions/s{index:02d}.json", json.dumps(body))
    monkeypatch.setattr(filestore, "IMPORT_BATCH", 4)
    first_batch_done = asyncio.Event()
    task = asyncio.create_task(
        store.import_directory(
            root, workers=workers, progress=lambda done, total: first_batch_done.set()
        )
    )
    await first_batch_done.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stored = await store.list_sessions()
    assert len(stored) in (4, 8)  # the batch in flight may have committed
    for summary in stored:
        assert summary.message_count == 1

    report = await store.import_directory(root, workers=workers)
    assert report.sessions_added + report.sessions_unchanged == 12
    assert len(await store.list_sessions()) == 12


@pytest.mark.parametrize("workers", [-1, 65, True, 1.5, "2"])
async def test_import_refuses_a_bad_worker_count(store: StateStore, workers: Any) -> None:
    """A worker count that is not an int from 0 to 64 is refused, naming the argument."""
    with pytest.raises(InvalidArgumentError, match="workers"):
        await store.import_directory(SAMPLE_DIR, workers=workers)
    assert await store.list_sessions() == []


async def test_left_out_fields_survive_the_database(store: StateStore) -> None:
    """Which fields a session was given without is stored, so its JSON comes back the same."""
    await store.save_json("sessions", "s", {"user_id": "u", "agent_responses": []})
    loaded = await store.load_json("sessions", "s")
    assert set(loaded) == {"id", "user_id", "agent_responses", "created_at", "updated_at"}


# -- export -----------------------------------------------------------------------------------


async def test_export_of_the_imported_sample_equals_its_files(
    store: StateStore, tmp_path: Path
) -> None:
    """Every exported file holds the same values as its source (timestamps to the microsecond)."""
    await store.import_directory(SAMPLE_DIR)
    report = await store.export_directory(tmp_path / "out")
    assert (report.sessions, report.documents) == (40, 12)
    assert _sample_values(tmp_path / "out") == _sample_values(SAMPLE_DIR)


async def test_export_writes_the_file_store_format(store: StateStore, tmp_path: Path) -> None:
    """Files are JSON indented by two spaces, unescaped, in the model's field order, ``Z`` times."""
    session = Session(
        id="s1",
        user_id="ü",
        created_at=datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC),
        updated_at=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
    )
    session.user_messages.append(
        UserMessage(content="hi", timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    )
    await store.save_session(session)
    await store.save_json("agents", "a", {"b": 1})
    await store.export_directory(tmp_path / "out")
    text = (tmp_path / "out/sessions/s1.json").read_text(encoding="utf-8")
    assert text.startswith('{\n  "id": "s1",\n  "user_id": "ü",\n  "user_messages": [\n')
    assert '"timestamp": "2026-01-02T03:04:05Z"' in text
    assert '"created_at": "2026-01-02T03:04:05.123Z"' in text
    assert (tmp_path / "out/agents/a.json").read_text(encoding="utf-8") == '{\n  "b": 1\n}'
    modified = (tmp_path / "out/sessions/s1.json").stat().st_mtime
    assert modified == session.updated_at.timestamp()
    assert not list((tmp_path / "out").rglob("*.tmp"))


async def test_import_export_import_gives_an_equal_database(
    store: StateStore, tmp_path: Path
) -> None:
    """The round trip through files loses nothing: sessions and documents compare equal."""
    await store.import_directory(SAMPLE_DIR)
    await store.save_markdown("sessions", "notes", "markdown beside sessions")
    first = await _everything(store)
    await store.export_directory(tmp_path / "out")
    async with StateStore.open(tmp_path / "second.db") as second:
        report = await second.import_directory(tmp_path / "out")
        assert report.complete
        assert await _everything(second) == first


async def test_export_of_one_user_writes_only_their_sessions(
    store: StateStore, tmp_path: Path
) -> None:
    """``user_id`` exports that user's sessions and no documents."""
    await store.import_directory(SAMPLE_DIR)
    theirs = {summary.id for summary in await store.list_sessions(user_id="user-0")}
    report = await store.export_directory(tmp_path / "out", user_id="user-0")
    written = {path.stem for path in (tmp_path / "out").rglob("*") if path.is_file()}
    assert written == theirs
    assert (report.sessions, report.documents) == (len(theirs), 0)


async def test_export_refuses_a_directory_that_is_not_empty(
    store: StateStore, tmp_path: Path
) -> None:
    """Exporting over existing files needs ``overwrite``, and then leaves other files alone."""
    await store.save_markdown("notes", "a", "new")
    out = tmp_path / "out"
    _write(out, "notes/a.md", "old")
    _write(out, "other.txt", "kept")
    with pytest.raises(InvalidDataError, match="not empty"):
        await store.export_directory(out)
    assert (out / "notes/a.md").read_text(encoding="utf-8") == "old"
    await store.export_directory(out, overwrite=True)
    assert (out / "notes/a.md").read_text(encoding="utf-8") == "new"
    assert (out / "other.txt").read_text(encoding="utf-8") == "kept"


async def test_export_reports_progress_to_the_end(store: StateStore, tmp_path: Path) -> None:
    """The progress callback ends with everything done, for import and for export."""
    seen: list[tuple[int, int]] = []
    await store.import_directory(
        SAMPLE_DIR, progress=lambda done, total: seen.append((done, total))
    )
    assert seen[-1] == (56, 56)  # every file but the temp file
    seen.clear()
    await store.export_directory(tmp_path / "out", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] > 0


# -- erasure and upkeep -----------------------------------------------------------------------


async def test_delete_user_removes_their_sessions_and_rows_only(
    store: StateStore, db_path: Path
) -> None:
    """Every session of the user goes, with its messages; other users keep theirs."""
    await store.import_directory(SAMPLE_DIR)
    theirs = await store.list_sessions(user_id="user-0")
    others = [s for s in await store.list_sessions() if s.user_id != "user-0"]
    assert theirs
    assert await store.delete_user("user-0") == len(theirs)
    assert await store.list_sessions(user_id="user-0") == []
    assert await store.list_sessions() == others

    def orphans(tx: Any) -> int:
        rows = tx.rows(
            "SELECT count(*) FROM messages WHERE session_id NOT IN (SELECT id FROM sessions)", {}
        )
        return int(rows[0][0])

    assert await store._db.read("test", orphans) == 0
    assert await store.delete_user("user-0") == 0


async def test_delete_user_is_one_statement_in_one_transaction(
    db_path: Path, traced: Traced
) -> None:
    """The erasure is a single DELETE inside one write transaction: all or nothing."""
    async with StateStore.open(db_path) as store:
        for index in range(3):
            await store.save_session(Session(id=f"s{index}", user_id="u"))
        traced.clear()
        assert await store.delete_user("u") == 3
        writer = [statement.strip() for statement in traced.of(0)]
    # The writer sets its lock wait around BEGIN. SQLite traces the statement again for each
    # trigger and cascade it runs, and the search index's FTS5 table (which the cascade's
    # triggers reach) reads the data version.
    writer = [statement for statement in writer if not statement.startswith("PRAGMA busy")]
    assert (writer[0], writer[-1]) == ("BEGIN IMMEDIATE", "COMMIT")
    statements = set(writer[1:-1]) - {"-- PRAGMA 'main'.data_version"}
    assert statements == {"DELETE FROM sessions WHERE user_id = 'u'"}


async def test_compact_gives_space_back_after_deletes(store: StateStore) -> None:
    """After most sessions are deleted, compact reports a smaller database than before."""
    for index in range(200):
        session = Session(id=f"s{index}", user_id="u")
        # Random text: PostgreSQL would compress a repeated character to nothing.
        session.user_messages.extend(UserMessage(content=secrets.token_hex(1000)) for _ in range(5))
        await store.save_session(session)
    for index in range(190):
        await store.delete_session(f"s{index}")
    before, after = await store.compact()
    assert after < before / 2
    assert len(await store.list_sessions()) == 10


def test_files_that_are_not_regular_or_too_large_or_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO (which would block a read) and a file over the limit are skipped with the
    reason; hidden files are left out, as hidden folders are."""
    root = tmp_path / "files"
    _write(root, "sessions/ok.json", json.dumps({"user_id": "u"}))
    _write(root, "notes/big.md", "x" * 2_000)
    _write(root, "notes/.DS_Store", "junk")
    _write(root, ".gitignore", "*.db")
    os.mkfifo(root / "sessions" / "pipe.json")
    monkeypatch.setattr(filestore, "MAX_FILE_BYTES", 1_000)

    paths, _ = filestore.find_files(root)
    assert paths == ["notes/big.md", "sessions/ok.json", "sessions/pipe.json"]
    reasons = {
        path: str(getattr(filestore.read_file(root, path), "reason", "read")) for path in paths
    }
    assert reasons == {
        "notes/big.md": "is 2,000 bytes; the limit is 1,000",
        "sessions/ok.json": "read",
        "sessions/pipe.json": "not a regular file",
    }


def test_workers_are_gone_when_an_import_ends_or_is_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an import with workers returns, or is cancelled, no worker process is left."""
    import multiprocessing

    root = tmp_path / "files"
    for index in range(40):
        body = {"user_id": "u", "user_messages": [{"content": f"m{index}"}]}
        _write(root, f"sessions/s{index:02d}.json", json.dumps(body))
    monkeypatch.setattr(filestore, "PARALLEL_IMPORT_MIN_FILES", 1)
    monkeypatch.setattr(filestore, "IMPORT_BATCH", 4)

    async def run() -> None:
        async with StateStore.open(tmp_path / "done.db") as store:
            await store.import_directory(root, workers=2)
        assert multiprocessing.active_children() == []
        async with StateStore.open(tmp_path / "cancelled.db") as store:
            first = asyncio.Event()
            task = asyncio.create_task(
                store.import_directory(root, workers=2, progress=lambda d, t: first.set())
            )
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        for _ in range(100):  # terminated: gone as soon as the OS reaps them
            if not multiprocessing.active_children():
                break
            await asyncio.sleep(0.05)
        assert multiprocessing.active_children() == []

    asyncio.run(run())


def test_a_script_without_the_main_guard_gets_a_clear_error(tmp_path: Path) -> None:
    """Workers are spawned, which imports the script again: without the guard the import
    fails with an error that says so, and nothing hangs."""
    root = tmp_path / "files"
    for index in range(3):
        _write(root, f"sessions/s{index}.json", json.dumps({"user_id": "u"}))
    script = tmp_path / "unguarded.py"
    script.write_text(
        f"""
import asyncio
from statestore import StateStore, filestore
filestore.PARALLEL_IMPORT_MIN_FILES = 1

async def main():
    async with StateStore.open({str(tmp_path / "state.db")!r}) as store:
        await store.import_directory({str(root)!r}, workers=1)

asyncio.run(main())
""",
        encoding="utf-8",
    )
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "InvalidArgumentError" in result.stderr
    assert '__name__ == "__main__"' in result.stderr
