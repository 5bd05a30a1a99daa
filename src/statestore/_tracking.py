"""Delta-save bookkeeping: how a session object knows that only appends happened.

A session's lists are :class:`History`, which count every change but appends; message
fields count their assignments in a process-wide edit counter; and a :class:`StoredState`
records, for one object in one process, what it was stored as, rows included. A save may
write only the appended rows when that record shows the stored prefix untouched.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, SupportsIndex

__all__ = [
    "History",
    "RowLog",
    "StoredState",
    "Tracked",
    "TrackedDict",
    "TrackedList",
    "note_edit",
    "tracked",
]

_edits = 0
"""Bumped whenever any message's field is assigned; see :class:`StoredState`."""


def note_edit() -> None:
    """Count one assignment to a message's field (called by the message models)."""
    global _edits
    _edits += 1


class TrackedDict(dict[str, Any]):
    """A message's unknown fields (or a JSON object inside one): a ``dict`` whose every
    change counts as an edit (see :func:`note_edit`), so that changing a stored message's
    extra values in place makes its session's next save rewrite it whole."""

    __slots__ = ()

    def __setitem__(self, key: str, value: Any) -> None:
        note_edit()
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        note_edit()
        super().__delitem__(key)

    def __ior__(self, other: Any) -> Self:  # type: ignore[override,misc]
        note_edit()
        return super().__ior__(other)

    def clear(self) -> None:
        note_edit()
        super().clear()

    def pop(self, *args: Any) -> Any:
        note_edit()
        return super().pop(*args)

    def popitem(self) -> tuple[str, Any]:
        note_edit()
        return super().popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        note_edit()
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        note_edit()
        super().update(*args, **kwargs)


class TrackedList(list[Any]):
    """A JSON array inside a message's unknown fields: a ``list`` whose every change
    counts as an edit, as :class:`TrackedDict`'s do."""

    __slots__ = ()

    def __setitem__(self, index: Any, value: Any) -> None:
        note_edit()
        super().__setitem__(index, value)

    def __delitem__(self, index: Any) -> None:
        note_edit()
        super().__delitem__(index)

    def __iadd__(self, other: Any) -> Self:  # type: ignore[misc]
        note_edit()
        return super().__iadd__(other)

    def __imul__(self, count: SupportsIndex) -> Self:
        note_edit()
        return super().__imul__(count)

    def append(self, value: Any) -> None:
        note_edit()
        super().append(value)

    def extend(self, values: Iterable[Any]) -> None:
        note_edit()
        super().extend(values)

    def insert(self, index: SupportsIndex, value: Any) -> None:
        note_edit()
        super().insert(index, value)

    def pop(self, index: SupportsIndex = -1) -> Any:
        note_edit()
        return super().pop(index)

    def remove(self, value: Any) -> None:
        note_edit()
        super().remove(value)

    def clear(self) -> None:
        note_edit()
        super().clear()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        note_edit()
        super().sort(*args, **kwargs)

    def reverse(self) -> None:
        note_edit()
        super().reverse()


def tracked(value: Any) -> Any:
    """``value`` (JSON) with every object and array in it made a tracked copy."""
    if isinstance(value, TrackedDict | TrackedList):
        return value
    if isinstance(value, dict):
        return TrackedDict({key: tracked(item) for key, item in value.items()})
    if isinstance(value, list):
        return TrackedList([tracked(item) for item in value])
    return value


class Tracked(Protocol):
    """What the bookkeeping needs of a session: its two lists."""

    user_messages: Any
    agent_responses: Any


class History(list[Any]):
    """A session's list of messages or responses that knows whether it only grew.

    It is a ``list`` in every way; its mutating methods other than ``append``, ``extend``
    and ``+=`` also count a rewrite, so a save can tell in constant time that the stored
    prefix is untouched. Sessions always hold their lists as ``History``: validation wraps
    them, and a list assigned to ``user_messages`` or ``agent_responses`` is held as a
    ``History`` copy (the session's next save then rewrites it whole).
    """

    __slots__ = ("rewrites",)

    def __init__(self, items: Iterable[Any] = ()) -> None:
        super().__init__(items)
        self.rewrites = 0

    def _rewritten(self) -> None:
        self.rewrites += 1

    def __setitem__(self, index: Any, value: Any) -> None:
        self._rewritten()
        super().__setitem__(index, value)

    def __delitem__(self, index: Any) -> None:
        self._rewritten()
        super().__delitem__(index)

    def __imul__(self, count: SupportsIndex) -> Self:
        self._rewritten()
        return super().__imul__(count)

    def insert(self, index: SupportsIndex, value: Any) -> None:
        self._rewritten()
        super().insert(index, value)

    def pop(self, index: SupportsIndex = -1) -> Any:
        self._rewritten()
        return super().pop(index)

    def remove(self, value: Any) -> None:
        self._rewritten()
        super().remove(value)

    def clear(self) -> None:
        self._rewritten()
        super().clear()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        self._rewritten()
        super().sort(*args, **kwargs)

    def reverse(self) -> None:
        self._rewritten()
        super().reverse()


