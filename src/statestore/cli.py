"""The ``statestore`` command: look at and maintain a store from a shell.

The database is ``--db PATH_OR_URL``, else ``$STATESTORE_DB``, else ``./statestore.db``.
Only ``migrate`` and ``import`` create or upgrade a database; every other command needs one
already at this statestore's schema revision. Exit status: 0 done, 1 an error (one line on
stderr) or something not done (a file skipped, nothing found), 2 a usage error.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from statestore import _options, _terminal, filestore
from statestore import migrate as migrations
from statestore._engine import resolve_url, sqlite_in_memory
from statestore.errors import StateStoreError
from statestore.filestore import json_file_text, session_file_text
from statestore.models import SearchHit, Session, SessionSummary
from statestore.prune import PruneConfig
from statestore.stats import StoreStats
from statestore.store import StateStore

__all__ = ["main"]

ResultT = TypeVar("ResultT")

DEFAULT_DB = "statestore.db"


def _target(db: str) -> str | Path:
    """The database ``--db`` names; an in-memory one is refused (it would vanish)."""
    target: str | Path = db if "://" in db else Path(db)
    if _sqlite_file(target) == _IN_MEMORY:
        raise click.ClickException(
            f"--db {db!r} names an in-memory database, which vanishes when the command ends: "
            "give a file path or a server URL"
        )
    return target


_IN_MEMORY = Path(":memory:")


def _run(work: Coroutine[Any, Any, ResultT]) -> ResultT:
    """Run a command's coroutine; statestore errors become one line and exit status 1."""
    try:
        return asyncio.run(work)
    except StateStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")) from exc


def _sqlite_file(target: str | Path) -> Path | None:
    """The file a SQLite target names (``:memory:`` if none); None for a server URL."""
    if isinstance(target, Path):
        return target
    url = resolve_url(target)
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or sqlite_in_memory(url):
        return _IN_MEMORY
    return Path(url.database)


@asynccontextmanager
async def _opened(db: str, *, create: bool = False) -> AsyncIterator[StateStore]:
    target = _target(db)
    file = _sqlite_file(target)
    if not create and file is not None and not file.exists():
        raise click.ClickException(
            f"no database at {str(file)!r}: create one with `statestore migrate` or "
            "`statestore import DIR`, or choose one with --db / STATESTORE_DB"
        )
    busy_timeout: float = click.get_current_context().find_root().meta["busy_timeout"]
    async with StateStore.open(target, migrate=create, busy_timeout=busy_timeout) as store:
        yield store


def _dump(data: Any) -> None:
    click.echo(json_file_text(data))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--db",
    envvar="STATESTORE_DB",
    default=DEFAULT_DB,
    show_default=True,
    metavar="PATH_OR_URL",
    help="SQLite file, or a URL such as postgresql+asyncpg://host/db (env: STATESTORE_DB).",
)
@click.option(
    "--busy-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a SQLite write waits for another process's lock before failing.",
)
@click.version_option(package_name="statestore")
@click.pass_context
def cli(context: click.Context, db: str, busy_timeout: float) -> None:
    """Look at and maintain a statestore database.

    Exit status: 0 done; 1 an error (one line) or something not done; 2 a usage error.
    """
    for stream in (sys.stdout, sys.stderr):  # any id prints, whatever the terminal's encoding
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    context.obj = db
    context.meta["busy_timeout"] = busy_timeout


@cli.command(short_help="Create or upgrade the schema to the newest revision.")
@click.pass_obj
def migrate(db: str) -> None:
    """Create or upgrade the database's schema to the newest revision, and show it."""

    async def work() -> tuple[str | None, str | None]:
        target = _target(db)
        before = None
        if not isinstance(target, Path) or target.exists():
            before = await migrations.current_revision(target)
        await migrations.upgrade(target)
        return before, await migrations.current_revision(target)

    before, after = _run(work())
    if before == after:
        click.echo(f"schema already at revision {after} (newest)")
    else:
        click.echo(f"schema upgraded from revision {before or 'none'} to {after} (newest)")


