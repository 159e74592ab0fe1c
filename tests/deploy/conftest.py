"""Fixtures for the deploy checks: rendered kustomize overlays."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import K8S, OVERLAYS, Docs, find_tool


@pytest.fixture(scope="session")
def kustomize_build() -> Callable[[Path], Docs]:
    """`kubectl kustomize DIR`, parsed; the test fails with kustomize's message if it does not render."""
    kubectl = find_tool("kubectl")
    cache: dict[Path, Docs] = {}

    def build(directory: Path) -> Docs:
        if directory not in cache:
            proc = subprocess.run(
                [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
            )
            if proc.returncode != 0:
                pytest.fail(f"kubectl kustomize {directory} failed:\n{proc.stderr}")
            cache[directory] = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return cache[directory]

    return build


# ids are paths: a bare "gpu" id would be a keyword that the top conftest skips without CUDA.
@pytest.fixture(params=OVERLAYS, ids=lambda name: f"overlays/{name}")
def rendered(request: pytest.FixtureRequest, kustomize_build: Callable[[Path], Docs]) -> Docs:
    """The documents of one overlay, for each overlay under deploy/k8s/overlays."""
    return kustomize_build(K8S / "overlays" / request.param)
