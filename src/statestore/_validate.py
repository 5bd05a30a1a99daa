"""Every input rule statestore checks before any SQL runs, in one place.

A bad value fails the whole call before anything is written, with an error naming the
field (or the name) and the rule, and the stored state stays as it was:

* names (categories, document names, session ids) follow the file store's rules, which
  keep every name something that could be written back to disk: a category is rejected
  if it is empty, starts or ends with ``/``, contains ``//``, ``..`` or ``\\``, or has
  ``.`` as a path segment (``a/./b`` would be ``a/b`` on disk); a name or session id if it
  is empty or contains ``..``, ``/`` or ``\\``. What is written must also fit a file
  name: category segments at most :data:`MAX_FILE_NAME_BYTES` bytes of UTF-8, and a name
  that less its file's suffix. Lookups check only the first rules, so a longer name
  stored before that limit can still be read and deleted;
* text must be valid Unicode without NUL characters (one policy for every backend:
  PostgreSQL cannot store NUL);
* JSON values (metadata, unmodelled fields, JSON documents) must be made of dicts with
  ``str`` keys, lists, ``str``, ``int``, finite ``float``, ``bool`` and ``None``, nested at
  most :data:`MAX_JSON_DEPTH` deep, so whatever is accepted comes back exactly;
* no text value, and no JSON value once written as text, may be longer than
  :data:`MAX_TEXT_LENGTH` characters;
* timestamps must be timezone-aware and within ``statestore.models``' range;
* a file store's session JSON must be a valid session named as its file.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from statestore.errors import InvalidArgumentError, InvalidDataError, InvalidNameError
from statestore.models import (
    FILE_CONTEXT,
    MAX_JSON_DEPTH,
    MAX_TEXT_LENGTH,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    Session,
    SessionSummary,
    to_storable_utc,
)

__all__ = [
    "MAX_COUNT",
    "MAX_FILE_NAME_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_TEXT_LENGTH",
    "SESSIONS_CATEGORY",
    "arguments",
    "check_after",
    "check_category",
    "check_count",
    "check_fork",
    "check_json",
    "check_length",
    "check_name",
    "check_text",
    "check_timestamp",
    "check_writable_category",
    "check_writable_name",
    "model_as_json",
    "session_from_document",
    "session_from_json",
]

MAX_COUNT = 2**63 - 1
"""The largest ``limit`` or ``page_size`` (the databases' 64-bit integers)."""


def check_count(field: str, value: object) -> None:
    """Raise unless ``value`` is an int from 1 to :data:`MAX_COUNT`."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_COUNT:
        raise InvalidArgumentError(field, f"must be an int from 1 to 2**63 - 1, not {value!r}")


@contextmanager
def arguments() -> Iterator[None]:
    """Report a value the checks inside refuse as an :class:`InvalidArgumentError` (same
    field, same reason): a filter or a query is an argument, not data being stored."""
    try:
        yield
    except InvalidArgumentError:
        raise
    except InvalidDataError as exc:
        raise InvalidArgumentError(exc.field, exc.reason) from None


def check_after(after: object) -> None:
    """Raise unless ``after`` is None or a listing's summary a next page can start from
    (its id storable text, its time in the range): a cursor may come back from a client.

    Raises:
        InvalidArgumentError: It is not.
    """
    if after is None:
        return
    try:
        if not isinstance(after, SessionSummary):
            raise InvalidDataError("after", "must be a SessionSummary from a listing")
        check_text("after.id", after.id)
        check_timestamp("after.updated_at", after.updated_at)
    except InvalidDataError as exc:
        raise InvalidArgumentError("after", exc.reason) from None


def check_fork(up_to: object, new_id: object) -> str:
    """Check ``fork_session``'s options; return the fork's id (``new_id``, or a new uuid4).

    Raises:
        InvalidArgumentError: ``up_to`` is not None or an int >= 0.
        InvalidNameError: ``new_id`` breaks the naming rules of session ids.
    """
    if up_to is not None and (
        not isinstance(up_to, int) or isinstance(up_to, bool) or not 0 <= up_to <= MAX_COUNT
    ):
        raise InvalidArgumentError("up_to", f"must be None or an int >= 0, not {up_to!r}")
    return str(uuid.uuid4()) if new_id is None else check_writable_name(new_id, kind="new_id")


MAX_FILE_NAME_BYTES = 255
"""The longest file name (in bytes) that common file systems hold."""

# Python refuses to turn integers of more than sys.get_int_max_str_digits() (4300 by
# default) digits into text; 14,000 bits is about 4,200 digits.
_MAX_INT_BITS = 14_000


def check_text(field: str, value: object, *, optional: bool = False) -> None:
    """Raise :class:`InvalidDataError` unless ``value`` is storable text."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise InvalidDataError(field, f"must be a str, not {type(value).__name__}")
    check_length(field, value)
    if "\x00" in value:
        raise InvalidDataError(field, "must not contain a NUL character")
    if value.isascii():  # no surrogates; a check with no copy, unlike encode()
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidDataError(field, "must be valid Unicode (no lone surrogates)") from None


MAX_BUSY_TIMEOUT = 86_400
"""The longest ``busy_timeout`` (seconds) a store accepts: a day."""


def check_busy_timeout(value: object) -> float:
    """Return ``value`` if it is a number of seconds a write may wait for a lock."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_BUSY_TIMEOUT
    ):
        raise InvalidArgumentError(
            "busy_timeout", f"must be seconds from 0 to {MAX_BUSY_TIMEOUT:,}, not {value!r}"
        )
    return float(value)


def check_length(field: str, text: str) -> None:
    if len(text) > MAX_TEXT_LENGTH:
        raise InvalidDataError(
            field, f"is {len(text):,} characters long; the limit is {MAX_TEXT_LENGTH:,}"
        )


def check_json(field: str, value: object, depth: int = 0) -> None:
    """Raise :class:`InvalidDataError` unless ``value`` is JSON that round-trips exactly."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise InvalidDataError(field, "integer is too large to write as JSON")
        return
    if isinstance(value, str):
        check_text(field, value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidDataError(field, f"{value!r} is not a JSON number")
    elif isinstance(value, dict | list):
        if depth >= MAX_JSON_DEPTH:
            raise InvalidDataError(field, f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, list):
            for index, item in enumerate(value):
                check_json(f"{field}[{index}]", item, depth + 1)
            return
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidDataError(field, f"key {key!r} is not a str")
            check_text(f"{field} key {key!r}", key)
            check_json(f"{field}[{key!r}]", item, depth + 1)
    else:
        raise InvalidDataError(field, f"{type(value).__name__} is not JSON-able")


def check_timestamp(field: str, value: object) -> None:
    """Raise :class:`InvalidDataError` unless ``value`` is an aware datetime in the range.

    The range (``statestore.models.MIN_TIMESTAMP`` .. ``MAX_TIMESTAMP``) is the same on
    every backend, so whatever is accepted can be read back.
    """
    if (
        value.__class__ is datetime
        and value.tzinfo is UTC
        and MIN_TIMESTAMP <= value <= MAX_TIMESTAMP
    ):
        return  # what validation makes: one comparison of two UTC datetimes, no offsets
    if not isinstance(value, datetime):
        raise InvalidDataError(field, f"must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidDataError(field, "is a naive datetime; give it a time zone (UTC)")
    try:
        to_storable_utc(value)
    except ValueError as exc:
        raise InvalidDataError(field, str(exc)) from None


def model_as_json(field: str, model: BaseModel) -> Any:
    """Return a model's JSON value, or raise InvalidDataError saying why it has none."""
    try:
        return model.model_dump(mode="json")
    except (PydanticSerializationError, ValueError) as exc:  # UnicodeDecodeError too
        raise InvalidDataError(field, f"cannot be written as JSON: {exc}") from None


def session_from_document(name: str, data: object) -> Session:
    """Validate a ``sessions`` JSON document named ``name`` into a session.

    Raises:
        InvalidDataError: ``data`` is not an object, or its ``id`` is not ``name``.
        pydantic.ValidationError: It is not a valid session.
    """
    if isinstance(data, Session):  # saved as it is, through save_session's checks
        if data.id != name:
            raise InvalidDataError("data.id", f"{data.id!r} does not match the name {name!r}")
        return data
    if isinstance(data, BaseModel):
        data = model_as_json("data", data)
    if not isinstance(data, dict):
        raise InvalidDataError("data", "a session document must be a JSON object")
    return _named(name, Session.model_validate(data, context=FILE_CONTEXT))


def session_from_json(name: str, text: str) -> Session:
    """Like :func:`session_from_document`, from JSON text (parsed by pydantic, faster).

    Raises:
        InvalidDataError: The text is not a JSON object, or its ``id`` is not ``name``.
        pydantic.ValidationError: It is not JSON (error type ``json_invalid``), or not a
            valid session.
    """
    try:
        session = Session.model_validate_json(text, context=FILE_CONTEXT)
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "model_type":
            raise InvalidDataError("data", "a session document must be a JSON object") from None
        raise
    return _named(name, session)


def _named(name: str, session: Session) -> Session:
    """Give a session without an id this name; refuse one whose id is another."""
    if "id" not in session.model_fields_set:
        session.id = name
    elif session.id != name:
        raise InvalidDataError("data.id", f"{session.id!r} does not match the name {name!r}")
    return session


SESSIONS_CATEGORY = "sessions"
"""The category under which the document API shows the sessions table."""


def _check_common(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidNameError(kind, value, f"must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidNameError(kind, value, "must not be empty")
    if "\x00" in value:
        raise InvalidNameError(kind, value, "must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNameError(kind, value, "must be valid Unicode (no lone surrogates)") from None
    return value


def check_category(category: object) -> str:
    """Return ``category`` if it is a valid category, else raise :class:`InvalidNameError`."""
    value = _check_common("category", category)
    if value.startswith("/") or value.endswith("/"):
        raise InvalidNameError("category", value, "must not start or end with '/'")
    for forbidden in ("//", "..", "\\"):
        if forbidden in value:
            raise InvalidNameError("category", value, f"must not contain {forbidden!r}")
    if "." in value.split("/"):
        raise InvalidNameError("category", value, "must not have '.' as a path segment")
    return value


def check_name(name: object, *, kind: str = "name") -> str:
    """Return ``name`` if it is a valid document name or session id, else raise.

    Args:
        name: The value to check.
        kind: What the value names, for the error message (``"name"`` or ``"session id"``).

    Raises:
        InvalidNameError: The value breaks a rule; the message names the value and the rule.
    """
    value = _check_common(kind, name)
    for forbidden in ("..", "/", "\\"):
        if forbidden in value:
            raise InvalidNameError(kind, value, f"must not contain {forbidden!r}")
    return value


def check_writable_category(category: object) -> str:
    """Like :func:`check_category`, and every segment must fit a directory name."""
    value = check_category(category)
    for segment in value.split("/"):
        if len(segment.encode("utf-8")) > MAX_FILE_NAME_BYTES:
            raise InvalidNameError(
                "category",
                value,
                f"segment {segment[:20]!r}... is longer than {MAX_FILE_NAME_BYTES} bytes",
            )
    return value


def check_writable_name(name: object, *, kind: str = "name", suffix: str = ".json") -> str:
    """Like :func:`check_name`, and ``name`` plus ``suffix`` must fit a file name.

    Args:
        name: The value to check.
        kind: What the value names, for the error message.
        suffix: The suffix of the file it would be written as.
    """
    value = check_name(name, kind=kind)
    limit = MAX_FILE_NAME_BYTES - len(suffix)
    size = len(value.encode("utf-8"))
    if size > limit:
        raise InvalidNameError(
            kind, value, f"is {size} bytes of UTF-8; the limit is {limit} (a file name)"
        )
    return value