def _counts(what: str, added: int, updated: int, unchanged: int, kept: int) -> str:
    """One line of an import's report; ``kept`` is named only when something was."""
    newer = f", {kept} kept (stored newer than the file)" if kept else ""
    return f"{what}: {added} added, {updated} updated, {unchanged} unchanged{newer}"


@cli.command("import", short_help="Import a file store's directory.")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--replace-newer",
    is_flag=True,
    help="Replace stored sessions and documents even where they are newer than the file.",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=lambda: min(4, (os.cpu_count() or 1) - 1),
    show_default="one less than the CPUs, at most 4",
    help="Processes that read and check files while the import writes (0: none; used "
    "from 2,000 files on).",
)
@click.option("--dry-run", is_flag=True, help="Read and check every file; store nothing.")
@click.option(
    "--force", is_flag=True, help="Import a directory that is not laid out as a file store."
)
@click.pass_obj
def import_(
    db: str, directory: Path, replace_newer: bool, workers: int, dry_run: bool, force: bool
) -> None:
    """Import a file store's directory (sessions/*.json and <category>/<name>.md|.json).

    Creates the database if needed. Importing the same directory again changes nothing,
    and what was saved since the file was written is kept (see --replace-newer). Hidden
    folders are skipped; a directory with files at its top level (a file store kept none)
    is refused unless --force. Files that cannot be read are listed with the reason and
    the exit status is 1.
    """
    if not force:
        _check_file_store(directory)
    if dry_run:
        preview = _run(filestore.preview_import(directory))
        click.echo(
            f"would import {preview.sessions} sessions and {preview.documents} documents "
            "(dry run: nothing stored)"
        )
        _report_skipped(preview.temp_files, preview.skipped)
        return

    async def work() -> Any:
        async with _opened(db, create=True) as store:
            with _terminal.progress("importing") as progress:
                return await store.import_directory(
                    directory, replace_newer=replace_newer, progress=progress, workers=workers
                )

    report = _run(work())
    click.echo(
        _counts(
            "sessions",
            report.sessions_added,
            report.sessions_updated,
            report.sessions_unchanged,
            report.sessions_kept,
        )
    )
    click.echo(
        _counts(
            "documents",
            report.documents_added,
            report.documents_updated,
            report.documents_unchanged,
            report.documents_kept,
        )
    )
    _report_skipped(report.temp_files, report.skipped)


def _check_file_store(directory: Path) -> None:
    """Refuse a directory that cannot be a file store, before any database is made."""
    paths, _ = _run(asyncio.to_thread(filestore.find_files, directory))
    top_level = [path for path in paths if "/" not in path]
    if top_level:
        shown = ", ".join(top_level[:3]) + (", ..." if len(top_level) > 3 else "")
        raise click.ClickException(
            f"{str(directory)!r} does not look like a file store: it has files at its top "
            f"level ({shown}), where a file store kept none; check the path, or pass --force"
        )
    if not any(path.endswith((".json", ".md")) for path in paths):
        raise click.ClickException(
            f"nothing to import in {str(directory)!r}: no sessions/<id>.json and no "
            "<category>/<name>.md|.json files"
        )


def _report_skipped(temp_files: int, skipped: list[filestore.SkippedFile]) -> None:
    click.echo(f"temp files ignored: {temp_files}")
    for file in skipped:
        click.echo(f"skipped {file.path}: {file.reason}", err=True)
    if skipped:
        raise click.ClickException(f"{len(skipped)} files were not imported (see above)")


