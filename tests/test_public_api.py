"""The public API: what `statestore` exports, and that it is typed."""

from __future__ import annotations

from pathlib import Path

import statestore
from statestore import errors


def test_all_is_sorted_and_importable() -> None:
    """__all__ is sorted and every name in it exists."""
    assert list(statestore.__all__) == sorted(statestore.__all__)
    for name in statestore.__all__:
        assert getattr(statestore, name) is not None


def test_the_documented_names_are_exported() -> None:
    """The names other code relies on are importable from the top level."""
    expected = {
        "AgentResponse",
        "InvalidNameError",
        "PruneConfig",
        "PruneThrottle",
        "Session",
        "SessionSummary",
        "StateStore",
        "StateStoreError",
        "UserMessage",
    }
    assert expected <= set(statestore.__all__)


def test_every_error_derives_from_statestore_error() -> None:
    """Each exception in the errors module is a StateStoreError."""
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), statestore.StateStoreError)


def test_invalid_name_error_is_also_a_value_error() -> None:
    """InvalidNameError can be caught as ValueError."""
    assert issubclass(statestore.InvalidNameError, ValueError)


def test_package_is_marked_typed() -> None:
    """The package ships py.typed so type checkers use its annotations."""
    assert (Path(statestore.__file__).parent / "py.typed").is_file()
