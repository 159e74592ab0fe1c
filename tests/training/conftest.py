"""Data for the training tests: generated IDX files and FakeData photos (no ../shared needed), and the
real photos and ImageNet weights beside the project for the tests that need them."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import FakeData

from tests.conftest import HYMENOPTERA_DIR, WEIGHTS_DIR
from training.data import IDX_FILES
from training.recipes import mnist
from training.rundir import RunDir

MOBILENET_FILE = WEIGHTS_DIR / "mobilenet_v2_imagenet1k_from_tflite_quant.pth"


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file's contents: magic (unsigned byte data, ndim), the sizes, the data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(folder: Path, train: int, test: int, classes: int = 10, seed: int = 0) -> Path:
    """A learnable 28x28 dataset in the MNIST file layout: class k is a bright square at the k-th place
    of a 4x3 grid, on noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        labels = rng.integers(0, classes, count)
        images = rng.integers(0, 60, (count, 28, 28))
        for image, label in zip(images, labels, strict=True):
            row, column = divmod(int(label), 4)
            image[2 + 8 * row : 8 + 8 * row, 2 + 6 * column : 8 + 6 * column] = 255
        images_name, labels_name = IDX_FILES[split]
        (folder / images_name).write_bytes(gzip.compress(idx_bytes(images), compresslevel=1))
        (folder / labels_name).write_bytes(gzip.compress(idx_bytes(labels), compresslevel=1))
    return folder


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,200 training and 200 test images of 10 classes, generated."""
    return write_idx_dataset(tmp_path_factory.mktemp("idx"), train=1200, test=200)


@pytest.fixture(scope="session")
def fake_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder dataset of torchvision FakeData: train/ and val/, 2 classes, 6 and 3 images each."""
    root = tmp_path_factory.mktemp("photos")
    for split, per_class, seed in (("train", 6, 0), ("val", 3, 1)):
        images = FakeData(2 * per_class, image_size=(3, 48, 40), num_classes=2, random_offset=seed * 100)
        counts = {0: 0, 1: 0}
        for index in range(len(images)):
            image, label = images[index]
            label = index % 2  # balanced classes
            folder = root / split / ("cats", "dogs")[label]
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{counts[label]}.png")
            counts[label] += 1
    return root


@pytest.fixture(scope="session")
def photos() -> Path:
    if not (HYMENOPTERA_DIR / "train" / "ants").is_dir():
        pytest.fail(
            f"the hymenoptera photos are expected at {HYMENOPTERA_DIR} (see the README's Tests section)"
        )
    return HYMENOPTERA_DIR


@pytest.fixture(scope="session")
def mobilenet_file() -> Path:
    if not MOBILENET_FILE.is_file():
        pytest.fail(f"the MobileNetV2 ImageNet weights are expected at {MOBILENET_FILE}")
    return MOBILENET_FILE


QUICK_MNIST = {"train_limit": 3000, "val_size": 1000, "batch_size": 64, "lr": 5e-3, "epochs": 2}


@pytest.fixture(scope="session")
def quick_mnist_run(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """Two epochs on 3,000 real MNIST training images, evaluated on the 10,000 test images."""
    config = mnist.Config(data_dir=str(mnist_dir), **QUICK_MNIST)
    return mnist.train(config, tmp_path_factory.mktemp("quick-mnist"))