@cli.command(short_help="Write the store out as a file store directory.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--user", "user_id", help="Only this user's sessions (and no documents).")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty directory.")
@click.pass_obj
def export(db: str, directory: Path, user_id: str | None, overwrite: bool) -> None:
    """Write the database out as a file store directory, as the file store wrote it."""

    async def work() -> Any:
        async with _opened(db) as store:
            with _terminal.progress("exporting") as progress:
                return await store.export_directory(
                    directory, user_id=user_id, overwrite=overwrite, progress=progress
                )

    report = _run(work())
    click.echo(f"exported {report.sessions} sessions and {report.documents} documents")
    for skipped in report.skipped:
        click.echo(f"skipped {skipped.path}: {skipped.reason}", err=True)
    if report.skipped:
        raise click.ClickException(f"{len(report.skipped)} files were not written (see above)")


@cli.command()
@click.option("--user", "user_id", help="Only this user's sessions.")
@click.option("--project", "project_id", help="Only this project's sessions.")
@click.option("--seed", "active_seed_id", help="Only sessions with this active seed.")
@click.option("--persona", "active_persona_id", help="Only sessions with this active persona.")
@click.option("--forks-of", metavar="SESSION_ID", help="Only the forks of this session.")
@_options.time_option("--created-after", "created after TIME (ISO 8601; UTC unless an offset)")
@_options.time_option("--created-before", "created before TIME")
@_options.time_option("--updated-after", "last updated after TIME")
@_options.time_option("--updated-before", "last updated before TIME")
@click.option(
    "--meta",
    "metadata",
    multiple=True,
    callback=_options.metadata_pairs,
    metavar="KEY=VALUE",
    help="Only sessions whose metadata KEY is VALUE (JSON if it parses: 3, true, null).",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=0), help="0: all.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def sessions(db: str, /, limit: int, as_json: bool, **filters: Any) -> None:
    """List sessions, most recently updated first (filters combine)."""

    async def work() -> list[SessionSummary]:
        async with _opened(db) as store:
            return await store.list_sessions(limit=limit or None, **filters)

    summaries = _run(work())
    if as_json:
        _dump([summary.model_dump(mode="json") for summary in summaries])
    else:
        _terminal.print_summaries(summaries, none="no sessions")


@cli.command(short_help="Find messages and responses by their words.")
@click.argument("query", required=False)
@click.option("--user", "user_id", help="Only this user's sessions.")
@click.option("--session", "session_id", help="Only this session.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--rebuild", is_flag=True, help="First index every stored text again.")
@click.pass_obj
def search(
    db: str,
    query: str | None,
    user_id: str | None,
    session_id: str | None,
    limit: int,
    as_json: bool,
    rebuild: bool,
) -> None:
    """Print the texts that match QUERY, most recently written first.

    Words must all appear; "a phrase" in order; a OR b either; -word not; pref* a prefix.
    """
    if query is None and not rebuild:
        raise click.UsageError("give a QUERY, or --rebuild")

    async def work() -> tuple[int | None, list[SearchHit]]:
        async with _opened(db) as store:
            indexed = await store.rebuild_search_index() if rebuild else None
            if query is None:
                return indexed, []
            found = await store.search_messages(
                query, user_id=user_id, session_id=session_id, limit=limit
            )
            return indexed, found

    indexed, hits = _run(work())
    if indexed is not None:
        click.echo(f"indexed {indexed} texts", err=query is not None)
    if query is None:
        return
    if as_json:
        _dump([hit.model_dump(mode="json") for hit in hits])
    elif not hits:
        click.echo("no matches")
    else:
        _terminal.print_hits(hits)


async def _load(db: str, session_id: str) -> Session:
    async with _opened(db) as store:
        session = await store.load_session(session_id)
    if session is None:
        raise click.ClickException(f"no session {session_id!r}")
    return session


