"""Datasets and batches: 28x28 IDX datasets in the MNIST file layout, ImageFolder photos, loaders.

IDX data (MNIST, Fashion-MNIST, KMNIST or your own) is held in memory as uint8 and batched without a
DataLoader: one epoch of MNIST is a few hundred tensor slices. Photos go through a DataLoader with
worker processes. With several processes, every batch is split across them (see `distributed`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

from training.distributed import ONE_PROCESS, World
from training.errors import UserError
from training.transforms import AffineAugment

logger = logging.getLogger(__name__)

# IDX datasets --------------------------------------------------------------------------------------

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


@dataclass(frozen=True)
class IdxPreset:
    """What a known IDX dataset is: its class names, and the augmentation its images allow."""

    labels: tuple[str, ...]
    augment: AffineAugment


IDX_PRESETS = {
    # Digits: small turns, shifts and zoom; never a flip (a flipped 2 is no digit).
    "mnist": IdxPreset(tuple("0123456789"), AffineAugment(rotation=10, shift=0.1, zoom=0.1, hflip=0)),
    # Clothes are photographed upright and are left-right symmetric: flips, hardly any rotation.
    "fashion-mnist": IdxPreset(
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        AffineAugment(rotation=5, shift=0.1, zoom=0.1, hflip=0.5),
    ),
    # Kuzushiji (cursive Japanese) characters: like digits, a flip makes another glyph.
    "kmnist": IdxPreset(
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        AffineAugment(rotation=10, shift=0.1, zoom=0.1, hflip=0),
    ),
}


def idx_preset(name: str) -> IdxPreset:
    try:
        return IDX_PRESETS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(IDX_PRESETS)}") from None


def read_labels_file(path: Path) -> list[str]:
    """Class names, one per line, in the order of the label values (blank lines are ignored)."""
    if not path.is_file():
        raise UserError(f"labels file not found: {path}")
    labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(labels) < 2:
        raise UserError(f"{path}: a classifier needs at least two class names, found {len(labels)}")
    return labels


@dataclass(frozen=True)
class IdxSplit:
    images: torch.Tensor  # uint8, (N, 28, 28)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> IdxSplit:
        return IdxSplit(self.images[indices], self.labels[indices])


def load_idx_split(data_dir: Path, split: str, num_classes: int = 10) -> IdxSplit:
    """Read `split` ("train" or "test") from `data_dir`; a UserError names any bad file."""
    images_name, labels_name = IDX_FILES[split]
    images = _read_idx(data_dir / images_name, _IMAGES_MAGIC)
    labels = _read_idx(data_dir / labels_name, _LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise UserError(f"{data_dir / images_name}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise UserError(f"{data_dir}: {len(images)} images but {len(labels)} labels in the {split} split")
    if labels.max(initial=0) >= num_classes:
        raise UserError(
            f"{data_dir / labels_name}: label {labels.max()} but only {num_classes} class names "
            f"(labels must be 0-{num_classes - 1})"
        )
    return IdxSplit(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def split_train_val(train: IdxSplit, val_size: int, seed: int) -> tuple[IdxSplit, IdxSplit]:
    """Carve a fixed validation set out of the training images (the same for a given seed)."""
    if not 0 < val_size < len(train):
        raise UserError(f"--val-size must be between 1 and {len(train) - 1}, got {val_size}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(order[val_size:]), train.subset(order[:val_size])


def idx_sha256(data_dir: Path) -> dict[str, str]:
    return {name: file_sha256(data_dir / name) for pair in IDX_FILES.values() for name in pair}


def download_mnist(cache_dir: Path) -> Path:
    """Fetch MNIST with torchvision into `cache_dir` (needs a network); return the folder of .gz files."""
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(str(cache_dir), train=train, download=True)
    return cache_dir / "MNIST" / "raw"


class IdxBatches:
    """Normalised batches from an in-memory IDX split: shuffled and augmented by `seed`, or in order.

    Every process draws the same order and augmentation for the whole (global) batch and keeps its
    shard, so N processes see exactly the images one process would. With several processes, a last
    batch smaller than the number of processes is left out (no process may have an empty shard).
    """

    def __init__(
        self,
        split: IdxSplit,
        batch_size: int,
        mean: float,
        std: float,
        *,
        seed: int | None = None,
        augment: AffineAugment | None = None,
        world: World = ONE_PROCESS,
    ) -> None:
        self.split, self.batch_size, self.seed, self.augment, self.world = (
            split,
            batch_size,
            seed,
            augment,
            world,
        )
        self.mean, self.std = mean, std
        self.num_images = len(split)

    def __len__(self) -> int:
        full, rest = divmod(self.num_images, self.batch_size)
        return full + (rest >= self.world.size if self.world.distributed else rest > 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed if self.seed is not None else 0)
        order = torch.randperm(self.num_images, generator=generator) if self.seed is not None else None
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = (
                torch.arange(start, min(start + self.batch_size, self.num_images))
                if order is None
                else order[start : start + self.batch_size]
            )
            augmentation = self.augment.sample(len(index), generator) if self.augment is not None else None
            mine = torch.tensor_split(torch.arange(len(index)), self.world.size)[self.world.rank]
            images = self.split.images[index[mine]].unsqueeze(1).float().div_(255)
            if augmentation is not None:
                images = augmentation.shard(mine).apply(images)
            yield (images - self.mean) / self.std, self.split.labels[index[mine]]


# ImageFolder photos -----------------------------------------------------------------------------

Transform = Callable[[Image.Image], torch.Tensor]


@dataclass(frozen=True)
class ImageSplit:
    """The images of one split: (path, class index) pairs; the classes are the folder names."""

    folder: Path
    classes: list[str]
    samples: list[tuple[str, int]]

    def dataset(self, transform: Transform) -> PhotoDataset:
        return PhotoDataset(self.samples, transform)

    def sha256(self) -> str:
        """One digest over the relative paths and contents of the images, for provenance."""
        digest = hashlib.sha256()
        for path, _ in sorted(self.samples):
            digest.update(Path(path).relative_to(self.folder).as_posix().encode())
            digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
        return digest.hexdigest()


class PhotoDataset(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, samples: list[tuple[str, int]], transform: Transform) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(default_loader(path)), label


def find_split(data_dir: Path, split: str, *, limit: int | None = None) -> ImageSplit:
    """Scan `data_dir/split` like torchvision's ImageFolder (which skips files that are not images,
    such as a .gif) and check it: a UserError names a missing folder, an empty class or a bad image.
    With `limit`, keep the first `limit` images of each class."""
    if not data_dir.is_dir():
        raise UserError(f"data directory not found: {data_dir}")
    folder = data_dir / split
    if not folder.is_dir():
        raise UserError(f"{data_dir} has no {split}/ folder (expected {split}/<class>/<images>)")
    try:
        found = ImageFolder(str(folder))
    except FileNotFoundError as error:  # no class folder, or a class folder without images
        raise UserError(f"{folder}: {error}") from None
    skipped = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.glob("*/*")
        if p.is_file() and not p.name.lower().endswith(IMG_EXTENSIONS)
    )
    if skipped:
        logger.info(
            "%s: skipped %d file(s) that are not images: %s", folder, len(skipped), ", ".join(skipped)
        )
    samples = found.samples if limit is None else _first_per_class(found.samples, limit)
    for path, _ in samples:
        _check_image(Path(path))
    return ImageSplit(folder, found.classes, samples)


def find_splits(data_dir: Path, *, limit: int | None = None) -> tuple[ImageSplit, ImageSplit]:
    """The train/ and val/ splits, which must have the same classes."""
    train, val = find_split(data_dir, "train", limit=limit), find_split(data_dir, "val", limit=limit)
    if train.classes != val.classes:
        raise UserError(
            f"train/ and val/ in {data_dir} have different classes: {train.classes} vs {val.classes}"
        )
    if len(train.classes) < 2:
        raise UserError(f"{train.folder} has one class ({train.classes[0]}); a classifier needs at least two")
    return train, val


def train_loader(
    dataset: Dataset, batch_size: int, seed: int, *, workers: int, device: torch.device, world: World
) -> DataLoader:
    """Batches shuffled by `seed` (which also seeds the workers' augmentation); with several processes,
    each takes its share through a DistributedSampler."""
    generator = torch.Generator().manual_seed(seed)
    sampler = DistributedSampler(dataset, world.size, world.rank, seed=seed) if world.distributed else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )


def eval_loader(
    dataset: Dataset, batch_size: int, *, workers: int, device: torch.device, world: World = ONE_PROCESS
) -> DataLoader:
    """Batches in order; with several processes, each takes every size-th image (none twice)."""
    shard = Subset(dataset, range(world.rank, len(dataset), world.size)) if world.distributed else dataset
    return DataLoader(shard, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")


def _first_per_class(samples: list[tuple[str, int]], limit: int) -> list[tuple[str, int]]:
    counts: Counter[int] = Counter()
    kept = []
    for path, label in samples:
        if counts[label] < limit:
            kept.append((path, label))
            counts[label] += 1
    return kept


def _check_image(path: Path) -> None:
    """Open reads only the header: a file that Pillow cannot identify fails here, not mid-training."""
    try:
        with Image.open(path):
            pass
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"{path} is not a readable image: {error}") from None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"IDX file not found: {path} (expected the four IDX .gz files of the MNIST layout)")
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"corrupt IDX file {path}: {error}") from None
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != magic:
        raise UserError(f"{path} is not an IDX file of the expected kind (magic number {magic})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(shape):
        raise UserError(f"{path}: {len(raw) - header} data bytes, but the header says shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
