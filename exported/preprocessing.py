"""Eval-time preprocessing: recorded with each model at export, rebuilt from it for evaluation and serving."""

from __future__ import annotations

from typing import Literal

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, model_validator
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T


class Preprocessing(BaseModel):
    """How an image becomes the model's input tensor.

    With `resize_size` set, the shorter side is resized to it and the centre `input_size` crop is
    kept (the ImageNet recipe); without it, the image is resized straight to `input_size` (MNIST).
    """

    model_config = ConfigDict(frozen=True)

    input_size: tuple[int, int]
    channels: Literal[1, 3]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_size: int | None = None
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"

    @model_validator(mode="after")
    def _one_mean_and_std_per_channel(self) -> Preprocessing:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need {self.channels} values each, got {self.mean} and {self.std}")
        return self

    @property
    def pil_mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    def normalize(self) -> T.Normalize:
        return T.Normalize(self.mean, self.std)

    def geometry(self) -> list[T.Transform]:
        """Resize (and crop) steps, shared by the eval transform and the training presets."""
        interpolation = InterpolationMode(self.interpolation)
        if self.resize_size is None:
            return [T.Resize(list(self.input_size), interpolation=interpolation, antialias=True)]
        return [
            T.Resize(self.resize_size, interpolation=interpolation, antialias=True),
            T.CenterCrop(list(self.input_size)),
        ]

    def eval_transform(self) -> T.Compose:
        """PIL image in any mode -> normalised float tensor of shape (C, H, W)."""
        return T.Compose(
            [
                ConvertMode(self.pil_mode),
                T.ToImage(),
                *self.geometry(),
                T.ToDtype(torch.float32, scale=True),
                self.normalize(),
            ]
        )


class ConvertMode:
    """Convert a PIL image to the model's colour mode ('L' or 'RGB')."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


MNIST_PREPROCESSING = Preprocessing(input_size=(28, 28), channels=1, mean=(0.1307,), std=(0.3081,))
