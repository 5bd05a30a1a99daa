"""Shared fixtures: a migrated store on a real SQLite file, disposed after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from statestore import StateStore

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "filestore-sample"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Return the path of a fresh SQLite database file."""
    return tmp_path / "state.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[StateStore]:
    """Yield a store on a new, migrated SQLite file and close it afterwards."""
    async with StateStore.open(db_path) as opened:
        yield opened
