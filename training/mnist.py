"""Real MNIST from the four standard IDX .gz files, held in memory as uint8 tensors."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.errors import UserError

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
LABELS = [str(digit) for digit in range(10)]
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


@dataclass(frozen=True)
class MnistSplit:
    images: torch.Tensor  # uint8, (N, 28, 28)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> MnistSplit:
        return MnistSplit(self.images[indices], self.labels[indices])


def load_split(data_dir: Path, split: str) -> MnistSplit:
    """Read `split` ("train" or "test") from `data_dir`; a UserError names any bad file."""
    images_name, labels_name = FILES[split]
    images = _read_idx(data_dir / images_name, _IMAGES_MAGIC)
    labels = _read_idx(data_dir / labels_name, _LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise UserError(f"{data_dir / images_name}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise UserError(f"{data_dir}: {len(images)} images but {len(labels)} labels in the {split} split")
    if labels.max(initial=0) > 9:
        raise UserError(f"{data_dir / labels_name}: labels must be digits 0-9")
    return MnistSplit(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def split_train_val(train: MnistSplit, val_size: int, seed: int) -> tuple[MnistSplit, MnistSplit]:
    """Carve a fixed validation set out of the training images (the same for a given seed)."""
    if not 0 < val_size < len(train):
        raise UserError(f"--val-size must be between 1 and {len(train) - 1}, got {val_size}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(order[val_size:]), train.subset(order[:val_size])


def data_sha256(data_dir: Path) -> dict[str, str]:
    return {name: _sha256(data_dir / name) for pair in FILES.values() for name in pair}


def download(cache_dir: Path) -> Path:
    """Fetch MNIST with torchvision into `cache_dir` (needs a network); return the folder of .gz files."""
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(str(cache_dir), train=train, download=True)
    return cache_dir / "MNIST" / "raw"


def _read_idx(path: Path, magic: int) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"MNIST file not found: {path} (expected the four IDX .gz files; or pass --download)")
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"corrupt MNIST file {path}: {error}") from None
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != magic:
        raise UserError(f"{path} is not an IDX file of the expected kind (magic number {magic})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise UserError(f"{path}: {len(raw) - header} data bytes, but the header says shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
