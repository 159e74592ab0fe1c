"""One dependency list: pyproject.toml is the source of the locks (requirements/, scripts/lock.sh); torch and
torchvision are pinned once, in requirements/torch.txt; this environment is what the dev lock says."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.tools import find_tool
from tests.support.requirements import BENTO_LOCK, DEV_LOCK, REPO, RUNTIME_LOCK, TORCH_PINS, Pin, read_pins

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(text) for text in PROJECT["dependencies"]]
DEV = [Requirement(text) for text in PROJECT["optional-dependencies"]["dev"]]
LOCKS = (RUNTIME_LOCK, DEV_LOCK, BENTO_LOCK)
# Where dependencies used to be listed by hand: none of them may pin torch again.
INSTALLERS = [
    REPO / "pyproject.toml",
    REPO / "bentofile.yaml",
    REPO / "deploy" / "docker" / "Dockerfile",
    *sorted((REPO / "scripts").glob("*.sh")),
]


def pins(path: Path) -> dict[str, Pin]:
    return read_pins(path.read_text())


def versions(path: Path) -> dict[str, str]:
    return {name: pin.version for name, pin in pins(path).items()}


@pytest.mark.parametrize(
    ("dependencies", "lock"), [(RUNTIME, RUNTIME_LOCK), (DEV, DEV_LOCK)], ids=["runtime", "dev"]
)
def test_every_dependency_of_pyproject_is_pinned_within_its_range(
    dependencies: list[Requirement], lock: Path
) -> None:
    locked = pins(lock) | pins(TORCH_PINS)
    for dependency in dependencies:
        pin = locked.get(canonicalize_name(dependency.name))
        assert pin is not None, f"{dependency} is not in {lock.name}: run bash scripts/lock.sh"
        assert dependency.specifier.contains(pin.version), f"{dependency}: {lock.name} pins {pin.version}"


def test_every_locked_file_is_checked_by_its_hash() -> None:
    for lock in LOCKS:
        unhashed = [name for name, pin in pins(lock).items() if not pin.hashes]
        assert not unhashed, f"{lock.name}: no hashes for {unhashed}"


@pytest.mark.parametrize("lock", [DEV_LOCK, BENTO_LOCK], ids=lambda path: path.name)
def test_the_other_locks_keep_the_runtime_pins(lock: Path) -> None:
    runtime, other = versions(RUNTIME_LOCK), versions(lock)
    assert {name: other.get(name) for name in runtime} == runtime


def test_torch_is_pinned_in_one_place_only() -> None:
    torch = versions(TORCH_PINS)
    assert set(torch) == {"torch", "torchvision"}
    for lock in (RUNTIME_LOCK, DEV_LOCK):
        assert not torch.keys() & pins(lock).keys(), f"{lock.name} pins torch: see scripts/lock.sh"
    assert {name: versions(BENTO_LOCK).get(name) for name in torch} == torch
    pinned_by_hand = [
        path.relative_to(REPO) for path in INSTALLERS if re.search(r"\btorch(vision)?\s*==", path.read_text())
    ]
    assert pinned_by_hand == []


def test_this_environment_is_the_dev_lock() -> None:
    """What the tests run on: scripts/setup.sh installed the locks (a stale .venv fails here)."""
    wanted = pins(DEV_LOCK) | pins(TORCH_PINS)
    installed = {name: importlib.metadata.version(name) for name in wanted}
    # torch's own version carries its build: 2.14.1 from PyPI, 2.14.1+cpu from the CPU index.
    differ = {
        name: (pin.version, installed[name])
        for name, pin in wanted.items()
        if Version(installed[name]).public != Version(pin.version).public
    }
    assert differ == {}, "(locked, installed): run bash scripts/setup.sh"


def test_uv_makes_the_same_locks_of_pyproject(tmp_path: Path) -> None:
    """`scripts/lock.sh` keeps the pins that pyproject.toml still allows: it changes nothing while the
    locks hold every dependency within its range (needs the package index, as scripts/setup.sh does)."""
    for lock in LOCKS:
        shutil.copy(lock, tmp_path / lock.name)
    env = {**os.environ, "UV": find_tool("uv"), "LOCK_DIR": str(tmp_path)}
    result = subprocess.run(
        ["bash", "scripts/lock.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    for lock in LOCKS:
        assert versions(tmp_path / lock.name) == versions(lock), f"{lock.name} is stale: bash scripts/lock.sh"
