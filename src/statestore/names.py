"""The file store's naming rules for categories, document names and session ids.

A category was a directory path and a name a file name, so the rules keep every name
something that could be written back to disk: a category is rejected if it is empty, starts
or ends with ``/``, contains ``//``, ``..`` or ``\\``, or has ``.`` as a path segment
(``a/./b`` would be ``a/b`` on disk); a name or session id is rejected
if it is empty or contains ``..``, ``/`` or ``\\``. No value may contain a NUL character
(PostgreSQL cannot store one, and no file system accepts one in a path).

What is written must also fit a file name: a category's segments may be at most
:data:`MAX_FILE_NAME_BYTES` bytes of UTF-8, and a name or session id at most that less its
file's suffix (``.json`` or ``.md``). The lookups check only the rules above, so a longer
name stored before this limit can still be read and deleted.
"""

from __future__ import annotations

from statestore.errors import InvalidNameError

__all__ = [
    "MAX_FILE_NAME_BYTES",
    "SESSIONS_CATEGORY",
    "check_category",
    "check_name",
    "check_writable_category",
    "check_writable_name",
]

MAX_FILE_NAME_BYTES = 255
"""The longest file name (in bytes) that common file systems hold."""

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
