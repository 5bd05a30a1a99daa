"""The ``statestore`` command, driven through click's runner and as a real subprocess.

Most tests import ``examples/filestore-sample`` (once, then copy the database) and check
what each command prints against numbers computed here from the sample's own files.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import shutil
import sqlite3
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from statestore import Session, StateStore, UserMessage, migrate
from statestore.cli import cli

from .conftest import SAMPLE_DIR

# -- the sample, read directly ------------------------------------------------------------

DAMAGED = {
    "personas/not-json.json": "not valid JSON",
    "seeds/latin1.md": "not UTF-8",
    "sessions/README.txt": "not a .md or .json file",
    "sessions/corrupt-half-written.json": "not valid JSON",
}
"""The sample's files that import must skip, with a fragment of each reason."""

SAMPLE_SESSIONS: dict[str, dict[str, Any]] = {
    path.stem: json.loads(path.read_text(encoding="utf-8"))
    for path in sorted((SAMPLE_DIR / "sessions").glob("*.json"))
    if f"sessions/{path.name}" not in DAMAGED
}

SAMPLE_DOCUMENTS: dict[tuple[str, str, str], Path] = {
    (
        path.parent.relative_to(SAMPLE_DIR).as_posix(),
        path.stem,
        "json" if path.suffix == ".json" else "markdown",
    ): path
    for path in sorted(SAMPLE_DIR.rglob("*"))
    if path.suffix in {".md", ".json"}
    and path.parent.name != "sessions"
    and path.relative_to(SAMPLE_DIR).as_posix() not in DAMAGED
}

IMPORT_REPORT = [
    f"sessions: {len(SAMPLE_SESSIONS)} added, 0 updated, 0 unchanged",
    f"documents: {len(SAMPLE_DOCUMENTS)} added, 0 updated, 0 unchanged",
    "temp files ignored: 1",
]

COMMANDS = {
    "migrate": "upgrade",
    "import": "Import a file store's directory",
    "export": "Write the database out as a file store directory",
    "sessions": "List sessions",
    "search": "Print the texts that match QUERY",
    "show": "Show one session's conversation",
    "delete": "Delete one session",
    "delete-user": "Delete every session of one user",
    "prune": "Delete old sessions",
    "docs": "List a category's documents",
    "doc": "Print one document",
    "stats": "pass rate by seed",
    "compact": "Give back the space",
}
"""Every command the issue asks for, with words its ``--help`` must say."""

USERS = ["user-0", "user with spaces", "ünïcødé-user"]
"""Sample users whose ids are plain, hold spaces, and are not ASCII."""

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SIZES = re.compile(r"size: ([\d,]+) bytes before, ([\d,]+) bytes after")


def instant(text: str) -> datetime:
    """Parse a file-store timestamp, cut to the microseconds the store keeps."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00"))


def timestamps_parsed(value: Any) -> Any:
    """Return a JSON value with every timestamp string replaced by its instant."""
    if isinstance(value, dict):
        return {key: timestamps_parsed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [timestamps_parsed(item) for item in value]
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", value):
        return instant(value)
    return value


def exchanges(session: dict[str, Any]) -> list[dict[str, Any]]:
    """Return a sample session's user messages and agent responses."""
    return [*session.get("user_messages", []), *session.get("agent_responses", [])]


def ids_where(**fields: str) -> set[str]:
    """Return the ids of the sample sessions whose fields have these values."""
    return {
        session_id
        for session_id, session in SAMPLE_SESSIONS.items()
        if all(session_field(session, name) == value for name, value in fields.items())
    }


def session_field(session: dict[str, Any], name: str) -> Any:
    """Return ``user_id`` or ``project_id`` (kept under ``metadata.project_ids``)."""
    if name == "project_id":
        return (session.get("metadata") or {}).get("project_ids")
    return session[name]


def newest_first(session_ids: set[str]) -> list[str]:
    """Order sample session ids as listings do: by (updated_at, id), newest first."""
    return sorted(
        session_ids,
        key=lambda session_id: (instant(SAMPLE_SESSIONS[session_id]["updated_at"]), session_id),
        reverse=True,
    )


