"""What a session listing may be filtered by: the arguments checked, then bound as SQL.

``list_sessions``, ``iter_sessions``, the sync face and the CLI take the same filters; each
checks them here once (:func:`session_filter`) and hands the result to
:func:`statestore._ops.list_summaries`, which asks :func:`statestore._sql.session_summaries`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypedDict

from statestore import _sql
from statestore._rows import TimeCodec
from statestore._validate import arguments, check_text, check_timestamp
from statestore.errors import InvalidArgumentError, InvalidDataError

__all__ = ["MAX_METADATA_KEYS", "ListingFilters", "SessionFilter", "session_filter"]

MAX_METADATA_KEYS = 16
"""The most ``metadata`` entries one listing may match."""

_INT64 = 2**63 - 1
_EXACT_FLOAT = 2.0**53

MetadataValue = str | int | float | bool | None


class ListingFilters(TypedDict, total=False):
    """The filters ``list_sessions`` and ``iter_sessions`` take, as keyword arguments.

    ``user_id``, ``project_id``, ``active_seed_id``, ``active_persona_id``: only sessions
    with this value. ``forks_of``: only the forks made from this session.
    ``created_after``, ``created_before``, ``updated_after``, ``updated_before``: only
    sessions created or last updated after or before this instant (exclusive).
    ``metadata``: only sessions whose metadata holds each key with the value given,
    compared as JSON (``1`` matches ``1.0``; ``True`` matches only ``true``).
    """

    user_id: str | None
    project_id: str | None
    active_seed_id: str | None
    active_persona_id: str | None
    forks_of: str | None
    created_after: datetime | None
    created_before: datetime | None
    updated_after: datetime | None
    updated_before: datetime | None
    metadata: Mapping[str, MetadataValue] | None


@dataclass(frozen=True)
class SessionFilter:
    """The checked filters of one listing (``None``: not asked for)."""

    user_id: str | None = None
    project_id: str | None = None
    active_seed_id: str | None = None
    active_persona_id: str | None = None
    forks_of: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    metadata: tuple[tuple[str, MetadataValue], ...] = ()

    def statement(self, dialect: str, limit: int | None, after: bool) -> str:
        """The listing's SQL on ``dialect``: these filters, a page of ``limit``, and
        ``after`` (whether it continues from a summary)."""
        given = {field.name for field in fields(self) if getattr(self, field.name) is not None}
        given.discard("metadata")
        if limit is not None:
            given.add("limit")
        if after:
            given.add("after")
        matches = [
            _sql.METADATA_MATCH[dialect].format(
                n=n, value=_sql.METADATA_VALUE[dialect][_json_type(value)].format(n=n)
            )
            for n, (_, value) in enumerate(self.metadata)
        ]
        return _sql.session_summaries(given, matches)

    def params(self, dialect: str, time: TimeCodec) -> dict[str, Any]:
        """The statement's parameters (timestamps and metadata values as bound)."""
        params: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, datetime):
                value = time.bind(value)
            params[field.name] = value
        for n, (key, value) in enumerate(self.metadata):
            params[f"metadata_key_{n}"] = key
            params[f"metadata_value_{n}"] = json.dumps(value) if dialect != "sqlite" else value
        del params["metadata"]
        return params


def _json_type(value: MetadataValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "text" if isinstance(value, str) else "number"


def session_filter(
    *,
    user_id: object = None,
    project_id: object = None,
    active_seed_id: object = None,
    active_persona_id: object = None,
    forks_of: object = None,
    created_after: object = None,
    created_before: object = None,
    updated_after: object = None,
    updated_before: object = None,
    metadata: object = None,
) -> SessionFilter:
    """Check a listing's filters and return them.

    Raises:
        InvalidArgumentError: A filter is not of its type, or (``metadata``) not a mapping
            of text keys to a str, an int, a float, a bool or None.
    """
    texts = {
        "user_id": user_id,
        "project_id": project_id,
        "active_seed_id": active_seed_id,
        "active_persona_id": active_persona_id,
        "forks_of": forks_of,
    }
    times = {
        "created_after": created_after,
        "created_before": created_before,
        "updated_after": updated_after,
        "updated_before": updated_before,
    }
    with arguments():
        for name, text in texts.items():
            check_text(name, text, optional=True)
        for name, moment in times.items():
            if moment is not None:
                check_timestamp(name, moment)
    return SessionFilter(
        **texts,  # type: ignore[arg-type]
        **times,  # type: ignore[arg-type]
        metadata=_metadata_entries(metadata),
    )


def _metadata_entries(metadata: object) -> tuple[tuple[str, MetadataValue], ...]:
    if metadata is None:
        return ()
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            "metadata", f"must be a dict of keys to values, not {type(metadata).__name__}"
        )
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidArgumentError("metadata", f"may match at most {MAX_METADATA_KEYS} keys")
    entries: list[tuple[str, MetadataValue]] = []
    for key, value in metadata.items():
        try:
            check_text("metadata key", key)
        except InvalidDataError as exc:
            raise InvalidArgumentError("metadata", f"key {key!r}: {exc.reason}") from None
        entries.append((key, _metadata_value(key, value)))
    return tuple(entries)


def _metadata_value(key: str, value: object) -> MetadataValue:
    where = f"metadata[{key!r}]"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -_INT64 - 1 <= value <= _INT64:
            raise InvalidArgumentError(where, "must be an int that fits in 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgumentError(where, "must be a finite float (JSON has no NaN)")
        if abs(value) > _EXACT_FLOAT:
            # SQLite compares a stored integer with a float by rounding it to a float, which
            # PostgreSQL does not: beyond 2**53 the two would answer differently.
            raise InvalidArgumentError(where, "must be a float of at most 2**53 in size")
        return value
    if isinstance(value, str):
        with arguments():
            check_text(where, value)
        return value
    raise InvalidArgumentError(
        where,
        f"must be a str, an int, a float, a bool or None, not {type(value).__name__} "
        "(only top-level values are matched)",
    )
