"""The SQLite transaction's statements: multi-row INSERTs for many rows, the same rows."""

from __future__ import annotations

import sqlite3

import pytest

from statestore import _sql
from statestore._tx import _MULTIROW_MAX, SQLiteTx, _multirow_insert


def table() -> sqlite3.Connection:
    """A connection to a new in-memory table of messages."""
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute(
        "CREATE TABLE messages (session_id TEXT, position INTEGER, content TEXT, "
        "created_at TEXT, extra TEXT, PRIMARY KEY (session_id, position))"
    )
    return connection


@pytest.mark.parametrize("count", [1, 2, 3, 37, 64, 65, 200])
def test_run_many_writes_every_row_in_order(count: int) -> None:
    """An INSERT's rows, however many, are all written, in their order, as executemany
    would write them."""
    rows = [
        {"session_id": "s", "position": n, "content": f"m{n}", "created_at": "t", "extra": None}
        for n in range(count)
    ]
    multi, plain = table(), table()
    SQLiteTx(multi).run_many(_sql.INSERT_MESSAGE, rows)
    plain.executemany(_sql.INSERT_MESSAGE, rows)
    query = "SELECT rowid, * FROM messages ORDER BY rowid"
    assert multi.execute(query).fetchall() == plain.execute(query).fetchall()


def test_statements_hold_powers_of_two_rows_up_to_the_maximum() -> None:
    """37 rows go as 32, 4 and 1; more than the maximum go the maximum at a time."""
    traced: list[str] = []
    connection = table()
    connection.set_trace_callback(traced.append)
    rows = [
        {"session_id": "s", "position": n, "content": "", "created_at": "t", "extra": None}
        for n in range(37 + 2 * _MULTIROW_MAX)
    ]
    SQLiteTx(connection).run_many(_sql.INSERT_MESSAGE, rows)
    # The trace shows each statement with its values bound: one "('s'," per row.
    assert [statement.count("('s',") for statement in traced] == [_MULTIROW_MAX] * 2 + [32, 4, 1]


def test_upserts_go_multi_row_and_other_statements_do_not() -> None:
    """An upsert keeps its ON CONFLICT clause after the rows; an UPDATE, or an INSERT
    whose VALUES holds a literal, runs once per row as before."""
    statement, names = _multirow_insert(_sql.UPSERT_MESSAGE)(2)  # type: ignore[misc]
    assert "VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)\nON CONFLICT" in statement
    assert names == ["session_id", "position", "content", "created_at", "extra"]
    assert _multirow_insert(_sql.APPEND_TO_SESSION) is None
    assert _multirow_insert(_sql.UPSERT_SESSION) is None