# -- running the command -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove variables that would choose a database or make rich think it has a terminal."""
    for name in ("STATESTORE_DB", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


def run(db: Path | str, *args: str, user_input: str | None = None) -> Result:
    """Run ``statestore --db DB ARGS`` through click's runner."""
    return CliRunner().invoke(cli, ["--db", str(db), *args], input=user_input)


def succeeded(result: Result) -> Result:
    """Return the result after checking the command exited 0."""
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def listed_ids(db: Path) -> list[str]:
    """Return the ids ``sessions --json`` lists, in its order."""
    return [summary["id"] for summary in json.loads(run(db, "sessions", "--json").stdout)]


def error_lines(result: Result) -> list[str]:
    """Return the lines of stderr that start with ``Error:``."""
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return [line for line in result.stderr.splitlines() if line.startswith("Error: ")]


def subprocess_environment() -> dict[str, str]:
    """Return this environment without variables that steer rich or the database."""
    leave_out = {"STATESTORE_DB", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"}
    return {name: value for name, value in os.environ.items() if name not in leave_out}


@pytest.fixture(scope="session")
def imported_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a database the CLI imported the sample into, to be copied by tests."""
    db = tmp_path_factory.mktemp("template") / "sample.db"
    result = run(db, "import", str(SAMPLE_DIR))
    assert result.stdout.splitlines() == IMPORT_REPORT, result.stderr
    return db


@pytest.fixture
def sample_db(tmp_path: Path, imported_template: Path) -> Path:
    """Return a copy of the imported sample database, for this test alone."""
    db = tmp_path / "sample.db"
    for part in imported_template.parent.glob(f"{imported_template.name}*"):
        shutil.copy(part, tmp_path / part.name)
    return db


# -- choosing the database ----------------------------------------------------------------


def test_db_option_chooses_the_database(tmp_path: Path) -> None:
    """``--db`` names the SQLite file the command works on."""
    succeeded(run(tmp_path / "chosen.db", "migrate"))
    assert (tmp_path / "chosen.db").is_file()


def test_environment_variable_chooses_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``--db``, ``STATESTORE_DB`` names the database."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["migrate"], env={"STATESTORE_DB": str(tmp_path / "env.db")})
    succeeded(result)
    assert (tmp_path / "env.db").is_file()
    assert not (tmp_path / "statestore.db").exists()


def test_db_option_wins_over_environment_variable(tmp_path: Path) -> None:
    """``--db`` is used even when ``STATESTORE_DB`` is set."""
    result = CliRunner().invoke(
        cli,
        ["--db", str(tmp_path / "option.db"), "migrate"],
        env={"STATESTORE_DB": str(tmp_path / "env.db")},
    )
    succeeded(result)
    assert (tmp_path / "option.db").is_file()
    assert not (tmp_path / "env.db").exists()


def test_default_database_is_statestore_db_in_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With neither ``--db`` nor ``STATESTORE_DB`` the database is ``./statestore.db``."""
    monkeypatch.chdir(tmp_path)
    succeeded(CliRunner().invoke(cli, ["migrate"]))
    assert (tmp_path / "statestore.db").is_file()


def test_db_option_accepts_a_url(sample_db: Path) -> None:
    """``--db`` takes an SQLAlchemy URL as well as a path."""
    result = succeeded(run(f"sqlite+aiosqlite:///{sample_db}", "sessions", "--json"))
    assert {summary["id"] for summary in json.loads(result.stdout)} == set(SAMPLE_SESSIONS)


def test_missing_database_is_not_created(tmp_path: Path) -> None:
    """A read command on a missing database fails without creating the file."""
    result = run(tmp_path / "absent.db", "sessions")
    assert result.exit_code == 1
    assert not (tmp_path / "absent.db").exists()


# -- migrate ------------------------------------------------------------------------------


def test_migrate_creates_and_reports_newest_revision(tmp_path: Path) -> None:
    """``migrate`` on a new file upgrades it from no revision to the newest and says so."""
    result = succeeded(run(tmp_path / "new.db", "migrate"))
    head = migrate.head_revision()
    assert result.stdout == f"schema upgraded from revision none to {head} (newest)\n"
    assert asyncio.run(migrate.current_revision(tmp_path / "new.db")) == head


def test_migrate_again_reports_already_current(tmp_path: Path) -> None:
    """A second ``migrate`` says the schema is already at the newest revision."""
    succeeded(run(tmp_path / "new.db", "migrate"))
    result = succeeded(run(tmp_path / "new.db", "migrate"))
    assert result.stdout == f"schema already at revision {migrate.head_revision()} (newest)\n"


# -- import -------------------------------------------------------------------------------


def test_import_stores_every_valid_session(tmp_path: Path) -> None:
    """``import`` of the sample stores exactly its 40 valid sessions and reports the counts."""
    result = run(tmp_path / "db.sqlite", "import", str(SAMPLE_DIR))
    assert result.stdout.splitlines() == IMPORT_REPORT
    assert len(SAMPLE_SESSIONS) == 40
    assert sorted(listed_ids(tmp_path / "db.sqlite")) == sorted(SAMPLE_SESSIONS)


def test_import_names_each_skipped_file_with_reason_and_exits_1(tmp_path: Path) -> None:
    """Each damaged file is named on stderr with why, then one error line, and exit status 1."""
    result = run(tmp_path / "db.sqlite", "import", str(SAMPLE_DIR))
    assert result.exit_code == 1
    *skipped_lines, last = result.stderr.splitlines()
    reasons = dict(line.removeprefix("skipped ").split(": ", 1) for line in skipped_lines)
    assert sorted(reasons) == sorted(DAMAGED)
    for path, fragment in DAMAGED.items():
        assert fragment in reasons[path], (path, reasons[path])
    assert last == f"Error: {len(DAMAGED)} files were not imported (see above)"


def test_import_again_reports_everything_unchanged(sample_db: Path) -> None:
    """A second import of the same directory adds and updates nothing."""
    result = run(sample_db, "import", str(SAMPLE_DIR))
    assert result.stdout.splitlines() == [
        f"sessions: 0 added, 0 updated, {len(SAMPLE_SESSIONS)} unchanged",
        f"documents: 0 added, 0 updated, {len(SAMPLE_DOCUMENTS)} unchanged",
        "temp files ignored: 1",
    ]
    assert result.exit_code == 1


def test_import_keeps_what_was_saved_since_unless_told_to_replace(
    sample_db: Path, tmp_path: Path
) -> None:
    """Re-import keeps a session saved since, and says so; --replace-newer puts the file back."""
    session_id = next(iter(SAMPLE_SESSIONS))

    async def append() -> None:
        async with StateStore.open(sample_db) as store:
            session = await store.load_session(session_id)
            assert session is not None
            session.add_user_message("said after the import")
            await store.save_session(session)

    asyncio.run(append())
    kept = run(sample_db, "import", str(SAMPLE_DIR))
    assert kept.stdout.splitlines()[0] == (
        f"sessions: 0 added, 0 updated, {len(SAMPLE_SESSIONS) - 1} unchanged, "
        "1 kept (stored newer than the file)"
    )
    replaced = run(sample_db, "import", "--replace-newer", str(SAMPLE_DIR))
    assert replaced.stdout.splitlines()[0] == (
        f"sessions: 0 added, 1 updated, {len(SAMPLE_SESSIONS) - 1} unchanged"
    )
    shown = succeeded(run(sample_db, "show", session_id, "--json"))
    assert timestamps_parsed(json.loads(shown.stdout)) == timestamps_parsed(
        SAMPLE_SESSIONS[session_id]
    )


def test_export_names_a_file_it_cannot_write_and_exits_1(sample_db: Path, tmp_path: Path) -> None:
    """A stored session whose file name is too long is named on stderr; the rest are written."""
    with sqlite3.connect(sample_db) as connection:  # stored before names were bounded
        connection.execute(
            "UPDATE sessions SET id = ? WHERE id = ?", ("x" * 300, next(iter(SAMPLE_SESSIONS)))
        )
    result = run(sample_db, "export", str(tmp_path / "out"))
    assert result.exit_code == 1
    skipped, last = result.stderr.splitlines()
    assert skipped.startswith(f"skipped sessions/{'x' * 300}.json: cannot be written")
    assert last == "Error: 1 files were not written (see above)"
    written = list((tmp_path / "out" / "sessions").iterdir())
    assert len(written) == len(SAMPLE_SESSIONS) - 1


def test_import_of_clean_directory_exits_0(sample_db: Path, tmp_path: Path) -> None:
    """``import`` exits 0, printing nothing on stderr, when no file was skipped."""
    succeeded(run(sample_db, "export", str(tmp_path / "out")))
    result = run(tmp_path / "fresh.db", "import", str(tmp_path / "out"))
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout.splitlines()[:2] == IMPORT_REPORT[:2]


def test_progress_bar_prints_nothing_without_terminal(tmp_path: Path) -> None:
    """Not on a terminal, import and export print only their report lines."""
    imported = run(tmp_path / "db.sqlite", "import", str(SAMPLE_DIR))
    exported = succeeded(run(tmp_path / "db.sqlite", "export", str(tmp_path / "out")))
    assert imported.stdout.splitlines() == IMPORT_REPORT
    assert all(line.startswith(("skipped ", "Error: ")) for line in imported.stderr.splitlines()), (
        imported.stderr
    )
    assert exported.stderr == ""
    assert exported.stdout == (
        f"exported {len(SAMPLE_SESSIONS)} sessions and {len(SAMPLE_DOCUMENTS)} documents\n"
    )


# -- export -------------------------------------------------------------------------------


def test_export_writes_sessions_equal_to_the_sample(sample_db: Path, tmp_path: Path) -> None:
    """Every exported session file holds the sample file's JSON value (timestamps to the µs)."""
    succeeded(run(sample_db, "export", str(tmp_path / "out")))
    written = sorted(path.name for path in (tmp_path / "out" / "sessions").iterdir())
    assert written == sorted(f"{session_id}.json" for session_id in SAMPLE_SESSIONS)
    for session_id, sample in SAMPLE_SESSIONS.items():
        exported = json.loads((tmp_path / "out" / "sessions" / f"{session_id}.json").read_text())
        assert timestamps_parsed(exported) == timestamps_parsed(sample), session_id


def test_export_writes_documents_equal_to_the_sample(sample_db: Path, tmp_path: Path) -> None:
    """Exported markdown is the sample's text and exported JSON documents its values."""
    out = tmp_path / "out"
    succeeded(run(sample_db, "export", str(out)))
    written = {
        path.relative_to(out).as_posix()
        for path in out.rglob("*")
        if path.is_file() and path.parent.name != "sessions"
    }
    assert written == {
        path.relative_to(SAMPLE_DIR).as_posix() for path in SAMPLE_DOCUMENTS.values()
    }
    for path in SAMPLE_DOCUMENTS.values():
        copy = out / path.relative_to(SAMPLE_DIR)
        if path.suffix == ".md":
            assert copy.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
        else:
            assert json.loads(copy.read_text(encoding="utf-8")) == json.loads(path.read_text())


@pytest.mark.parametrize("user_id", USERS, ids=["plain", "spaces", "unicode"])
def test_export_user_writes_only_that_users_sessions(
    sample_db: Path, tmp_path: Path, user_id: str
) -> None:
    """``export --user`` writes that user's sessions and nothing else."""
    out = tmp_path / "out"
    result = succeeded(run(sample_db, "export", str(out), "--user", user_id))
    expected = ids_where(user_id=user_id)
    assert {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()} == {
        f"sessions/{session_id}.json" for session_id in expected
    }
    assert result.stdout == f"exported {len(expected)} sessions and 0 documents\n"


def test_export_overwrite_writes_into_non_empty_directory(sample_db: Path, tmp_path: Path) -> None:
    """``export --overwrite`` writes into a non-empty directory and leaves other files."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    succeeded(run(sample_db, "export", str(out), "--overwrite"))
    assert (out / "keep.txt").read_text() == "mine"
    assert len(list((out / "sessions").iterdir())) == len(SAMPLE_SESSIONS)


# -- sessions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fields"),
    [
        ([], {}),
        (["--user", "user-2"], {"user_id": "user-2"}),
        (["--user", "ünïcødé-user"], {"user_id": "ünïcødé-user"}),
        (["--project", "proj-1"], {"project_id": "proj-1"}),
        (
            ["--user", "user with spaces", "--project", "proj-1"],
            {"user_id": "user with spaces", "project_id": "proj-1"},
        ),
        (["--user", "nobody"], {"user_id": "nobody"}),
    ],
    ids=["all", "user", "unicode-user", "project", "user-and-project", "unknown-user"],
)
def test_sessions_json_lists_matching_sessions_newest_first(
    sample_db: Path, options: list[str], fields: dict[str, str]
) -> None:
    """``sessions --json`` lists the sessions matching the filters, newest first."""
    result = succeeded(run(sample_db, "sessions", "--json", *options))
    listed = [summary["id"] for summary in json.loads(result.stdout)]
    assert listed == newest_first(ids_where(**fields))


@pytest.mark.parametrize("limit", [1, 7, 39], ids=["one", "seven", "all-but-one"])
def test_sessions_limit_lists_the_newest(sample_db: Path, limit: int) -> None:
    """``sessions --limit N`` lists the N most recently updated sessions."""
    result = succeeded(run(sample_db, "sessions", "--json", "--limit", str(limit)))
    listed = [summary["id"] for summary in json.loads(result.stdout)]
    assert listed == newest_first(set(SAMPLE_SESSIONS))[:limit]


@pytest.mark.parametrize(
    ("options", "listed"), [([], 50), (["--limit", "0"], 60)], ids=["default-50", "zero-all"]
)
def test_sessions_default_limit_is_50_and_0_means_all(
    tmp_path: Path, options: list[str], listed: int
) -> None:
    """``sessions`` lists 50 sessions by default, and every one with ``--limit 0``."""

    async def save_sixty() -> None:
        async with StateStore.open(tmp_path / "db.sqlite") as store:
            for number in range(60):
                await store.save_session(Session(id=f"s{number:02}", user_id="u"))

    asyncio.run(save_sixty())
    result = succeeded(run(tmp_path / "db.sqlite", "sessions", "--json", *options))
    assert len(json.loads(result.stdout)) == listed


def test_sessions_json_holds_each_summarys_fields(sample_db: Path) -> None:
    """Each listed summary carries the session's user, message count, seed and times."""
    result = succeeded(run(sample_db, "sessions", "--json"))
    for summary in json.loads(result.stdout):
        sample = SAMPLE_SESSIONS[summary["id"]]
        assert summary["user_id"] == sample["user_id"]
        assert summary["message_count"] == len(sample.get("user_messages", []))
        assert summary["active_seed_id"] == sample.get("active_seed_id")
        assert summary["project_id"] == session_field(sample, "project_id")
        assert instant(summary["updated_at"]) == instant(sample["updated_at"])


def test_sessions_table_shows_every_id_whole_when_piped(sample_db: Path) -> None:
    """The table, written to a pipe, holds every session id uncut and its user."""
    result = succeeded(run(sample_db, "sessions"))
    rows = {found[0]: line for line in result.stdout.splitlines() if (found := UUID.findall(line))}
    assert sorted(rows) == sorted(SAMPLE_SESSIONS)
    for session_id, row in rows.items():
        assert SAMPLE_SESSIONS[session_id]["user_id"] in row


# -- show ---------------------------------------------------------------------------------

CONVERSATIONS = sorted(
    session_id for session_id, session in SAMPLE_SESSIONS.items() if exchanges(session)
)


@pytest.mark.parametrize("session_id", CONVERSATIONS)
def test_show_prints_each_messages_content(sample_db: Path, session_id: str) -> None:
    """``show`` prints every message and response as written (tabs, long lines), in order."""
    result = succeeded(run(sample_db, "show", session_id))
    session = SAMPLE_SESSIONS[session_id]
    messages, responses = session.get("user_messages", []), session.get("agent_responses", [])
    in_turn_order = [
        item["content"]
        for turn in range(max(len(messages), len(responses)))
        for item in (*messages[turn : turn + 1], *responses[turn : turn + 1])
    ]
    position = 0
    for content in in_turn_order:
        found = result.stdout.find(content, position)
        assert found >= 0, (content, result.stdout[position:])
        position = found + len(content)


def test_show_prints_markup_literally(tmp_path: Path) -> None:
    """Message text that looks like rich markup is printed as written."""

    async def save() -> None:
        async with StateStore.open(tmp_path / "db.sqlite") as store:
            await store.save_session(
                Session(
                    id="markup",
                    user_id="u",
                    user_messages=[UserMessage(content="[bold]not bold[/bold] :smile:")],
                )
            )

    asyncio.run(save())
    result = succeeded(run(tmp_path / "db.sqlite", "show", "markup"))
    assert "[bold]not bold[/bold] :smile:" in result.stdout


@pytest.mark.parametrize("session_id", sorted(SAMPLE_SESSIONS)[:5])
def test_show_json_prints_the_sessions_file(sample_db: Path, session_id: str) -> None:
    """``show --json`` prints the session's file-store JSON, equal to the sample file's."""
    result = succeeded(run(sample_db, "show", session_id, "--json"))
    assert timestamps_parsed(json.loads(result.stdout)) == timestamps_parsed(
        SAMPLE_SESSIONS[session_id]
    )


# -- delete, delete-user --------------------------------------------------------------------


def test_delete_removes_only_that_session(sample_db: Path) -> None:
    """``delete`` removes the named session and leaves every other."""
    session_id = sorted(SAMPLE_SESSIONS)[3]
    result = succeeded(run(sample_db, "delete", session_id))
    assert result.stdout == f"deleted session {session_id}\n"
    assert sorted(listed_ids(sample_db)) == sorted(set(SAMPLE_SESSIONS) - {session_id})


@pytest.mark.parametrize("user_id", USERS, ids=["plain", "spaces", "unicode"])
def test_delete_user_yes_removes_exactly_that_users_sessions(sample_db: Path, user_id: str) -> None:
    """``delete-user --yes`` removes all of that user's sessions, no others, and counts them."""
    result = succeeded(run(sample_db, "delete-user", user_id, "--yes"))
    removed = ids_where(user_id=user_id)
    assert result.stdout == f"deleted {len(removed)} sessions of user {user_id}\n"
    assert sorted(listed_ids(sample_db)) == sorted(set(SAMPLE_SESSIONS) - removed)


def test_delete_user_answered_no_deletes_nothing(sample_db: Path) -> None:
    """Without ``--yes``, answering "n" to the question deletes nothing and exits non-zero."""
    result = run(sample_db, "delete-user", "user-0", user_input="n\n")
    assert result.exit_code != 0
    assert "Delete the 6 sessions of user 'user-0', with their messages?" in result.stdout
    assert sorted(listed_ids(sample_db)) == sorted(SAMPLE_SESSIONS)


def test_delete_user_answered_yes_deletes(sample_db: Path) -> None:
    """Without ``--yes``, answering "y" to the question deletes the user's sessions."""
    succeeded(run(sample_db, "delete-user", "user-4", user_input="y\n"))
    assert sorted(listed_ids(sample_db)) == sorted(
        set(SAMPLE_SESSIONS) - ids_where(user_id="user-4")
    )


def test_delete_user_with_no_sessions_deletes_none(sample_db: Path) -> None:
    """``delete-user`` of a user with no sessions reports 0 and leaves the store alone."""
    result = succeeded(run(sample_db, "delete-user", "nobody", "--yes"))
    assert result.stdout == "deleted 0 sessions of user nobody\n"
    assert len(listed_ids(sample_db)) == len(SAMPLE_SESSIONS)


# -- prune --------------------------------------------------------------------------------


def ttl_hours_dropping(oldest: int) -> int:
    """Return a TTL in whole hours that makes exactly the ``oldest`` sessions stale now.

    The cutoff falls in the middle of the gap after the ``oldest``-th session, which must be
    several hours wide so the rounding to hours cannot move it past a session.
    """
    ordered = sorted(instant(session["updated_at"]) for session in SAMPLE_SESSIONS.values())
    last_dropped, first_kept = ordered[oldest - 1], ordered[oldest]
    assert first_kept - last_dropped > timedelta(hours=4)
    cutoff = last_dropped + (first_kept - last_dropped) / 2
    return round((datetime.now(UTC) - cutoff) / timedelta(hours=1))


@pytest.mark.parametrize(
    ("max_sessions", "stale"),
    [(25, 0), (0, 10), (20, 11), (0, 0)],
    ids=["max-only", "ttl-only", "ttl-then-max", "both-off"],
)
def test_prune_dry_run_lists_what_prune_then_deletes(
    sample_db: Path, max_sessions: int, stale: int
) -> None:
    """``prune --dry-run`` deletes nothing and lists exactly what ``prune`` then deletes."""
    options = ["--max-sessions", str(max_sessions)]
    options += ["--ttl-hours", str(ttl_hours_dropping(stale) if stale else 0)]
    dry = succeeded(run(sample_db, "prune", *options, "--dry-run"))
    would_go = set(UUID.findall(dry.stdout))
    assert dry.stdout.endswith(
        f"would delete {len(would_go)} sessions (dry run: nothing deleted)\n"
    )
    assert sorted(listed_ids(sample_db)) == sorted(SAMPLE_SESSIONS)

    real = succeeded(run(sample_db, "prune", *options))
    gone = set(SAMPLE_SESSIONS) - set(listed_ids(sample_db))
    assert would_go == gone
    assert real.stdout == f"deleted {len(gone)} sessions\n"
    expected_kept = newest_first(set(SAMPLE_SESSIONS))[: len(SAMPLE_SESSIONS) - stale]
    if max_sessions:
        expected_kept = expected_kept[:max_sessions]
    assert gone == set(SAMPLE_SESSIONS) - set(expected_kept)


# -- docs, doc ----------------------------------------------------------------------------


def test_docs_lists_every_category(sample_db: Path) -> None:
    """``docs`` with no category lists every category holding documents, sorted."""
    result = succeeded(run(sample_db, "docs"))
    assert result.stdout.splitlines() == sorted({category for category, _, _ in SAMPLE_DOCUMENTS})


@pytest.mark.parametrize("category", ["agents", "memory/notes", "personas", "seeds", "sessions"])
def test_docs_category_lists_its_names(sample_db: Path, category: str) -> None:
    """``docs CATEGORY`` lists that category's document names (in sessions: session ids)."""
    result = succeeded(run(sample_db, "docs", category))
    expected = {name for in_category, name, _ in SAMPLE_DOCUMENTS if in_category == category}
    if category == "sessions":
        expected = set(SAMPLE_SESSIONS)
    assert result.stdout.splitlines() == sorted(expected)


@pytest.mark.parametrize(
    ("category", "name", "kind"),
    sorted(SAMPLE_DOCUMENTS),
    ids=["/".join(key) for key in sorted(SAMPLE_DOCUMENTS)],
)
def test_doc_prints_the_document(sample_db: Path, category: str, name: str, kind: str) -> None:
    """``doc CATEGORY NAME --kind K`` prints the JSON value or the markdown text."""
    result = succeeded(run(sample_db, "doc", category, name, "--kind", kind))
    text = SAMPLE_DOCUMENTS[category, name, kind].read_text(encoding="utf-8")
    if kind == "json":
        assert json.loads(result.stdout) == json.loads(text)
    else:
        # Exactly the text, ended by one newline whether or not the document has one.
        assert result.stdout == (text if text.endswith("\n") else text + "\n")


def test_doc_without_kind_prefers_json(sample_db: Path) -> None:
    """When both kinds share a name, ``doc`` prints the JSON one unless ``--kind markdown``."""
    result = succeeded(run(sample_db, "doc", "memory/notes", "both"))
    assert json.loads(result.stdout) == {"twin": True}


# -- stats --------------------------------------------------------------------------------


def expected_stats() -> dict[str, Any]:
    """Return the totals and pass rates ``stats`` should report, computed from the sample."""
    sessions = list(SAMPLE_SESSIONS.values())
    rates: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
    for session in sessions:
        for response in session.get("agent_responses", []):
            if response.get("evaluation_passed") is not None:
                rates[response.get("seed_id")][0] += 1
                rates[response.get("seed_id")][1] += response["evaluation_passed"]
    firsts, lasts = [], []
    for session in sessions:
        moments = [instant(item["timestamp"]) for item in exchanges(session)]
        firsts.append(min(moments, default=instant(session["created_at"])))
        lasts.append(max(moments, default=instant(session["updated_at"])))
    return {
        "sessions": len(sessions),
        "users": len({session["user_id"] for session in sessions}),
        "messages": sum(len(session.get("user_messages", [])) for session in sessions),
        "responses": sum(len(session.get("agent_responses", [])) for session in sessions),
        "documents": len(SAMPLE_DOCUMENTS),
        "first_activity_at": min(firsts),
        "last_activity_at": max(lasts),
        "pass_rates": {seed_id: tuple(counts) for seed_id, counts in rates.items()},
    }


def test_stats_json_matches_the_sample(sample_db: Path) -> None:
    """``stats --json`` totals, activity span and pass rates by seed match the sample files."""
    numbers = json.loads(succeeded(run(sample_db, "stats", "--json")).stdout)
    reported = {
        **{
            key: numbers[key] for key in ("sessions", "users", "messages", "responses", "documents")
        },
        "first_activity_at": instant(numbers["first_activity_at"]),
        "last_activity_at": instant(numbers["last_activity_at"]),
        "pass_rates": {
            rate["seed_id"]: (rate["evaluated"], rate["passed"]) for rate in numbers["pass_rates"]
        },
    }
    assert reported == expected_stats()


def test_stats_days_counts_activity_per_day(sample_db: Path) -> None:
    """``stats --days N`` counts each UTC day's messages, sessions and users."""
    per_day: dict[date, list[Any]] = defaultdict(lambda: [0, set(), set()])
    for session_id, session in SAMPLE_SESSIONS.items():
        for message in session.get("user_messages", []):
            day = per_day[instant(message["timestamp"]).date()]
            day[0] += 1
            day[1].add(session_id)
            day[2].add(session["user_id"])
    days = (datetime.now(UTC).date() - min(per_day)).days + 1
    numbers = json.loads(succeeded(run(sample_db, "stats", "--json", "--days", str(days))).stdout)
    assert numbers["days"] == [
        {"day": day.isoformat(), "messages": count, "sessions": len(ids), "users": len(users)}
        for day, (count, ids, users) in sorted(per_day.items())
    ]


def test_stats_table_shows_pass_rate_per_seed(sample_db: Path) -> None:
    """The ``stats`` tables show the totals and each seed's pass rate as a percentage."""
    result = succeeded(run(sample_db, "stats"))
    expected = expected_stats()
    lines = result.stdout.splitlines()
    for key in ("sessions", "users", "messages", "responses", "documents"):
        row = next(line for line in lines if f" {key} " in line)
        assert f" {expected[key]} " in row, row
    for seed_id, (evaluated, passed) in expected["pass_rates"].items():
        row = next(
            line for line in result.stdout.splitlines() if f" {seed_id or '(none)'} " in line
        )
        assert re.search(rf"\b{evaluated}\b.*\b{passed}\b.*\b{passed / evaluated:.0%}", row), row


# -- compact ------------------------------------------------------------------------------


def test_compact_after_deleting_most_sessions_reports_smaller_size(sample_db: Path) -> None:
    """After most sessions are deleted, ``compact`` reports a smaller size after than before."""
    succeeded(run(sample_db, "prune", "--max-sessions", "2", "--ttl-hours", "0"))
    result = succeeded(run(sample_db, "compact"))
    match = SIZES.fullmatch(result.stdout.strip())
    assert match, result.stdout
    before, after = (int(size.replace(",", "")) for size in match.groups())
    assert after < before
    assert len(listed_ids(sample_db)) == 2


# -- help ---------------------------------------------------------------------------------


def test_cli_has_exactly_the_issues_commands() -> None:
    """The command group holds every command the issue names, and no others."""
    assert sorted(cli.commands) == sorted(COMMANDS)


@pytest.mark.parametrize(("command", "words"), sorted(COMMANDS.items()), ids=sorted(COMMANDS))
def test_help_describes_each_command(command: str, words: str) -> None:
    """``COMMAND --help`` exits 0 and says what the command does."""
    result = succeeded(CliRunner().invoke(cli, [command, "--help"]))
    assert result.stdout.startswith(f"Usage: cli {command} ")
    assert words in " ".join(result.stdout.split())


def test_top_level_help_lists_every_command() -> None:
    """``--help`` on the group lists each command with its summary."""
    result = succeeded(CliRunner().invoke(cli, ["--help"]))
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line}
    assert listed == set(COMMANDS)
    assert "STATESTORE_DB" in result.stdout


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "no-such-session"], "Error: no session 'no-such-session'"),
        (["delete", "no-such-session"], "Error: no session 'no-such-session'"),
        (["show", "../etc"], "Error: invalid session id '../etc'"),
        (["doc", "seeds", "no-such-doc"], "Error: no document 'no-such-doc' in category 'seeds'"),
        (["doc", "memory/notes", "2026-03-02", "--kind", "json"], "Error: no document"),
        (["docs", "../up"], "Error: invalid category '../up'"),
    ],
    ids=[
        "show-unknown",
        "delete-unknown",
        "bad-session-id",
        "unknown-doc",
        "wrong-kind",
        "bad-category",
    ],
)
def test_failing_command_prints_one_error_line(
    sample_db: Path, args: list[str], message: str
) -> None:
    """A command that fails prints one ``Error:`` line on stderr, nothing else, and exits 1."""
    result = run(sample_db, *args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == error_lines(result)
    assert len(error_lines(result)) == 1
    assert error_lines(result)[0].startswith(message)


def test_export_into_non_empty_directory_fails_without_overwrite(
    sample_db: Path, tmp_path: Path
) -> None:
    """``export`` refuses a non-empty directory without ``--overwrite``, in one line."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = run(sample_db, "export", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == error_lines(result)
    assert "not empty" in error_lines(result)[0]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["keep.txt"]


@pytest.mark.parametrize(
    "command",
    [
        ["sessions"],
        ["show", "x"],
        ["delete", "x"],
        ["delete-user", "u", "--yes"],
        ["export", "out"],
        ["prune", "--max-sessions", "1", "--ttl-hours", "0"],
        ["docs"],
        ["doc", "c", "n"],
        ["stats"],
        ["compact"],
    ],
    ids=lambda command: command[0],
)
def test_missing_database_gives_one_error_line(tmp_path: Path, command: list[str]) -> None:
    """Every command but migrate and import refuses a missing database in one line."""
    result = run(tmp_path / "absent.db", *command)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == error_lines(result)
    assert error_lines(result)[0].startswith("Error: no database at ")


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "needs"), (b"garbage, not SQLite", "not a database")],
    ids=["unmigrated", "not-sqlite"],
)
def test_unusable_database_gives_one_error_line(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    """A file that is not a migrated statestore database is refused in one line."""
    db = tmp_path / "db.sqlite"
    db.write_bytes(content or b"")
    result = run(db, "sessions")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == error_lines(result)
    assert message in error_lines(result)[0]


@pytest.mark.parametrize(
    "args",
    [
        ["sessions", "--bogus"],
        ["sessions", "--limit", "-1"],
        ["stats", "--days", "0"],
        ["prune", "--max-sessions", "3"],
        ["doc", "seeds", "seed-alpha", "--kind", "yaml"],
        ["import", "does-not-exist"],
        ["no-such-command"],
    ],
    ids=[
        "unknown-option",
        "negative-limit",
        "zero-days",
        "missing-ttl",
        "bad-kind",
        "missing-directory",
        "unknown-command",
    ],
)
def test_bad_usage_gives_one_error_line_and_exit_2(sample_db: Path, args: list[str]) -> None:
    """Bad options or arguments print one ``Error:`` line (after the usage) and exit 2."""
    result = run(sample_db, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(error_lines(result)) == 1


# -- real processes -----------------------------------------------------------------------


def test_module_run_imports_and_reports_through_pipes(tmp_path: Path) -> None:
    """``python -m statestore import`` reports on stdout, skips on stderr, exits 1, no bar."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "statestore",
            "--db",
            str(tmp_path / "db.sqlite"),
            "import",
            str(SAMPLE_DIR),
        ],
        capture_output=True,
        text=True,
        env=subprocess_environment(),
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert completed.stdout.splitlines() == IMPORT_REPORT
    lines = completed.stderr.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [f"skipped {path}" for path in DAMAGED]
    assert lines[-1] == f"Error: {len(DAMAGED)} files were not imported (see above)"
    assert "\x1b" not in completed.stderr


