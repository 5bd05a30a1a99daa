"""The naming rules for categories and document names, alone and through the store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from statestore import InvalidNameError, StateStore, StateStoreError
from statestore._validate import check_category, check_name

VALID_CATEGORIES = [
    pytest.param("memory", id="plain"),
    pytest.param("memory/notes", id="nested"),
    pytest.param("a/b/c", id="deeply-nested"),
    pytest.param("sessions", id="sessions"),
    pytest.param("with space", id="space"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("v1.2", id="single-dot"),
    pytest.param("ünïcødé/👩‍💻", id="unicode"),
]

INVALID_CATEGORIES = [
    pytest.param("", id="empty"),
    pytest.param("/memory", id="leading-slash"),
    pytest.param("memory/", id="trailing-slash"),
    pytest.param("/", id="slash"),
    pytest.param("memory//notes", id="double-slash"),
    pytest.param("..", id="dotdot"),
    pytest.param("memory/../seeds", id="dotdot-segment"),
    pytest.param("a..b", id="dotdot-inside"),
    pytest.param("memory\\notes", id="backslash"),
    pytest.param(".", id="dot"),
    pytest.param("memory/./notes", id="dot-segment"),
    pytest.param("memory/.", id="trailing-dot-segment"),
    pytest.param("mem\x00ory", id="nul"),
    pytest.param("memory\ud800", id="lone-surrogate"),
    pytest.param(None, id="none"),
    pytest.param(1, id="int"),
    pytest.param(b"memory", id="bytes"),
    pytest.param(["memory"], id="list"),
]

VALID_NAMES = [
    pytest.param("note", id="plain"),
    pytest.param("note.md", id="extension"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("with space", id="space"),
    pytest.param("012664f6-1a32-4537-897a-5942fdaf4513", id="uuid"),
    pytest.param("ünïcødé-👩‍💻", id="unicode"),
]

INVALID_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("..", id="dotdot"),
    pytest.param("a..b", id="dotdot-inside"),
    pytest.param("/", id="slash"),
    pytest.param("a/b", id="inner-slash"),
    pytest.param("note/", id="trailing-slash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("\udc80", id="lone-surrogate"),
    pytest.param(None, id="none"),
    pytest.param(3, id="int"),
    pytest.param(b"note", id="bytes"),
]


@pytest.mark.parametrize("category", VALID_CATEGORIES)
def test_check_category_accepts_and_returns_valid(category: str) -> None:
    """A valid category is returned unchanged."""
    assert check_category(category) == category


@pytest.mark.parametrize("category", INVALID_CATEGORIES)
def test_check_category_rejects_invalid(category: object) -> None:
    """An invalid category raises InvalidNameError naming the value."""
    with pytest.raises(InvalidNameError) as caught:
        check_category(category)
    assert caught.value.kind == "category"
    assert caught.value.value == category
    assert repr(category) in str(caught.value)


@pytest.mark.parametrize("name", VALID_NAMES)
def test_check_name_accepts_and_returns_valid(name: str) -> None:
    """A valid name is returned unchanged."""
    assert check_name(name) == name


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_check_name_rejects_invalid(name: object) -> None:
    """An invalid name raises InvalidNameError naming the value."""
    with pytest.raises(InvalidNameError) as caught:
        check_name(name)
    assert caught.value.kind == "name"
    assert caught.value.value == name
    assert repr(name) in str(caught.value)


def test_check_name_message_names_the_kind() -> None:
    """A session id that breaks the rules is called a session id in the error."""
    with pytest.raises(InvalidNameError, match="session id") as caught:
        check_name("../etc", kind="session id")
    assert caught.value.kind == "session id"


@pytest.mark.parametrize(
    ("check", "value"),
    [
        pytest.param(check_category, "memory/../seeds", id="category"),
        pytest.param(check_name, "../secret", id="name"),
    ],
)
def test_error_message_contains_value(check: Callable[[object], str], value: str) -> None:
    """The error message contains the offending value as given."""
    with pytest.raises(InvalidNameError) as caught:
        check(value)
    assert value in str(caught.value)


@pytest.mark.parametrize("base", [ValueError, StateStoreError])
def test_invalid_name_error_is_also(base: type[Exception]) -> None:
    """InvalidNameError is both a ValueError and a StateStoreError."""
    with pytest.raises(base):
        check_name("")


# -- through the store -----------------------------------------------------------------

Call = Callable[[StateStore, Any, Any], Awaitable[object]]

DOCUMENT_METHODS: list[Any] = [
    pytest.param(lambda s, c, n: s.save_markdown(c, n, "new"), id="save_markdown"),
    pytest.param(lambda s, c, n: s.load_markdown(c, n), id="load_markdown"),
    pytest.param(lambda s, c, n: s.save_json(c, n, {"new": True}), id="save_json"),
    pytest.param(lambda s, c, n: s.load_json(c, n), id="load_json"),
    pytest.param(lambda s, c, n: s.delete_file(c, n), id="delete_file"),
]

CATEGORY_METHODS: list[Any] = [
    *DOCUMENT_METHODS,
    pytest.param(lambda s, c, n: s.list_category(c), id="list_category"),
]

# Bad values close to the stored document's, so a method that skipped the check would hit it.
BAD_CATEGORIES = [
    pytest.param("", id="empty"),
    pytest.param("/memory", id="leading-slash"),
    pytest.param("memory/", id="trailing-slash"),
    pytest.param("memory//notes", id="double-slash"),
    pytest.param("memory/..", id="dotdot"),
    pytest.param("memory\\notes", id="backslash"),
    pytest.param("memory\x00", id="nul"),
    pytest.param("memory\ud800", id="lone-surrogate"),
    pytest.param(None, id="none"),
]

BAD_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("..", id="dotdot"),
    pytest.param("../note", id="dotdot-prefix"),
    pytest.param("note/", id="slash"),
    pytest.param("note\\", id="backslash"),
    pytest.param("note\x00", id="nul"),
    pytest.param("note\udc80", id="lone-surrogate"),
    pytest.param(None, id="none"),
]


async def _stored(store: StateStore) -> tuple[str | None, Any, list[str]]:
    return (
        await store.load_markdown("memory", "note"),
        await store.load_json("memory", "note"),
        await store.list_category("memory"),
    )


@pytest.fixture
async def filled(store: StateStore) -> StateStore:
    """Return the store holding a markdown and a JSON document memory/note."""
    await store.save_markdown("memory", "note", "# original")
    await store.save_json("memory", "note", {"original": True})
    return store


@pytest.mark.parametrize("category", BAD_CATEGORIES)
@pytest.mark.parametrize("call", CATEGORY_METHODS)
async def test_store_rejects_bad_category(filled: StateStore, call: Call, category: object) -> None:
    """Every document method rejects a bad category and leaves stored documents intact."""
    with pytest.raises(InvalidNameError):
        await call(filled, category, "note")
    assert await _stored(filled) == ("# original", {"original": True}, ["note"])


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("call", DOCUMENT_METHODS)
async def test_store_rejects_bad_name(filled: StateStore, call: Call, name: object) -> None:
    """Every document method rejects a bad name and leaves stored documents intact."""
    with pytest.raises(InvalidNameError):
        await call(filled, "memory", name)
    assert await _stored(filled) == ("# original", {"original": True}, ["note"])


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("call", DOCUMENT_METHODS)
async def test_store_rejects_bad_name_in_sessions(
    filled: StateStore, call: Call, name: object
) -> None:
    """In the sessions category too, a bad name is rejected before anything is touched."""
    await filled.save_json("sessions", "s-1", {"user_id": "u"})
    with pytest.raises(InvalidNameError):
        await call(filled, "sessions", name)
    assert await filled.list_category("sessions") == ["s-1"]


@pytest.mark.parametrize("category", VALID_CATEGORIES)
async def test_store_accepts_valid_category(store: StateStore, category: str) -> None:
    """A valid category, nested or not, can hold documents."""
    await store.save_markdown(category, "note", "text")
    assert await store.load_markdown(category, "note") == "text"


@pytest.mark.parametrize("name", VALID_NAMES)
async def test_store_accepts_valid_name(store: StateStore, name: str) -> None:
    """A valid name can name a document."""
    await store.save_json("memory", name, [name])
    assert await store.load_json("memory", name) == [name]
