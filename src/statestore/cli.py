"""The ``statestore`` command: look at and maintain a store from a shell.

The database is ``--db PATH_OR_URL``, else ``$STATESTORE_DB``, else ``./statestore.db``.
Only ``migrate`` and ``import`` create or upgrade a database; every other command needs one
already at this statestore's schema revision. Errors print one line and exit with 1.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from statestore import migrate as migrations
from statestore.errors import StateStoreError
from statestore.filestore import Progress as ProgressCallback
from statestore.filestore import json_file_text, session_file_text
from statestore.models import Session, SessionSummary, format_timestamp
from statestore.prune import PruneConfig
from statestore.stats import StoreStats
from statestore.store import StateStore

__all__ = ["main"]

ResultT = TypeVar("ResultT")

DEFAULT_DB = "statestore.db"


def _target(db: str) -> str | Path:
    return db if "://" in db else Path(db)


def _run(work: Coroutine[Any, Any, ResultT]) -> ResultT:
    """Run a command's coroutine; statestore errors become one line and exit status 1."""
    try:
        return asyncio.run(work)
    except StateStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")) from exc


@asynccontextmanager
async def _opened(db: str, *, create: bool = False) -> AsyncIterator[StateStore]:
    target = _target(db)
    if isinstance(target, Path) and not create and not target.exists():
        raise click.ClickException(
            f"no database at {str(target)!r}: create one with `statestore migrate` or "
            "`statestore import DIR`, or choose one with --db / STATESTORE_DB"
        )
    async with StateStore.open(target, migrate=create) as store:
        yield store


@contextmanager
def _progress(description: str) -> Iterator[ProgressCallback]:
    """A progress bar on a terminal's stderr; nothing when stderr is not a terminal."""
    console = Console(stderr=True)
    bar = Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )
    task = bar.add_task(description, total=None)

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield advance


def _stdout() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:  # piped: never cut an id to fit 80 columns
        console.width = 240
    return console


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else format_timestamp(moment)


def _dump(data: Any) -> None:
    click.echo(json_file_text(data))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    envvar="STATESTORE_DB",
    default=DEFAULT_DB,
    show_default=True,
    metavar="PATH_OR_URL",
    help="SQLite file, or a URL such as postgresql+asyncpg://host/db (env: STATESTORE_DB).",
)
@click.version_option(package_name="statestore")
@click.pass_context
def cli(context: click.Context, db: str) -> None:
    """Look at and maintain a statestore database."""
    context.obj = db


@cli.command()
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


@cli.command("import")
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
@click.pass_obj
def import_(db: str, directory: Path, replace_newer: bool, workers: int) -> None:
    """Import a file store's directory (sessions/*.json and <category>/<name>.md|.json).

    Creates the database if needed. Importing the same directory again changes nothing,
    and what was saved since the file was written is kept (see --replace-newer).
    Files that cannot be read are listed with the reason and the exit status is 1.
    """

    async def work() -> Any:
        async with _opened(db, create=True) as store:
            with _progress("importing") as progress:
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
    click.echo(f"temp files ignored: {report.temp_files}")
    for skipped in report.skipped:
        click.echo(f"skipped {skipped.path}: {skipped.reason}", err=True)
    if report.skipped:
        raise click.ClickException(f"{len(report.skipped)} files were not imported (see above)")


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--user", "user_id", help="Only this user's sessions (and no documents).")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty directory.")
@click.pass_obj
def export(db: str, directory: Path, user_id: str | None, overwrite: bool) -> None:
    """Write the database out as a file store directory, as the file store wrote it."""

    async def work() -> Any:
        async with _opened(db) as store:
            with _progress("exporting") as progress:
                return await store.export_directory(
                    directory, user_id=user_id, overwrite=overwrite, progress=progress
                )

    report = _run(work())
    click.echo(f"exported {report.sessions} sessions and {report.documents} documents")
    for skipped in report.skipped:
        click.echo(f"skipped {skipped.path}: {skipped.reason}", err=True)
    if report.skipped:
        raise click.ClickException(f"{len(report.skipped)} files were not written (see above)")