def test_console_script_prints_sessions_json(sample_db: Path) -> None:
    """The installed ``statestore`` script lists the imported sessions as JSON and exits 0."""
    completed = subprocess.run(
        [
            str(Path(sys.executable).parent / "statestore"),
            "--db",
            str(sample_db),
            "sessions",
            "--json",
            "--limit",
            "0",
        ],
        capture_output=True,
        text=True,
        env=subprocess_environment(),
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert sorted(summary["id"] for summary in json.loads(completed.stdout)) == sorted(
        SAMPLE_SESSIONS
    )


def test_console_script_error_is_one_line(tmp_path: Path) -> None:
    """The installed script, on an unknown session, prints one ``Error:`` line and exits 1."""
    subprocess.run(
        [
            str(Path(sys.executable).parent / "statestore"),
            "--db",
            str(tmp_path / "db.sqlite"),
            "migrate",
        ],
        capture_output=True,
        env=subprocess_environment(),
        timeout=60,
        check=True,
    )
    completed = subprocess.run(
        [
            str(Path(sys.executable).parent / "statestore"),
            "--db",
            str(tmp_path / "db.sqlite"),
            "show",
            "missing",
        ],
        capture_output=True,
        text=True,
        env=subprocess_environment(),
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert completed.stderr == "Error: no session 'missing'\n"


def test_progress_bar_shows_on_a_terminal(tmp_path: Path) -> None:
    """With stderr on a terminal, import draws a progress bar counting the files."""
    controller, terminal = pty.openpty()
    environment = subprocess_environment() | {"TERM": "xterm", "COLUMNS": "100"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "statestore",
            "--db",
            str(tmp_path / "db.sqlite"),
            "import",
            str(SAMPLE_DIR),
        ],
        stdout=subprocess.PIPE,
        stderr=terminal,
        env=environment,
    )
    os.close(terminal)
    drawn = bytearray()
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: every writer exited
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    stdout, _ = process.communicate(timeout=60)
    files = sum(1 for path in SAMPLE_DIR.rglob("*") if path.is_file()) - 1  # less the temp file
    assert process.returncode == 1
    assert stdout.decode().splitlines() == IMPORT_REPORT
    assert b"importing" in drawn
    assert f"{files}/{files}".encode() in drawn


# -- the command line at its edges: narrow terminals, refusals, dry runs, encodings, waits --


UUID_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def at_width(db: Path, columns: int, *args: str) -> Result:
    """Run a command as if on a terminal ``columns`` wide."""
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(cli, ["--db", str(db), *args])


def failed(result: Result, code: int = 1) -> str:
    """Check the command exited ``code`` with a one-line error; return that line."""
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- tables at 80 and 120 columns -------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 120])
def test_session_table_fits_and_shows_every_column(sample_db: Path, columns: int) -> None:
    """Every line fits, every heading is whole, every id can be read back whole from its
    (folded) column, and every timestamp is whole on one line."""
    result = succeeded(at_width(sample_db, columns, "sessions", "--limit", "0"))
    lines = result.stdout.splitlines()
    assert all(len(line) <= columns for line in lines), max(map(len, lines))
    header = next(line for line in lines if "updated (UTC)" in line)
    for heading in ("id", "user", "messages", "seed", "project", "updated (UTC)"):
        assert f" {heading} " in header, header
    body = [line for line in lines if line.startswith("│")]
    cells = [[cell.strip() for cell in line.strip("│").split("│")] for line in body]
    ids, row_ids = [], ""
    for row in cells:
        if row[-1]:  # the first line of a row holds its timestamp
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", row[-1]), row
            if row_ids:
                ids.append(row_ids)
            row_ids = row[0]
        else:
            row_ids += row[0]
    ids.append(row_ids)
    assert sorted(ids) == sorted(listed_ids(sample_db))
    uuid_rows = [row for row in cells if row[-1] and UUID_ID.match(ids[0])]
    assert uuid_rows
    if columns == 120:
        assert all(UUID_ID.match(session_id) for session_id in ids if len(session_id) == 36)
        assert len(body) == len(ids)  # nothing folds at 120


