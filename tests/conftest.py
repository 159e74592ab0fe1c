"""Shared test set-up: an isolated BentoML store, the real data beside the project, GPU skips."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

# Before anything imports bentoml: tests never touch the user's model store.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="convnet-test-bentoml-")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MNIST_DIR = SHARED / "data" / "mnist"
HYMENOPTERA_DIR = SHARED / "data" / "hymenoptera"
WEIGHTS_DIR = SHARED / "weights"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"real MNIST is expected at {MNIST_DIR} (see the README's Tests section)")
    return MNIST_DIR


@pytest.fixture(autouse=True)
def restore_rng() -> object:
    """Tests that seed torch do not change the random state seen by the next test."""
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)
