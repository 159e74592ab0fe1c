"""The MNIST ConvNet shipped in models/mnist: complete, finished, its provenance, >= 99.3% on real MNIST."""

from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from training.data import idx_sha256
from training.models import create_model
from training.recipes import mnist
from training.report import evaluate_run
from training.rundir import RunDir

EMBEDDED = REPO / "models" / "mnist"


@pytest.fixture(scope="module")
def embedded() -> RunDir:
    return RunDir.open_finished(EMBEDDED)


def test_embedded_run_is_small_complete_and_finished(embedded: RunDir) -> None:
    info = embedded.read_info()
    assert info.arch == "mnist_cnn" and info.labels == [str(d) for d in range(10)]
    assert mnist.Config.model_validate(info.config).epochs == 30  # the record re-validates
    assert sum(p.numel() for p in create_model("mnist_cnn", 10).parameters()) == 93_322
    for path in (embedded.weights, embedded.metrics, embedded.curves, embedded.confusion_matrix):
        assert path.is_file(), path
    assert not embedded.checkpoint.exists()  # shipped without the resume state
    assert embedded.read_progress().epoch == len(embedded.read_metrics()) == 30  # type: ignore[union-attr]
    total = sum(f.stat().st_size for f in EMBEDDED.iterdir())
    assert total < 1_000_000


def test_embedded_model_was_trained_on_the_real_mnist_files(embedded: RunDir, mnist_dir: Path) -> None:
    assert embedded.read_info().data_sha256 == idx_sha256(mnist_dir)


def test_embedded_model_scores_its_recorded_accuracy_on_the_real_test_set(
    embedded: RunDir, mnist_dir: Path, tmp_path: Path
) -> None:
    recorded = embedded.read_evaluation("test")
    assert recorded is not None
    # Evaluate a copy, so the repository's files stay as committed.
    copy = RunDir.create(tmp_path / "mnist")
    for name in ("config.json", "model.safetensors"):
        (copy.path / name).write_bytes((EMBEDDED / name).read_bytes())
    batches = mnist.eval_batches(copy.read_info(), mnist_dir, "test", torch.device("cpu"))
    report = evaluate_run(copy, batches, "test", torch.device("cpu"))
    assert report["images"] == 10_000
    assert report["accuracy"] >= 0.993
    assert report["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-4)