@cli.command()
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True, help="Print the session's file-store JSON.")
@click.pass_obj
def show(db: str, session_id: str, as_json: bool) -> None:
    """Show one session's conversation, message by message."""
    session = _run(_load(db, session_id))
    if as_json:
        click.echo(session_file_text(session))
        return
    out = _terminal.stdout()
    out.print(_terminal.text(f"session {session.id}  user {session.user_id}", style="bold"))
    created, updated = _terminal.when(session.created_at), _terminal.when(session.updated_at)
    out.print(f"created {created}  updated {updated}")
    if session.active_seed_id or session.active_persona_id:
        out.print(
            _terminal.text(
                f"seed {session.active_seed_id or '-'}  persona {session.active_persona_id or '-'}"
            )
        )
    turns = max(len(session.user_messages), len(session.agent_responses))
    for position in range(turns):
        out.print()
        if position < len(session.user_messages):
            message = session.user_messages[position]
            out.print(
                _terminal.text(
                    f"[{position}] user  {_terminal.when(message.timestamp)}", style="cyan"
                )
            )
            click.echo(message.content)  # as written: no wrapping, tabs kept
        if position < len(session.agent_responses):
            response = session.agent_responses[position]
            verdict = {True: "passed", False: "failed", None: "-"}[response.evaluation_passed]
            out.print(
                _terminal.text(
                    f"[{position}] agent {_terminal.when(response.timestamp)}  "
                    f"seed {response.seed_id or '-'}  phase {response.phase_reached or '-'}  "
                    f"evaluation {verdict}",
                    style="green",
                )
            )
            click.echo(response.content)


@cli.command()
@click.argument("session_id")
@click.pass_obj
def delete(db: str, session_id: str) -> None:
    """Delete one session with its messages and responses."""

    async def work() -> bool:
        async with _opened(db) as store:
            return await store.delete_session(session_id)

    if not _run(work()):
        raise click.ClickException(f"no session {session_id!r}")
    click.echo(f"deleted session {session_id}")


@cli.command("delete-user", short_help="Delete every session of one user, in one transaction.")
@click.argument("user_id")
@click.option("--yes", is_flag=True, help="Delete without asking.")
@click.pass_obj
def delete_user(db: str, user_id: str, yes: bool) -> None:
    """Delete every session of one user, in one transaction (an erasure request)."""

    async def count() -> int:
        async with _opened(db) as store:
            return len(await store.list_sessions(user_id=user_id))

    async def work() -> int:
        async with _opened(db) as store:
            return await store.delete_user(user_id)

    if not yes:
        found = _run(count())
        if not found:
            raise click.ClickException(f"user {user_id!r} has no sessions")
        click.confirm(
            f"Delete the {found} sessions of user {user_id!r}, with their messages?", abort=True
        )
    deleted = _run(work())
    click.echo(f"deleted {deleted} sessions of user {user_id}")


@cli.command(short_help="Delete sessions past the TTL or beyond the maximum.")
@click.option(
    "--max-sessions",
    required=True,
    type=click.IntRange(min=0),
    help="Keep at most this many sessions, the most recently updated (0: no limit).",
)
@click.option(
    "--ttl-hours",
    required=True,
    type=click.IntRange(min=0),
    help="Delete sessions not updated for this many hours (0: no limit).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="List what would be deleted (oldest first), asked with the prune's own SQL.",
)
@click.option("--count", "count_only", is_flag=True, help="With --dry-run: print the count only.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print JSON, not a table.")
@click.pass_obj
def prune(
    db: str, max_sessions: int, ttl_hours: int, dry_run: bool, count_only: bool, as_json: bool
) -> None:
    """Delete old sessions: first those past the TTL, then the oldest beyond the maximum."""
    if (count_only or as_json) and not dry_run:
        raise click.UsageError("--count and --json go with --dry-run")
    config = PruneConfig(max_sessions=max_sessions, ttl_hours=ttl_hours)

    async def work() -> list[SessionSummary] | int:
        async with _opened(db) as store:
            if dry_run:
                return await store.prunable_sessions(config)
            return await store.prune_sessions(config)

    outcome = _run(work())
    if isinstance(outcome, int):
        click.echo(f"deleted {outcome} sessions")
        return
    if as_json:
        _dump([summary.model_dump(mode="json") for summary in outcome])
        return
    if not count_only:
        _terminal.print_summaries(outcome, none="nothing to prune")
    click.echo(f"would delete {len(outcome)} sessions (dry run: nothing deleted)")


