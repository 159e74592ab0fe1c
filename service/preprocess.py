"""A decoded image -> the model's input as a uint8 tensor; the batch is scaled and normalised in one step.

Together, `to_input` then `normalize` run exactly the card's eval transform (`Preprocessing.eval_transform`,
what training evaluated), with the same torchvision kernels in the same order; only the float
conversion and normalisation are moved from each image to the whole batch, so that images travel and
queue at a quarter of their float32 size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from exported import Preprocessing
from service.errors import TooManyPixels


class InputTransform:
    """PIL image in mode 'L' or 'RGB' -> uint8 tensor (C, H, W) of the model's input size."""

    def __init__(self, spec: Preprocessing, *, max_pixels: int | None = None) -> None:
        """`max_pixels`: the most pixels the resize may make (`check_size`); None for no limit."""
        self.spec = spec
        self.max_pixels = max_pixels
        self.interpolation = InterpolationMode(spec.interpolation)
        # The shorter side the resize needs from a decoded image (what a JPEG may be decoded down to).
        self.min_side = spec.resize_size or max(spec.input_size)

    def check_size(self, width: int, height: int) -> None:
        """`TooManyPixels` if resizing a `width` x `height` image would make more than `max_pixels` pixels.

        The resize takes the shorter side to `resize_size` and scales the longer one alike, so a thin
        strip grows before the crop: 20000x1 pixels would become 256 x 5,120,000 (3.9 GB of RGB).
        """
        if self.max_pixels is None or self.spec.resize_size is None:
            return
        size = self.spec.resize_size
        resized = size * int(size * max(width, height) / max(1, min(width, height)))
        if resized > self.max_pixels:
            raise TooManyPixels(
                f"a {width}x{height} image resized to {size} pixels on its shorter side would have "
                f"{resized:,} pixels, over the limit of {self.max_pixels:,}"
            )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        self.check_size(image.width, image.height)
        spec = self.spec
        if image.mode != spec.pil_mode:
            image = image.convert(spec.pil_mode)
        pixels = torch.from_numpy(np.array(image))  # a writable copy, (H, W) or (H, W, C)
        return self.resize(pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1))

    def resize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (C, H, W) in the model's colour mode, on any device -> the model's input size."""
        spec = self.spec
        if spec.resize_size is None:
            return F.resize(pixels, list(spec.input_size), interpolation=self.interpolation, antialias=True)
        pixels = F.resize(pixels, spec.resize_size, interpolation=self.interpolation, antialias=True)
        return F.center_crop(pixels, list(spec.input_size))


def normalize(batch: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """uint8 batch (N, C, H, W) -> float32 scaled to [0, 1] and normalised with the card's mean and std
    (a float32 batch is taken as already scaled to [0, 1])."""
    return F.normalize(F.to_dtype(batch, torch.float32, scale=True), list(spec.mean), list(spec.std))


def denormalize(pixels: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """Float32 pixels (N, C, H, W) normalised with the card's mean and std -> scaled to [0, 1], which
    `normalize` turns back into the same values: already-preprocessed inputs join the batches of images."""
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    return pixels * std + mean


def concat(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """One batch from requests' pixels, uint8 (0-255) or float32 scaled to [0, 1]; when both kinds
    meet, the uint8 parts are scaled to float32 too (`normalize` leaves float32 unscaled)."""
    if len({part.dtype for part in parts}) == 1:
        return torch.cat(list(parts))
    return torch.cat([F.to_dtype(part, torch.float32, scale=True) for part in parts])
