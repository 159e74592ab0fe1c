"""torchvision transforms built from a `Preprocessing` record."""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from exported.preprocessing import Preprocessing


def normalize(spec: Preprocessing) -> T.Normalize:
    return T.Normalize(spec.mean, spec.std)


def geometry(spec: Preprocessing) -> list[T.Transform]:
    interpolation = InterpolationMode(spec.interpolation)
    if spec.resize_size is None:
        return [T.Resize(list(spec.input_size), interpolation=interpolation, antialias=True)]
    return [
        T.Resize(spec.resize_size, interpolation=interpolation, antialias=True),
        T.CenterCrop(list(spec.input_size)),
    ]


def eval_transform(spec: Preprocessing) -> T.Compose:
    return T.Compose(
        [
            ConvertMode(spec.pil_mode),
            *geometry(spec),  # on the PIL image, as the service does it (`service.preprocess`)
            T.ToImage(),
            T.ToDtype(torch.float32, scale=True),
            normalize(spec),
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
