"""The user's photos: ImageFolder splits (`DIR/<split>/<class>/<image>`), checked, augmented, batched."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from exported.preprocessing import Preprocessing
from exported.transforms import ConvertMode
from training.errors import UserError

logger = logging.getLogger(__name__)

Transform = Callable[[Image.Image], torch.Tensor]


class PhotoAugment(BaseModel):
    """The training preset for photos: random resized crop, horizontal flip, colour jitter."""

    enabled: bool = True
    min_scale: float = Field(
        0.35, gt=0, le=1, description="smallest crop of the random resized crop, area fraction"
    )
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    jitter: float = Field(0.2, ge=0, le=1, description="brightness, contrast and saturation jitter")

    def transform(self, preprocessing: Preprocessing) -> Transform:
        """PIL image -> augmented, normalised tensor; the eval transform when disabled."""
        if not self.enabled:
            return preprocessing.eval_transform()
        return T.Compose(
            [
                ConvertMode(preprocessing.pil_mode),
                T.ToImage(),
                T.RandomResizedCrop(
                    list(preprocessing.input_size),
                    scale=(self.min_scale, 1.0),
                    interpolation=InterpolationMode(preprocessing.interpolation),
                    antialias=True,
                ),
                T.RandomHorizontalFlip(self.hflip),
                T.ColorJitter(brightness=self.jitter, contrast=self.jitter, saturation=self.jitter),
                T.ToDtype(torch.float32, scale=True),
                preprocessing.normalize(),
            ]
        )


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


def batches(
    dataset: Dataset,
    batch_size: int,
    *,
    workers: int,
    device: torch.device,
    seed: int | None = None,
) -> DataLoader:
    """Batches in a fixed order, or shuffled by `seed` (which also seeds the workers' augmentation)."""
    shuffle = seed is not None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )


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
