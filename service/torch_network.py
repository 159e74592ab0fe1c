"""The PyTorch side of a worker: the forward pass on the CPU or a GPU, and a CUDA worker's input path.

Imported only by a worker that runs a model in PyTorch (the torch backend, or any model on CUDA) or
explains one: a CPU worker serving ONNX graphs does without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from exported import Preprocessing
from service.decoding import open_image
from service.errors import InputRejected
from service.pipeline import prepare
from service.preprocess import InputTransform

JPEG_MAGIC = b"\xff\xd8\xff"


def normalize_tensor(batch: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """`preprocess.normalize` on a tensor, on its device: uint8 -> float32 in [0, 1], normalised with
    the card's mean and std (a float32 batch is taken as already scaled to [0, 1])."""
    return F.normalize(F.to_dtype(batch, torch.float32, scale=True), list(spec.mean), list(spec.std))


class TorchNetwork:
    """A forward pass in PyTorch: uint8 batch (N, C, H, W) -> class probabilities (N, classes) on the CPU.

    The batch is normalised on the device and runs in channels_last (faster for convolutions on CPU
    and GPU alike); on CUDA it runs under float16 autocast, with the softmax in float32. (A CUDA
    worker's requests arrive on the GPU already: see `DeviceInput`.)
    """

    def __init__(self, model: nn.Module, spec: Preprocessing, device: str, threads: int) -> None:
        torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.spec = spec
        self.cuda = self.device.type == "cuda"

    def __call__(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            batch = torch.as_tensor(pixels).to(self.device)
            batch = normalize_tensor(batch, self.spec).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.cuda):
                logits = self.model(batch)
            return logits.float().softmax(dim=1).cpu().numpy()


class DeviceInput:
    """A CUDA worker's input path: a request of JPEG files is decoded on the GPU with nvJPEG (and resized
    there); anything else is decoded on the CPU and copied over from pinned memory without blocking."""

    def __init__(self, transform: InputTransform, device: str) -> None:
        self.transform = transform
        self.device = torch.device(device)
        spec = transform.spec
        self.mode = ImageReadMode.GRAY if spec.channels == 1 else ImageReadMode.RGB
        self.interpolation = InterpolationMode(spec.interpolation)

    def __call__(self, files: Sequence[bytes], *, max_images: int, max_pixels: int) -> torch.Tensor:
        pixels = self.decode_jpegs(files, max_images=max_images, max_pixels=max_pixels)
        if pixels is not None:
            return pixels
        on_cpu = prepare(files, self.transform, max_images=max_images, max_pixels=max_pixels)
        return torch.from_numpy(on_cpu).pin_memory().to(self.device, non_blocking=True)

    def concat(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """`preprocess.concat` on the device."""
        if len({part.dtype for part in parts}) == 1:
            return torch.cat(list(parts))
        return torch.cat([F.to_dtype(part, torch.float32, scale=True) for part in parts])

    def decode_jpegs(
        self, files: Sequence[bytes], *, max_images: int, max_pixels: int
    ) -> torch.Tensor | None:
        """A request of JPEG files decoded together on the device and resized there.

        The headers are checked on the CPU first, like `prepare` does. None when the request is empty or
        over the image limit, a file is not a JPEG or one does not decode: `prepare` then handles the
        request on the CPU, with its exact errors. The resize is torchvision's on tensors, within one
        level of 255 of the CPU path's PIL resize.
        """
        if not files or len(files) > max_images or not all(data.startswith(JPEG_MAGIC) for data in files):
            return None
        for index, data in enumerate(files):
            try:
                self.transform.check_size(*open_image(data, max_pixels=max_pixels).size)
            except InputRejected as error:
                raise type(error)(f"images[{index}]: {error}") from None
        encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in files]
        try:
            decoded = decode_jpeg(encoded, mode=self.mode, device=self.device, apply_exif_orientation=True)
        except RuntimeError:
            return None
        return torch.stack([self._resize(pixels) for pixels in decoded])

    def _resize(self, pixels: torch.Tensor) -> torch.Tensor:
        spec = self.transform.spec
        if spec.resize_size is None:
            return F.resize(pixels, list(spec.input_size), interpolation=self.interpolation, antialias=True)
        pixels = F.resize(pixels, spec.resize_size, interpolation=self.interpolation, antialias=True)
        return F.center_crop(pixels, list(spec.input_size))
