"""User mistakes end with one line naming the problem and a non-zero exit, never a traceback."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import assert_one_line_error, run_cli


def idx_images(count: int, side: int) -> bytes:
    header = (2051).to_bytes(4, "big") + count.to_bytes(4, "big") + side.to_bytes(4, "big") * 2
    return header + np.zeros(count * side * side, np.uint8).tobytes()


@pytest.fixture
def mnist_copy(mnist_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the real MNIST folder, to break one file at a time."""
    copy = tmp_path / "mnist"
    shutil.copytree(mnist_dir, copy, ignore=shutil.ignore_patterns("*.md"))
    return copy


def test_missing_data_file(mnist_copy: Path, tmp_path: Path) -> None:
    (mnist_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    result = run_cli("train", "mnist", "--data-dir", mnist_copy, "--out", tmp_path / "run")
    assert_one_line_error(result, "MNIST file not found", "t10k-labels-idx1-ubyte.gz")


def test_corrupt_data_file(mnist_copy: Path, tmp_path: Path) -> None:
    path = mnist_copy / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])  # truncated download
    result = run_cli("train", "mnist", "--data-dir", mnist_copy, "--out", tmp_path / "run")
    assert_one_line_error(result, "corrupt MNIST file", "train-images-idx3-ubyte.gz")


def test_images_of_the_wrong_shape(mnist_copy: Path, tmp_path: Path) -> None:
    (mnist_copy / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_images(10_000, 32)))
    result = run_cli("train", "mnist", "--data-dir", mnist_copy, "--out", tmp_path / "run")
    assert_one_line_error(result, "t10k-images-idx3-ubyte.gz", "expected 28x28")


def test_labels_file_in_place_of_images(mnist_copy: Path, tmp_path: Path) -> None:
    shutil.copy(mnist_copy / "t10k-labels-idx1-ubyte.gz", mnist_copy / "t10k-images-idx3-ubyte.gz")
    result = run_cli("train", "mnist", "--data-dir", mnist_copy, "--out", tmp_path / "run")
    assert_one_line_error(result, "not an IDX file of the expected kind")


def test_unknown_model_name(mnist_dir: Path, tmp_path: Path) -> None:
    assert_one_line_error(run_cli("summary", "lenet"), "unknown model 'lenet'", "mnist")
    result = run_cli("train", "lenet", "--data-dir", mnist_dir, "--out", tmp_path / "run")
    assert_one_line_error(result, "unknown model 'lenet'", "mnist")


def test_not_a_run_directory(mnist_dir: Path, tmp_path: Path) -> None:
    assert_one_line_error(run_cli("export", tmp_path / "nowhere"), "run directory not found")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("export", tmp_path / "empty"), "not a run directory", "config.json")
    result = run_cli("evaluate", tmp_path / "empty", "--data-dir", mnist_dir)
    assert_one_line_error(result, "not a run directory")
