"""Eval-time preprocessing: recorded with each model at export, rebuilt from it for evaluation and serving."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, model_validator

if TYPE_CHECKING:
    from torchvision.transforms import v2 as T


class Preprocessing(BaseModel):
    """How an image becomes the model's input tensor.

    With `resize_size` set, the shorter side is resized to it and the centre `input_size` crop is
    kept (the ImageNet recipe); without it, the image is resized straight to `input_size` (MNIST).

    The transforms are built by `exported.transforms`, imported only when one is asked for: reading a
    model card (as the server's parent process does) needs neither torch nor torchvision.
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
        from exported import transforms

        return transforms.normalize(self)

    def geometry(self) -> list[T.Transform]:
        """Resize (and crop) steps, shared by the eval transform and the training presets."""
        from exported import transforms

        return transforms.geometry(self)

    def eval_transform(self) -> T.Compose:
        """PIL image in any mode -> normalised float tensor of shape (C, H, W)."""
        from exported import transforms

        return transforms.eval_transform(self)


MNIST_PREPROCESSING = Preprocessing(input_size=(28, 28), channels=1, mean=(0.1307,), std=(0.3081,))
