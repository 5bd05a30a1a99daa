"""The benchmark scripts run (small sizes) and report every figure; timings are not checked."""

from __future__ import annotations

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
    rows = table_rows("bench_import.py", "--quick")

    assert [row.split("|")[1].strip().split(":")[0] for row in rows] == [
        "file store floor",
        "file store read",
        "statestore import (new database)",
        "statestore import again (all unchanged)",
        "statestore export",
    ]


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