def _summaries_table(summaries: list[SessionSummary]) -> Table:
    table = Table()
    table.add_column("id", no_wrap=True)
    for heading in ("user", "messages", "seed", "project"):
        table.add_column(heading)
    table.add_column("updated", no_wrap=True)
    for summary in summaries:
        table.add_row(
            Text(summary.id),
            Text(summary.user_id),
            str(summary.message_count),
            Text(summary.active_seed_id or "-"),
            Text(summary.project_id or "-"),
            _when(summary.updated_at),
        )
    return table


@cli.command()
@click.option("--user", "user_id", help="Only this user's sessions.")
@click.option("--project", "project_id", help="Only this project's sessions.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=0), help="0: all.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def sessions(
    db: str, user_id: str | None, project_id: str | None, limit: int, as_json: bool
) -> None:
    """List sessions, most recently updated first."""

    async def work() -> list[SessionSummary]:
        async with _opened(db) as store:
            return await store.list_sessions(
                user_id=user_id, project_id=project_id, limit=limit or None
            )

    summaries = _run(work())
    if as_json:
        _dump([summary.model_dump(mode="json") for summary in summaries])
    else:
        _stdout().print(_summaries_table(summaries))


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
    out = _stdout()
    out.print(Text(f"session {session.id}  user {session.user_id}", style="bold"))
    out.print(f"created {_when(session.created_at)}  updated {_when(session.updated_at)}")
    if session.active_seed_id or session.active_persona_id:
        out.print(
            Text(
                f"seed {session.active_seed_id or '-'}  persona {session.active_persona_id or '-'}"
            )
        )
    turns = max(len(session.user_messages), len(session.agent_responses))
    for position in range(turns):
        out.print()
        if position < len(session.user_messages):
            message = session.user_messages[position]
            out.print(Text(f"[{position}] user  {_when(message.timestamp)}", style="cyan"))
            click.echo(message.content)  # as written: no wrapping, tabs kept
        if position < len(session.agent_responses):
            response = session.agent_responses[position]
            verdict = {True: "passed", False: "failed", None: "-"}[response.evaluation_passed]
            out.print(
                Text(
                    f"[{position}] agent {_when(response.timestamp)}  "
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


@cli.command("delete-user")
@click.argument("user_id")
@click.confirmation_option(prompt="Delete every session of this user?")
@click.pass_obj
def delete_user(db: str, user_id: str) -> None:
    """Delete every session of one user, in one transaction (an erasure request)."""

    async def work() -> int:
        async with _opened(db) as store:
            return await store.delete_user(user_id)

    deleted = _run(work())
    click.echo(f"deleted {deleted} sessions of user {user_id}")


@cli.command()
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
@click.pass_obj
def prune(db: str, max_sessions: int, ttl_hours: int, dry_run: bool) -> None:
    """Delete old sessions: first those past the TTL, then the oldest beyond the maximum."""
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
    _stdout().print(_summaries_table(outcome))
    click.echo(f"would delete {len(outcome)} sessions (dry run: nothing deleted)")


@cli.command()
@click.argument("category", required=False)
@click.pass_obj
def docs(db: str, category: str | None) -> None:
    """List a category's documents, or with no CATEGORY every category."""

    async def work() -> list[str]:
        async with _opened(db) as store:
            if category is None:
                return await store.list_categories()
            return await store.list_category(category)

    for name in _run(work()):
        click.echo(name)


@cli.command()
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


@cli.command()
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
    out = _stdout()
    totals = Table("sessions", "users", "messages", "responses", "documents", "first", "last")
    totals.add_row(
        f"{numbers.sessions:,}",
        f"{numbers.users:,}",
        f"{numbers.messages:,}",
        f"{numbers.responses:,}",
        f"{numbers.documents:,}",
        _when(numbers.first_activity_at),
        _when(numbers.last_activity_at),
    )
    out.print(totals)
    rates = Table("seed", "evaluated", "passed", "pass rate", title="evaluation by seed")
    for rate in numbers.pass_rates:
        rates.add_row(
            Text(rate.seed_id or "(none)"),
            f"{rate.evaluated:,}",
            f"{rate.passed:,}",
            f"{rate.pass_rate:.0%}",
        )
    out.print(rates)
    if not numbers.days:
        out.print(f"no messages in the last {days} days")
        return
    activity = Table("day (UTC)", "messages", "sessions", "users", title=f"last {days} days")
    for day in numbers.days:
        activity.add_row(
            day.day.isoformat(), f"{day.messages:,}", f"{day.sessions:,}", f"{day.users:,}"
        )
    out.print(activity)


@cli.command()
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
