"""The steps of one classification as pure functions (litserve's decode -> batch -> predict -> unbatch).

A worker runs `prepare` (image files) or `prepare_pixels` (already-preprocessed pixels) per request, so
a bad input fails only its own request; the batcher runs the network once per batch, and `top_k` turns
each image's probabilities into the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from exported import Preprocessing
from service.decoding import decode_image, open_image
from service.errors import InputRejected, InvalidTensor, NoImages, TooManyImages
from service.preprocess import InputTransform, denormalize

JPEG_MAGIC = b"\xff\xd8\xff"


def prepare(
    files: Sequence[bytes],
    transform: InputTransform,
    *,
    max_images: int,
    max_pixels: int,
) -> torch.Tensor:
    """Decode and transform every image of one request into one uint8 tensor (k, C, H, W).

    Errors name the image's index.
    """
    if not files:
        raise NoImages("no images: send one or more image files in the field 'images'")
    _check_count(len(files), max_images)
    tensors = []
    for index, data in enumerate(files):
        try:
            tensors.append(transform(decode_image(data, max_pixels=max_pixels, min_side=transform.min_side)))
        except InputRejected as error:
            raise type(error)(f"images[{index}]: {error}") from None
    return torch.stack(tensors)


def prepare_jpegs_on(
    device: torch.device,
    files: Sequence[bytes],
    transform: InputTransform,
    *,
    max_images: int,
    max_pixels: int,
) -> torch.Tensor | None:
    """A request of JPEG files decoded together on `device` (nvJPEG on CUDA) and resized there.

    The headers are checked on the CPU first, like `prepare` does. None when the request is empty or
    over the image limit, a file is not a JPEG or one does not decode: `prepare` then handles the
    request on the CPU, with its exact errors.
    """
    if not files or len(files) > max_images or not all(data.startswith(JPEG_MAGIC) for data in files):
        return None
    for index, data in enumerate(files):
        try:
            transform.check_size(*open_image(data, max_pixels=max_pixels).size)
        except InputRejected as error:
            raise type(error)(f"images[{index}]: {error}") from None
    mode = ImageReadMode.GRAY if transform.spec.channels == 1 else ImageReadMode.RGB
    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in files]
    try:
        decoded = decode_jpeg(encoded, mode=mode, device=device, apply_exif_orientation=True)
    except RuntimeError:
        return None
    return torch.stack([transform.resize(pixels) for pixels in decoded])


def prepare_pixels(pixels: np.ndarray, spec: Preprocessing, *, max_images: int) -> torch.Tensor:
    """Already-preprocessed float32 pixels (k, C, H, W), normalised as the card says -> the batcher's
    float32 scaled to [0, 1] (`preprocess.denormalize`)."""
    expected = (spec.channels, *spec.input_size)
    if pixels.ndim != 4 or pixels.shape[1:] != expected:
        raise InvalidTensor(
            f"pixels of shape {list(pixels.shape)}: this model takes [N, {', '.join(map(str, expected))}]"
        )
    if not len(pixels):
        raise NoImages("no images: the pixels tensor holds 0 images")
    _check_count(len(pixels), max_images)
    if not np.isfinite(pixels).all():
        raise InvalidTensor("pixels must be finite numbers (no NaN or infinity)")
    return denormalize(torch.from_numpy(np.array(pixels, dtype=np.float32)), spec)  # a writable copy


def _check_count(count: int, max_images: int) -> None:
    if count > max_images:
        raise TooManyImages(f"{count} images in one request, over the limit of {max_images}")


def top_k(
    probabilities: torch.Tensor, labels: Sequence[str], k: int, *, name: str, version: str
) -> list[dict[str, Any]]:
    """Each image's top-k labels, highest score first, as the JSON answer (`schemas.Classification`)."""
    scores, indices = probabilities.topk(min(k, len(labels)), dim=1)
    return [
        {
            "model": name,
            "version": version,
            "predictions": [
                {"label": labels[i], "score": round(s, 6)}
                for s, i in zip(row_scores, row_indices, strict=True)
            ],
        }
        for row_scores, row_indices in zip(scores.tolist(), indices.tolist(), strict=True)
    ]