@pytest.mark.parametrize("columns", [80, 120])
def test_stats_fits_the_terminal(sample_db: Path, columns: int) -> None:
    """The stats tables fit, and the first and last activity are whole timestamps."""
    result = succeeded(at_width(sample_db, columns, "stats", "--days", "3650"))
    lines = result.stdout.splitlines()
    assert all(len(line) <= columns for line in lines)
    for label in ("first activity (UTC)", "last activity (UTC)"):
        row = next(line for line in lines if label in line)
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", row), row


def test_empty_results_say_so_instead_of_an_empty_frame(tmp_path: Path) -> None:
    """No sessions: one line, no table; nothing to prune: one line."""
    db = tmp_path / "empty.db"
    succeeded(run(db, "migrate"))
    assert succeeded(run(db, "sessions")).stdout == "no sessions\n"
    pruned = succeeded(run(db, "prune", "--max-sessions", "1", "--ttl-hours", "1", "--dry-run"))
    assert pruned.stdout.splitlines() == [
        "nothing to prune",
        "would delete 0 sessions (dry run: nothing deleted)",
    ]


# -- refusals: one line, exit 1; usage errors exit 2 --------------------------------------------


@pytest.mark.parametrize("db", [":memory:", "sqlite+aiosqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_is_refused(db: str) -> None:
    """A database that would vanish is refused by every command, migrate included."""
    for command in (["migrate"], ["sessions"], ["import", str(SAMPLE_DIR)]):
        line = failed(CliRunner().invoke(cli, ["--db", db, *command]))
        assert "in-memory database" in line, line


@pytest.mark.parametrize(
    ("db", "named"),
    [
        ("mysql://host/db", "mysql://"),
        ("postgresql+asyncpg://127.0.0.1:99999/test", "port 99999"),
        ("postgresql+psycopg2://127.0.0.1/test", "asyncpg"),
        ("postgresql+asyncpg://127.0.0.1:notaport/test", "not a database URL"),
    ],
)
def test_a_bad_database_url_is_one_line(db: str, named: str) -> None:
    """An unsupported scheme, a bad port or a wrong driver: one line naming it, exit 1."""
    assert named in failed(CliRunner().invoke(cli, ["--db", db, "sessions"]))


def test_a_sqlite_url_to_a_missing_file_is_not_created(tmp_path: Path) -> None:
    """A read-only command on a sqlite:// URL naming no file says so and creates none."""
    path = tmp_path / "absent.db"
    line = failed(CliRunner().invoke(cli, ["--db", f"sqlite:///{path}", "sessions"]))
    assert "no database at" in line
    assert not path.exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    """A usage error (bad option) exits 2, as the README says."""
    result = run(tmp_path / "x.db", "sessions", "--limit", "-1")
    assert result.exit_code == 2
    assert not (tmp_path / "x.db").exists()


# -- import: guard, hidden folders, dry run --------------------------------------------------


def test_import_refuses_a_directory_with_files_at_its_top_level(tmp_path: Path) -> None:
    """The repository root is no file store: refused before any database exists."""
    root = Path(__file__).resolve().parents[1]
    db = tmp_path / "state.db"
    line = failed(run(db, "import", str(root)))
    assert "does not look like a file store" in line
    assert "--force" in line
    assert not db.exists()


def test_import_force_takes_such_a_directory_and_skips_hidden_folders(tmp_path: Path) -> None:
    """With --force the files inside category folders are imported; hidden folders never."""
    root = tmp_path / "odd"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.md").write_text("kept", encoding="utf-8")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "b.md").write_text("hidden", encoding="utf-8")
    (root / "README.md").write_text("top level", encoding="utf-8")
    db = tmp_path / "state.db"
    failed(run(db, "import", str(root)))

    result = run(db, "import", "--force", str(root))
    assert result.exit_code == 1  # README.md is not in a category folder: listed as skipped
    assert "skipped README.md: not inside a category folder" in result.stderr
    assert ".venv" not in result.stdout + result.stderr
    assert succeeded(run(db, "docs")).stdout.splitlines() == ["notes"]


def test_import_of_a_directory_with_nothing_importable_creates_no_database(
    tmp_path: Path,
) -> None:
    """An empty (or unrelated) directory: one line, and no database file appears."""
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    db = tmp_path / "state.db"
    assert "nothing to import" in failed(run(db, "import", str(tmp_path / "empty")))
    assert not db.exists()


def test_import_dry_run_reads_everything_and_stores_nothing(tmp_path: Path) -> None:
    """The dry run counts what would be imported, lists what would be skipped, writes no
    database, and exits 1 because files would be skipped."""
    db = tmp_path / "state.db"
    result = run(db, "import", "--dry-run", str(SAMPLE_DIR))
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        f"would import {len(SAMPLE_SESSIONS)} sessions and 12 documents (dry run: nothing stored)"
    )
    assert "skipped sessions/corrupt-half-written.json: not valid JSON" in result.stderr
    assert not db.exists()


# -- prune, delete-user, docs ------------------------------------------------------------------


def test_prune_dry_run_count_prints_only_the_count(sample_db: Path) -> None:
    """--count leaves out the table; --json gives the summaries; neither deletes."""
    args = ("prune", "--max-sessions", "35", "--ttl-hours", "0", "--dry-run")
    counted = succeeded(run(sample_db, *args, "--count"))
    assert counted.stdout == "would delete 5 sessions (dry run: nothing deleted)\n"
    listed = json.loads(succeeded(run(sample_db, *args, "--json")).stdout)
    assert len(listed) == 5
    assert {"id", "updated_at"} <= listed[0].keys()
    assert len(listed_ids(sample_db)) == len(SAMPLE_SESSIONS)
    assert (
        run(sample_db, "prune", "--max-sessions", "1", "--ttl-hours", "0", "--count").exit_code == 2
    )


def test_delete_user_of_nobody_is_refused_without_asking(sample_db: Path) -> None:
    """A user with no sessions: one line, exit 1, and no prompt."""
    result = run(sample_db, "delete-user", "nobody")
    assert "user 'nobody' has no sessions" in failed(result)
    assert "[y/N]" not in result.stdout


def test_docs_json_lists_names(sample_db: Path) -> None:
    """``docs --json`` prints the categories (or a category's names) as a JSON list."""
    assert json.loads(succeeded(run(sample_db, "docs", "--json")).stdout) == [
        "agents",
        "memory/notes",
        "personas",
        "seeds",
    ]


def test_export_into_a_non_empty_directory_names_the_option(
    sample_db: Path, tmp_path: Path
) -> None:
    """The refusal names the flag that overrides it."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x", encoding="utf-8")
    assert "--overwrite" in failed(run(sample_db, "export", str(tmp_path / "out")))


# -- busy timeout, encoding ----------------------------------------------------------------------


def test_busy_timeout_bounds_the_wait_behind_another_writer(sample_db: Path) -> None:
    """With the write lock held elsewhere, a write fails after --busy-timeout with one line."""
    holder = sqlite3.connect(sample_db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        some_id = listed_ids(sample_db)[0]
        result = CliRunner().invoke(
            cli, ["--db", str(sample_db), "--busy-timeout", "0.2", "delete", some_id]
        )
        line = failed(result)
        assert "busy" in line or "locked" in line, line
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert some_id in listed_ids(sample_db)


def test_non_ascii_ids_print_on_an_ascii_terminal(tmp_path: Path) -> None:
    """With PYTHONIOENCODING=ascii an id outside ASCII is escaped, not a traceback."""
    db = tmp_path / "state.db"

    async def seed() -> None:
        async with StateStore.open(db) as store:
            await store.save_session(
                Session(id="sesión-ü", user_id="zoë", user_messages=[UserMessage(content="hola")])
            )

    asyncio.run(seed())
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "COLUMNS": "120"}
    env.pop("STATESTORE_DB", None)
    for command in (["sessions"], ["show", "sesión-ü"]):
        result = subprocess.run(
            [sys.executable, "-m", "statestore", "--db", str(db), *command],
            capture_output=True,
            text=True,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert "\\xf3" in result.stdout, result.stdout


# -- listing filters and search ---------------------------------------------------------------


def texts_with_word(word: str) -> set[tuple[str, str, int]]:
    """The sample's texts (session, kind, position) holding ``word`` as a whole word."""
    found = set()
    for session_id, session in SAMPLE_SESSIONS.items():
        for kind, key in (("message", "user_messages"), ("response", "agent_responses")):
            for position, item in enumerate(session.get(key) or []):
                if word in re.findall(r"[^\W_]+", item["content"].casefold()):
                    found.add((session_id, kind, position))
    return found


def test_search_json_finds_every_text_with_the_word(sample_db: Path) -> None:
    """``search WORD --json`` lists each sample text holding the word, with its place."""
    expected = texts_with_word("refactor")
    assert expected
    result = succeeded(run(sample_db, "search", "Refactor", "--json", "--limit", "500"))
    hits = json.loads(result.stdout)
    assert {(hit["session_id"], hit["kind"], hit["position"]) for hit in hits} == expected
    assert all("**" in hit["snippet"] for hit in hits)
    assert [hit["entry_id"] for hit in hits] == sorted((h["entry_id"] for h in hits), reverse=True)


def test_search_table_user_and_limit(sample_db: Path) -> None:
    """The table shows each hit's session and place; --user and --limit narrow it."""
    result = succeeded(run(sample_db, "search", "refactor", "--limit", "2"))
    assert len(UUID.findall(result.stdout)) == 2
    assert "**refactor**" in result.stdout
    user = SAMPLE_SESSIONS[next(iter(texts_with_word("refactor")))[0]]["user_id"]
    listed = json.loads(
        succeeded(
            run(sample_db, "search", "refactor", "--user", user, "--json", "--limit", "500")
        ).stdout
    )
    expected = {
        place
        for place in texts_with_word("refactor")
        if SAMPLE_SESSIONS[place[0]]["user_id"] == user
    }
    assert {(hit["session_id"], hit["kind"], hit["position"]) for hit in listed} == expected


def test_search_without_matches_and_bad_queries(sample_db: Path) -> None:
    """No match prints one line and exits 0; a query with nothing to find is a one-line
    error; no query at all is a usage error."""
    assert succeeded(run(sample_db, "search", "zyzzyva")).stdout == "no matches\n"
    assert "no word to search for" in failed(run(sample_db, "search", '"()"'))
    assert run(sample_db, "search").exit_code == 2
    assert succeeded(run(sample_db, "search", "SELECT * FROM sessions; --", "--json")).stdout


def test_search_rebuild_reports_the_texts_indexed(sample_db: Path) -> None:
    """``search --rebuild`` indexes every stored text again and says how many."""
    total = sum(
        len(session.get("user_messages") or []) + len(session.get("agent_responses") or [])
        for session in SAMPLE_SESSIONS.values()
    )
    assert succeeded(run(sample_db, "search", "--rebuild")).stdout == f"indexed {total} texts\n"
    assert json.loads(
        succeeded(
            run(sample_db, "search", "refactor", "--rebuild", "--json", "--limit", "500")
        ).stdout
    )


@pytest.mark.parametrize(
    ("options", "keep"),
    [
        (["--seed", "seed-beta"], lambda s: s.get("active_seed_id") == "seed-beta"),
        (["--persona", "persona-1"], lambda s: s.get("active_persona_id") == "persona-1"),
        (
            ["--created-after", "2026-03-05T00:00:00"],
            lambda s: instant(s["created_at"]) > datetime(2026, 3, 5, tzinfo=UTC),
        ),
        (
            ["--updated-before", "2026-03-05T00:00:00+01:00"],
            lambda s: instant(s["updated_at"]) < datetime(2026, 3, 4, 23, tzinfo=UTC),
        ),
        (
            ["--meta", "project_ids=proj-1"],
            lambda s: (s.get("metadata") or {}).get("project_ids") == "proj-1",
        ),
        (["--forks-of", "nobody"], lambda s: False),
    ],
    ids=["seed", "persona", "created-after", "updated-before", "meta", "forks-of"],
)
def test_sessions_filters(sample_db: Path, options: list[str], keep: Any) -> None:
    """Each listing filter of ``sessions`` lists the sample sessions it describes."""
    result = succeeded(run(sample_db, "sessions", "--json", "--limit", "0", *options))
    listed = [summary["id"] for summary in json.loads(result.stdout)]
    expected = newest_first({i for i, s in SAMPLE_SESSIONS.items() if keep(s)})
    assert listed == expected
    assert 0 < len(expected) < len(SAMPLE_SESSIONS) or options[0] == "--forks-of"


@pytest.mark.parametrize(
    "options",
    [["--created-after", "yesterday"], ["--meta", "no-equals"], ["--meta", "k=[1]"]],
    ids=["bad-time", "bad-pair", "list-value-is-text"],
)
def test_sessions_bad_filter_options(sample_db: Path, options: list[str]) -> None:
    """A time that is not ISO 8601 or a pair without ``=`` is a usage error; a JSON list
    is matched as text (only scalars are values)."""
    result = run(sample_db, "sessions", "--json", *options)
    if options[1] == "k=[1]":
        assert json.loads(succeeded(result).stdout) == []
    else:
        assert result.exit_code == 2