@dataclass(slots=True, eq=False)
class RowLog:
    """The rows of a stored list, in order, as a chain that never changes once made.

    A save that appends links its new rows to the log it extends, so a session's record of
    what is stored grows in constant time and shares everything before. Rows are what the
    database was given or gave back, so the log is the stored state itself, however the
    live objects change afterwards. (Not a frozen dataclass only because freezing costs a
    microsecond a save: nothing assigns to one after it is made.)

    Attributes:
        before: The rows before these (``None`` at the start).
        rows: These rows, in order.
        count: How many rows the whole chain holds.
        convert: Turns one of ``rows`` into statement parameters (rows read back from the
            database are converted only if a save ever needs them); ``None`` when the rows
            already are parameters.
    """

    before: RowLog | None
    rows: Sequence[Any]
    count: int
    convert: Any = None

    @classmethod
    def extend(cls, before: RowLog | None, rows: Sequence[Any], convert: Any = None) -> RowLog:
        """Return the log of ``before``'s rows followed by ``rows``."""
        return cls(before, rows, (before.count if before else 0) + len(rows), convert)

    def params(self) -> list[Any]:
        """Return every row of the chain, in order, as statement parameters."""
        chunks: list[RowLog] = []
        log: RowLog | None = self
        while log is not None:
            chunks.append(log)
            log = log.before
        params: list[Any] = []
        for chunk in reversed(chunks):
            if chunk.convert is None:
                params.extend(chunk.rows)
            else:
                params.extend(chunk.convert(row) for row in chunk.rows)
        return params


@dataclass(slots=True, eq=False)
class StoredState:
    """What one session object was last loaded as, or will be stored as by its last save.

    A save may take the append-only path only while this record can show that the stored
    prefix is untouched: it belongs to this very object (a copy or an unpickled session
    has none, or one whose owner is another object), the lists are the ones recorded, no
    list was rewritten, and no message field was assigned anywhere in this process since.

    Attributes:
        token: The ``state_token`` of the stored row.
        owner: The session object this record describes.
        user_messages: The session's message list object then.
        message_rewrites: ``user_messages.rewrites`` then.
        agent_responses: The session's response list object then.
        response_rewrites: ``agent_responses.rewrites`` then.
        edits: The process's count of message-field assignments then (see
            :func:`note_edit`); if it has moved, a message may have been edited.
        message_rows: The stored messages' rows.
        response_rows: The stored responses' rows.
        form: The storage form those rows are in (the backend's ``TimeCodec``).
        identity: The stored row's columns that an append leaves alone, in that form
            (see ``statestore._rows.row_identity``).
    """

    token: int
    owner: weakref.ref[Tracked]
    user_messages: History
    message_rewrites: int
    agent_responses: History
    response_rewrites: int
    edits: int
    message_rows: RowLog
    response_rows: RowLog
    form: object
    identity: tuple[Any, ...]

    @classmethod
    def of(
        cls,
        token: int,
        session: Tracked,
        message_rows: RowLog,
        response_rows: RowLog,
        form: object,
        identity: tuple[Any, ...],
    ) -> StoredState | None:
        """Record ``session`` as stored with ``token``, these rows and this identity; None
        if untracked."""
        messages, responses = session.user_messages, session.agent_responses
        if not (isinstance(messages, History) and isinstance(responses, History)):
            return None
        return cls(
            token,
            weakref.ref(session),
            messages,
            messages.rewrites,
            responses,
            responses.rewrites,
            _edits,
            message_rows,
            response_rows,
            form,
            identity,
        )

    def appended_only(self, session: Tracked, form: object) -> bool:
        """Return whether ``session`` is this record's object, changed only by appends.

        ``form`` is the storage form the save writes in: rows recorded for another backend
        (the session saved to a SQLite store, now to a PostgreSQL one) do not count.
        """
        messages, responses = session.user_messages, session.agent_responses
        return (
            self.owner() is session
            and self.form is form
            and self.edits == _edits
            and messages is self.user_messages
            and responses is self.agent_responses
            and messages.rewrites == self.message_rewrites
            and responses.rewrites == self.response_rewrites
            and len(messages) >= self.message_rows.count
            and len(responses) >= self.response_rows.count
        )
