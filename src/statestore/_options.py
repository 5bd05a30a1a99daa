"""Command-line option values the ``statestore`` command parses: times and metadata pairs."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

__all__ = ["metadata_pairs", "moment", "time_option"]

CommandT = TypeVar("CommandT", bound=Callable[..., Any])


def moment(
    context: click.Context, parameter: click.Parameter, value: str | None
) -> datetime | None:
    """An ISO 8601 time option, in UTC unless it names an offset."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from None
    return parsed if parsed.utcoffset() is not None else parsed.replace(tzinfo=UTC)


def time_option(name: str, what: str) -> Callable[[CommandT], CommandT]:
    """An option naming an instant: ``--created-after TIME`` and the like."""
    return click.option(name, callback=moment, metavar="TIME", help=f"Only sessions {what}.")


def metadata_pairs(
    context: click.Context, parameter: click.Parameter, pairs: tuple[str, ...]
) -> dict[str, Any] | None:
    """``KEY=VALUE`` options as a dict: a value that is a JSON scalar (``3``, ``true``,
    ``null``, ``"3"``) as that, anything else as text."""
    entries: dict[str, Any] = {}
    for pair in pairs:
        key, equals, raw = pair.partition("=")
        if not equals:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        entries[key] = raw if isinstance(value, list | dict) else value
    return entries or None
