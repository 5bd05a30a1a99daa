"""The README's examples run, and its test command is what CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    """Return the README's fenced code blocks in ``language``."""
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_python_examples_run(tmp_path: Path) -> None:
    """Every python block in the README runs to completion in a fresh directory."""
    blocks = code_blocks("python")
    assert blocks
    for block in blocks:
        result = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr


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
