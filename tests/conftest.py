"""Shared fixtures: a migrated store on a real SQLite file, disposed after each test."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from statestore import StateStore, runner

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


@dataclass
class Traced:
    """The SQLite connections stores opened, in order, each with the SQL it ran.

    The first a store opens is its writer's; readers and the checkpointer follow.
    """

    connections: list[tuple[sqlite3.Connection, list[str]]] = field(default_factory=list)

    def of(self, index: int) -> list[str]:
        """Return the statements run on the ``index``-th connection opened."""
        return self.connections[index][1]

    def statements(self) -> list[str]:
        """Return every statement traced, connection by connection."""
        return [statement.strip() for _, run in self.connections for statement in run]

    def clear(self) -> None:
        """Forget the statements traced so far."""
        for _, run in self.connections:
            run.clear()


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Traced:
    """Trace each SQLite connection that stores open from now on (stdlib trace callback)."""
    recorded = Traced()
    connect = runner._connect_sqlite

    def connect_and_trace(*args: Any) -> sqlite3.Connection:
        connection = connect(*args)
        statements: list[str] = []
        connection.set_trace_callback(statements.append)
        recorded.connections.append((connection, statements))
        return connection

    monkeypatch.setattr(runner, "_connect_sqlite", connect_and_trace)
    return recorded
