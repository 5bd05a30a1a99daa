"""The README's examples run, and its test command is what CI runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    """Return the README's fenced code blocks in ``language``."""
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


ENV_PY_FRAGMENT = "# in your migrations/env.py\n"


def test_python_examples_run(tmp_path: Path) -> None:
    """Every runnable python block in the README runs to completion in a fresh directory."""
    blocks = [b for b in code_blocks("python") if not b.startswith(ENV_PY_FRAGMENT)]
    assert len(blocks) >= 2
    for block in blocks:
        result = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr


def test_main_job_imports_the_sample_then_lists_and_prints_stats(tmp_path: Path) -> None:
    """The first set-up command, after its install, imports the sample, lists, and reports."""
    command = code_blocks("console")[0].strip()
    install = "python3 -m venv .venv && .venv/bin/pip install -q . && "
    assert command.startswith(install)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    scripts = Path(sys.executable).parent
    result = subprocess.run(
        command.removeprefix(install).replace(".venv/bin/", f"{scripts}/"),
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={key: value for key, value in os.environ.items() if key != "STATESTORE_DB"},
    )
    assert result.returncode == 0, result.stderr
    assert "sessions: 40 added" in result.stdout
    assert "Error: 4 files were not imported" in result.stderr
    assert "77001ae3-1f80-4666-85e4-2f4d0b904d54" in result.stdout  # the listing
    assert "evaluation by seed" in result.stdout  # the stats
    assert (tmp_path / "statestore.db").is_file()


def test_quickstart_runs_twice_on_the_same_database(tmp_path: Path) -> None:
    """The main job's script stores a conversation and lists it, and can run again."""
    script = ROOT / "examples" / "quickstart.py"
    for run in (1, 2):
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("user=user-1") == run
    assert (tmp_path / "statestore.db").is_file()


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run contains the README's second set-up command, exactly."""
    commands = [block.strip() for block in code_blocks("console")[:2]]
    ci_script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")

    assert len(commands) == 2
    assert commands[1] in ci_script.splitlines()


def test_env_py_recipe_is_the_one_the_host_project_runs() -> None:
    """Each line of the README's env.py recipe stands in the tested host project's env.py."""
    [recipe] = [b for b in code_blocks("python") if b.startswith(ENV_PY_FRAGMENT)]
    host_env = (ROOT / "tests" / "host_project" / "migrations" / "env.py").read_text()
    host_lines = {line.split("#")[0].strip() for line in host_env.splitlines()}

    for line in recipe.splitlines()[1:]:
        code = line.split("#")[0].strip()
        if code and code not in {"target_metadata=target_metadata,"}:
            assert code in host_lines, line
