"""statestore inside a host application's own alembic project (tests/host_project)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from statestore import migrate
from statestore._schema import metadata

HOST_PROJECT = Path(__file__).parent / "host_project"
STATESTORE_TABLES = {*metadata.tables, *migrate.SEARCH_TABLES, migrate.VERSION_TABLE}


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """Return a fresh copy of the host project, with no database yet."""
    copy = tmp_path / "host"
    shutil.copytree(HOST_PROJECT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def alembic(host: Path, *args: str) -> str:
    """Run the host's alembic command line and return its output."""
    result = subprocess.run(
        [sys.executable, "-m", "alembic", *args], cwd=host, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def tables(host: Path) -> set[str]:
    """Return the table names in the host's database (not SQLite's own)."""
    with sqlite3.connect(host / "host.db") as connection:
        rows = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        return {name for (name,) in rows}


def revisions(host: Path) -> tuple[object, object]:
    """Return (host revision, statestore revision) as recorded in the two version tables."""
    with sqlite3.connect(host / "host.db") as connection:
        host_rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        ours = connection.execute(f"SELECT version_num FROM {migrate.VERSION_TABLE}").fetchall()
    return host_rows, ours


def autogenerate(host: Path) -> str:
    """Run the host's autogenerate and return the upgrade() body it wrote."""
    alembic(host, "revision", "--autogenerate", "-m", "probe", "--rev-id", "probe")
    [generated] = (host / "migrations" / "versions").glob("probe_*.py")
    text = generated.read_text(encoding="utf-8")
    generated.unlink()
    return text.split("def upgrade() -> None:")[1].split("def downgrade")[0]


def test_host_upgrade_heads_upgrades_both(host: Path) -> None:
    """`alembic upgrade heads` in the host creates its tables and statestore's, each versioned."""
    alembic(host, "upgrade", "heads")

    assert tables(host) == STATESTORE_TABLES | {"widgets", "alembic_version"}
    assert revisions(host) == ([("h001",)], [(migrate.head_revision(),)])


def test_host_autogenerate_leaves_statestore_tables_alone(host: Path) -> None:
    """With statestore's include_name hook, the host's autogenerate proposes nothing."""
    alembic(host, "upgrade", "heads")

    body = autogenerate(host)

    assert "op." not in body
    assert "pass" in body


def test_without_the_hook_autogenerate_would_drop_statestore_tables(host: Path) -> None:
    """The hook is what stops autogenerate from proposing to drop statestore's tables."""
    alembic(host, "upgrade", "heads")
    env_py = host / "migrations" / "env.py"
    hook = "        include_name=statestore.migrate.include_name,\n"
    assert hook in env_py.read_text()
    env_py.write_text(env_py.read_text().replace(hook, ""))

    body = autogenerate(host)

    assert "drop_table('sessions')" in body or 'drop_table("sessions")' in body


def test_host_downgrade_leaves_statestore_alone(host: Path) -> None:
    """Downgrading the host to base removes its tables and keeps statestore's, at head."""
    alembic(host, "upgrade", "heads")

    alembic(host, "downgrade", "base")

    assert tables(host) == STATESTORE_TABLES | {"alembic_version"}
    assert revisions(host) == ([], [(migrate.head_revision(),)])
