"""Lint, format and type checks as part of the suite (CI runs the README's test command): ruff's
linter and formatter and mypy, configured in pyproject.toml, must find nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
TOOLS = Path(sys.executable).parent  # the venv the README's command installed the dev extra into


@pytest.mark.parametrize(
    "command", [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]], ids=["ruff", "ruff-format", "mypy"]
)
def test_clean(command: list[str]) -> None:
    done = subprocess.run([str(TOOLS / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)} found problems:\n{done.stdout}{done.stderr}"
