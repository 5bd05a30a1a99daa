"""The built wheel: it carries the migrations and migrates a database with no checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MIGRATE_FROM_THE_WHEEL = """
import asyncio, pathlib, sys
import statestore
from statestore import Session, StateStore, migrate

assert "site-packages" in statestore.__file__, statestore.__file__

async def main():
    async with StateStore.open("new.db") as store:
        await store.save_session(Session(user_id="u"))
    print(await migrate.current_revision("new.db"), migrate.head_revision())
    print(pathlib.Path(migrate.script_location()).relative_to(pathlib.Path(statestore.__file__).parent))

asyncio.run(main())
"""


def test_wheel_installs_into_a_fresh_venv_and_migrates_a_new_database(tmp_path: Path) -> None:
    """The wheel, installed outside the checkout, creates the schema at head by itself."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = dist.glob("statestore-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "statestore/migrations/env.py" in names
    assert "statestore/migrations/versions/0001_initial_schema.py" in names
    assert "statestore/py.typed" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True
    )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = subprocess.run(
        [str(python), "-c", MIGRATE_FROM_THE_WHEEL],
        cwd=workdir,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    current, head = result.stdout.splitlines()[0].split()
    assert current == head
    assert result.stdout.splitlines()[1] == "migrations"