@cli.command(short_help="List categories, or one category's documents.")
@click.argument("category", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def docs(db: str, category: str | None, as_json: bool) -> None:
    """List a category's documents, or with no CATEGORY every category."""

    async def work() -> list[str]:
        async with _opened(db) as store:
            if category is None:
                return await store.list_categories()
            return await store.list_category(category)

    names = _run(work())
    if as_json:
        _dump(names)
        return
    for name in names:
        click.echo(name)


@cli.command(short_help="Print one document.")
@click.argument("category")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(["json", "markdown"]),
    help="Which document when both kinds share the name (default: JSON).",
)
@click.pass_obj
def doc(db: str, category: str, name: str, kind: str | None) -> None:
    """Print one document: JSON as the file store wrote it, markdown as stored."""

    async def work() -> str | None:
        async with _opened(db) as store:
            if kind != "markdown":
                data = await store.load_json(category, name)
                if data is not None:
                    return json_file_text(data)
            if kind != "json":
                return await store.load_markdown(category, name)
            return None

    text = _run(work())
    if text is None:
        raise click.ClickException(f"no document {name!r} in category {category!r}")
    click.echo(text, nl=not text.endswith("\n"))


@cli.command(short_help="Show counts, pass rates by seed and recent activity.")
@click.option(
    "--days", default=7, show_default=True, type=click.IntRange(min=1), help="Days of activity."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_obj
def stats(db: str, days: int, as_json: bool) -> None:
    """Show the headline numbers: counts, evaluation pass rate by seed, recent activity."""

    async def work() -> StoreStats:
        async with _opened(db) as store:
            return await store.stats(days=days)

    numbers = _run(work())
    if as_json:
        _dump(numbers.model_dump(mode="json"))
        return
    totals = [
        ("sessions", f"{numbers.sessions:,}"),
        ("users", f"{numbers.users:,}"),
        ("messages", f"{numbers.messages:,}"),
        ("responses", f"{numbers.responses:,}"),
        ("documents", f"{numbers.documents:,}"),
        ("first activity (UTC)", _terminal.at(numbers.first_activity_at)),
        ("last activity (UTC)", _terminal.at(numbers.last_activity_at)),
    ]
    _terminal.print_table(("", ""), totals, show_header=False)
    if numbers.pass_rates:
        rates = [
            (
                rate.seed_id or "(none)",
                f"{rate.evaluated:,}",
                f"{rate.passed:,}",
                f"{rate.pass_rate:.0%}",
            )
            for rate in numbers.pass_rates
        ]
        _terminal.print_table(
            ("seed", "evaluated", "passed", "pass rate"), rates, title="evaluation by seed"
        )
    else:
        click.echo("no evaluated responses")
    if not numbers.days:
        click.echo(f"no messages in the last {days} days")
        return
    activity = [
        (day.day.isoformat(), f"{day.messages:,}", f"{day.sessions:,}", f"{day.users:,}")
        for day in numbers.days
    ]
    _terminal.print_table(
        ("day (UTC)", "messages", "sessions", "users"), activity, title=f"last {days} days"
    )


@cli.command(short_help="Give deleted sessions' space back (checkpoint, VACUUM).")
@click.pass_obj
def compact(db: str) -> None:
    """Give back the space deleted sessions left (WAL checkpoint and VACUUM on SQLite)."""

    async def work() -> tuple[int, int]:
        async with _opened(db) as store:
            return await store.compact()

    before, after = _run(work())
    click.echo(f"size: {before:,} bytes before, {after:,} bytes after")


def main() -> None:
    """Run the ``statestore`` command."""
    cli(prog_name="statestore")
