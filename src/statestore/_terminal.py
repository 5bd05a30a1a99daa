"""Drawing for the ``statestore`` command: tables that fit the terminal, a progress bar.

rich is imported here, and only when something is drawn: a command that prints JSON or
one line starts without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from statestore.filestore import Progress as ProgressCallback
from statestore.models import SearchHit, SessionSummary, format_timestamp

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "TIME_HEADING",
    "at",
    "print_hits",
    "print_summaries",
    "print_table",
    "progress",
    "stdout",
    "text",
    "when",
]


@contextmanager
def progress(description: str) -> Iterator[ProgressCallback]:
    """A progress bar on a terminal's stderr; nothing when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

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


def stdout() -> Console:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 240  # piped: fold no id to fit 80 columns, unless told a width
    return console


TIME_HEADING = "updated (UTC)"


def print_table(
    headings: tuple[str, ...],
    rows: Sequence[tuple[str, ...]],
    *,
    title: str | None = None,
    show_header: bool = True,
    min_widths: dict[str, int] | None = None,
) -> None:
    """Print a table whose every column stays readable on a narrow terminal.

    A column shrinks (its values wrap within it) only while it is the widest left, and
    never below its heading or ``min_widths``; timestamps (see :func:`at`) never wrap.
    """
    from rich.table import Table

    out = stdout()
    floors = [max(len(h), (min_widths or {}).get(h, 0)) if show_header else 1 for h in headings]
    widths = [
        max([len(h) if show_header else 0, *(len(row[i]) for row in rows)])
        for i, h in enumerate(headings)
    ]
    timestamps = {i for i, heading in enumerate(headings) if heading.endswith("(UTC)")}
    room = out.width - (3 * len(headings) + 1)  # each column's padding and border
    while sum(widths) > room:
        shrinkable = [
            i for i in range(len(widths)) if i not in timestamps and widths[i] > floors[i]
        ]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
    table = Table(title=title, show_header=show_header)
    for index, heading in enumerate(headings):
        table.add_column(heading, width=widths[index], no_wrap=index in timestamps, overflow="fold")
    for row in rows:
        table.add_row(*(text(value) for value in row))
    out.print(table)


def text(value: str, style: str = "") -> Any:
    """A value shown as is (rich would read ``[...]`` in it as markup)."""
    from rich.text import Text

    return Text(value, style=style)


def when(moment: datetime | None) -> str:
    return "-" if moment is None else format_timestamp(moment)


def at(moment: datetime | None) -> str:
    """A timestamp for a table: UTC to the minute, always 16 characters (``--json`` has
    every digit)."""
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


def print_summaries(summaries: list[SessionSummary], *, none: str) -> None:
    """Print summaries as a table (ids whole, wrapped if the terminal is narrow), or ``none``."""
    if not summaries:
        click.echo(none)
        return
    rows = [
        (
            summary.id,
            summary.user_id,
            str(summary.message_count),
            summary.active_seed_id or "-",
            summary.project_id or "-",
            at(summary.updated_at),
        )
        for summary in summaries
    ]
    # At 80 columns an id of 36 characters (a uuid) folds onto two lines, no more.
    headings = ("id", "user", "messages", "seed", "project", TIME_HEADING)
    print_table(headings, rows, min_widths={"id": 18})


def print_hits(hits: list[SearchHit]) -> None:
    """Print search hits as a table: where each is, when, and its snippet."""
    rows = [
        (hit.session_id, f"{hit.kind} {hit.position}", at(hit.timestamp), hit.snippet)
        for hit in hits
    ]
    headings = ("session", "text", "at (UTC)", "snippet")
    print_table(headings, rows, min_widths={"session": 18, "snippet": 24})
