"""The benchmark scripts run (small sizes) and report every figure; timings are not checked."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRESQL_SERVER

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def table_rows(script: str, *arguments: str) -> list[str]:
    """Run a benchmark script, check it exits 0, and return its table's body rows."""
    result = subprocess.run(
        [sys.executable, script, *arguments],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("| ")][1:]


def test_benchmark_runs_and_reports_every_figure() -> None:
    """bench_sqlite.py --quick exits 0 with one table row per issue-3 figure."""
    rows = table_rows("bench_sqlite.py", "--quick")

    assert len(rows) == 10
    for figure in ("append one exchange", "throughput", "list newest 50", "list all", "load a"):
        assert any(figure in row for row in rows), figure


def test_import_benchmark_runs_and_reports_every_operation() -> None:
    """bench_import.py --quick exits 0 with a files/s row per operation."""
    rows = table_rows("bench_import.py", "--quick", "--workers", "1")

    assert [row.split("|")[1].strip().split(":")[0] for row in rows] == [
        "file store floor",
        "file store read",
        "statestore import (new database), read in a thread",
        "statestore import (new database), 1 worker process(es)",
        "statestore import again (all unchanged)",
        "statestore export",
    ]


def test_wal_page_benchmark_shows_what_an_append_leaves_unwritten() -> None:
    """bench_wal_pages.py --quick --json: an append writes no index of the columns it keeps,
    nor the project or persona index of a session without one; the search index's pages are
    its own."""
    result = subprocess.run(
        [sys.executable, "bench_wal_pages.py", "--quick", "--json"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    kept = {
        "ix_sessions_active_persona_id_updated_at_id",
        "ix_sessions_created_at",
        "ix_sessions_project_id_updated_at_id",
    }
    for append in ("append (save_session)", "append_to_session"):
        assert not kept & set(measured["head"][append]), measured["head"][append]
        assert {"messages", "responses", "sessions"} <= set(measured["head"][append])
    search = {"search_entries", "search_text_data", "search_text_idx"}
    for append in ("append (save_session)", "append_to_session"):
        assert {"search_entries", "search_text_data"} <= set(measured["head"][append])
        assert not search & set(measured["without search"][append])
    assert (
        "ix_sessions_active_seed_id_updated_at_id" in measured["head"]["append changing the seed"]
    )
    assert sum(measured["head"]["create an empty session"].values()) == sum(
        measured["without search"]["create an empty session"].values()
    )


def test_telemetry_benchmark_reports_each_configuration() -> None:
    """bench_telemetry.py --quick exits 0 with a row per configuration, ratios to absent."""
    rows = table_rows("bench_telemetry.py", "--quick")
    assert [row.split("|")[1].strip() for row in rows] == [
        "absent",
        "API, no SDK",
        "SDK, in-memory",
    ]
    assert rows[0].split("|")[3].strip() == "1.00x"


@pytest.mark.postgresql
def test_backend_benchmark_reports_every_operation_on_both() -> None:
    """bench_backends.py --quick exits 0 with one row per operation, both backends measured."""
    rows = table_rows("bench_backends.py", "--quick", "--postgresql", POSTGRESQL_SERVER)

    assert len(rows) == 9
    for row in rows:
        name, sqlite, postgresql, ratio = row.split("|")[1:-1]
        assert float(sqlite.replace(",", "")) > 0, name
        assert float(postgresql.replace(",", "")) > 0, name
        assert ratio.strip().endswith("x"), name


@pytest.mark.postgresql
def test_postgresql_benchmark_reports_every_figure_for_both_sides() -> None:
    """bench_postgresql.py --quick exits 0 with a row per figure, raw and statestore measured."""
    rows = table_rows("bench_postgresql.py", "--quick", "--postgresql", POSTGRESQL_SERVER)

    figures = [
        "appends/s, 64 coroutines, one process",
        "p99 latency of a save, 64 coroutines, one process",
        "server connections opened",
        "append one exchange, sequential",
        "new sessions/s, 64 coroutines",
        "p99 latency of a new session's save, 64 coroutines",
        "load a session of",
        "list newest 50 of",
        "list all 1,000 sessions",
        "list all, growth",
        "update_session_with",
        "appends/s in total, 4 processes x 16 coroutines",
        "p99 latency of a save, 4 processes x 16 coroutines",
    ]
    assert len(rows) == len(figures)
    for figure in figures:
        assert any(row.startswith(f"| {figure}") for row in rows), figure
    for row in rows:
        name, raw, statestore = row.split("|")[1:4]
        assert re.search(r"\d", raw), name
        assert re.search(r"\d", statestore), name


def test_peers_benchmark_reports_every_workload() -> None:
    """bench_peers.py --quick exits 0 with a row per workload when the bench extra is in."""
    pytest.importorskip("agents")
    pytest.importorskip("langgraph.checkpoint.sqlite")
    rows = table_rows("bench_peers.py", "--quick")

    workloads = [
        "append one exchange (10 of history), median",
        "append one exchange, p95",
        "append without load, 10 exchanges of history",
        "append without load, 200 exchanges of history",
        "load a conversation of",
        "list all of 1,000 sessions",
        "list newest 50 of 1,000 sessions",
        "create a session + 2 turns",
        "delete one session",
        "64 coroutines appending (floors: sequential), appends/s",
        "64 coroutines appending (floors: sequential), p99",
    ]
    assert len(rows) == len(workloads)
    for workload, row in zip(workloads, rows, strict=True):
        assert row.startswith(f"| {workload}"), workload
        statestore = row.split("|")[2]
        assert any(character.isdigit() for character in statestore), workload


@pytest.mark.postgresql
def test_counter_shards_benchmark_reports_both_countings() -> None:
    """bench_counter_shards.py --quick exits 0 with a creates/s row for each way of counting."""
    rows = table_rows("bench_counter_shards.py", "--quick", "--postgresql", POSTGRESQL_SERVER)

    assert [row.split("|")[1].strip() for row in rows] == [
        "one row (before 0004)",
        "16 shards (0004)",
    ]
    for row in rows:
        assert float(row.split("|")[2].replace(",", "")) > 0


def test_features_benchmark_reports_every_figure() -> None:
    """bench_features.py --quick exits 0 with a row per store built and per search, fork,
    listing filter and write measured, each measured row ending in a ratio."""
    rows = table_rows("bench_features.py", "--quick")

    built = ["2,000 messages", "10,000 messages"]
    measured = [
        "list newest 50, no filter",
        'search "quokka": rare term, first page',
        'search "account": common term, first page of 20',
        'search "account": common term, second page (after=)',
        "fork a session of 200 + 200",
        'active_seed_id="seed-3"',
        'active_persona_id="persona-3"',
        'forks_of="long-session"',
        "created_after + created_before",
        "updated_after",
        'metadata={"tier": "gold"}',
        'user_id="user-7" + metadata={"tier": "gold"}',
        "append_to_session, 1 message + 1 response",
        "save_session of a loaded session after 1 exchange",
        "fork_session of 200 + 200",
    ]
    for figure in built + measured:
        assert any(row.startswith(f"| {figure}") for row in rows), figure
    for row in rows:
        if any(row.startswith(f"| {figure}") for figure in measured):
            assert row.split("|")[-2].strip().endswith("x"), row


def test_lock_fairness_benchmark_reports_each_participant_and_ratio() -> None:
    """bench_lock_fairness.py --quick exits 0 (no statestore append failed) with, for two
    processes and then for one alone, a row per participant and statestore's ratios."""
    rows = [row.split("|")[1:-1] for row in table_rows("bench_lock_fairness.py", "--quick")]
    rows = [cells for cells in rows if cells[0].strip() != "participant"]  # later tables' heads
    busy_handler = "statestore, SQLite's busy handler"
    peers = ["openai-agents"] if all(map(importlib.util.find_spec, ("agents", "langgraph"))) else []
    two_processes = ["statestore", busy_handler, *peers, "statestore against", busy_handler, *peers]
    one_process = ["statestore", busy_handler, "statestore against", busy_handler]
    assert [cells[0].strip() for cells in rows] == two_processes + one_process * 2
    ratios = [cells for cells in rows if cells[0].strip() != "statestore against"]
    for cells in ratios:
        assert all(re.fullmatch(r"[\d,.]+x?", cell.strip()) for cell in cells[1:]), cells
