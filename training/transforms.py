"""Training presets: a batched random affine for small grey images, and the photo augmentation chain.

Evaluation never augments: its preprocessing is the exported `Preprocessing.eval_transform()`, the one
the service runs too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from exported.preprocessing import Preprocessing
from exported.transforms import ConvertMode


@dataclass(frozen=True)
class AffineAugment:
    """Random rotations, shifts, zoom and (where the data allows) horizontal flips: the Keras MNIST recipe."""

    rotation: float  # maximum rotation either way, degrees
    shift: float  # maximum shift, fraction of the side
    zoom: float  # maximum zoom in or out, fraction
    hflip: float = 0.0  # probability of a horizontal flip

    def sample(self, n: int, generator: torch.Generator) -> AffineDraw:
        """Draw the transforms of `n` images (the flips only when enabled, so that a preset without
        flips draws the same numbers as before flips existed)."""

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator) * 2 - 1

        angle = uniform(n) * math.radians(self.rotation)
        scale = 1 + uniform(n) * self.zoom
        shift = uniform(n, 2) * self.shift * 2  # the grid spans [-1, 1]: a side is 2 units
        mirror = (
            torch.where(torch.rand(n, generator=generator) < self.hflip, -1.0, 1.0) if self.hflip else None
        )
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # A flip mirrors the output's x axis: it negates the first column of the sampling matrix.
        x_cos, x_sin = (cos, sin) if mirror is None else (cos * mirror, sin * mirror)
        theta = torch.stack(
            [torch.stack([x_cos, -sin, shift[:, 0]], 1), torch.stack([x_sin, cos, shift[:, 1]], 1)], 1
        )
        return AffineDraw(theta)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Transform (N, C, H, W) float images in [0, 1]; the background fills with 0."""
        return self.sample(len(images), generator).apply(images)


@dataclass(frozen=True)
class AffineDraw:
    """Drawn affine transforms, one (2, 3) matrix per image, ready to apply to any subset of the batch."""

    theta: torch.Tensor

    def shard(self, index: torch.Tensor) -> AffineDraw:
        return AffineDraw(self.theta[index])

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        theta = self.theta.to(images.device, images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)


@dataclass(frozen=True)
class PhotoAugment:
    """The photo training preset: random resized crop, horizontal flip, colour jitter (torchvision's
    ClassificationPresetTrain, reduced to what a few hundred photos need)."""

    min_scale: float  # smallest crop of the random resized crop, area fraction
    hflip: float  # probability of a horizontal flip
    jitter: float  # brightness, contrast and saturation jitter

    def transform(self, preprocessing: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image -> augmented, normalised tensor at the model's input size."""
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


def resize(preprocessing: Preprocessing, image_size: int | None) -> Preprocessing:
    """The same recipe at another input side, the resize scaled alike (e.g. 256/224 -> 73/64)."""
    if image_size is None:
        return preprocessing
    ratio = (preprocessing.resize_size or preprocessing.input_size[0]) / preprocessing.input_size[0]
    return preprocessing.model_copy(
        update={"input_size": (image_size, image_size), "resize_size": round(image_size * ratio)}
    )
