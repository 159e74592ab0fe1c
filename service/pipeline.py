"""The steps of one classification as pure functions (litserve's decode -> batch -> predict -> unbatch).

A worker runs `prepare` (image files) or `prepare_pixels` (already-preprocessed pixels) per request, so
a bad input fails only its own request; the batcher runs the network once per batch, and `top_k` turns
each image's probabilities into the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from exported import Preprocessing
from service.decoding import decode_image
from service.errors import InputRejected, InvalidTensor, NoImages, TooManyImages
from service.preprocess import InputTransform, denormalize


def prepare(
    files: Sequence[bytes],
    transform: InputTransform,
    *,
    max_images: int,
    max_pixels: int,
) -> np.ndarray:
    """Decode and transform every image of one request into one uint8 array (k, C, H, W).

    Errors name the image's index.
    """
    if not files:
        raise NoImages("no images: send one or more image files in the field 'images'")
    check_count(len(files), max_images)
    images = []
    for index, data in enumerate(files):
        try:
            images.append(transform(decode_image(data, max_pixels=max_pixels, min_side=transform.min_side)))
        except InputRejected as error:
            raise type(error)(f"images[{index}]: {error}") from None
    return np.stack(images)


def prepare_pixels(pixels: np.ndarray, spec: Preprocessing, *, max_images: int) -> np.ndarray:
    """Already-preprocessed float32 pixels (k, C, H, W), normalised as the card says -> the batcher's
    float32 scaled to [0, 1] (`preprocess.denormalize`)."""
    expected = (spec.channels, *spec.input_size)
    if pixels.ndim != 4 or pixels.shape[1:] != expected:
        raise InvalidTensor(
            f"pixels of shape {list(pixels.shape)}: this model takes [N, {', '.join(map(str, expected))}]"
        )
    if not len(pixels):
        raise NoImages("no images: the pixels tensor holds 0 images")
    check_count(len(pixels), max_images)
    if not np.isfinite(pixels).all():
        raise InvalidTensor("pixels must be finite numbers (no NaN or infinity)")
    return denormalize(pixels.astype(np.float32, copy=False), spec)


def check_count(count: int, max_images: int) -> None:
    if count > max_images:
        raise TooManyImages(f"{count} images in one request, over the limit of {max_images}")


def top_k(
    probabilities: np.ndarray, labels: Sequence[str], k: int, *, name: str, version: str
) -> list[dict[str, Any]]:
    """Each image's top-k labels, highest score first (ties: the lower class index first), as the JSON
    answer (`schemas.Classification`)."""
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, : min(k, len(labels))]
    return [
        {
            "model": name,
            "version": version,
            "predictions": [{"label": labels[i], "score": round(float(row[i]), 6)} for i in indices],
        }
        for row, indices in zip(probabilities, best.tolist(), strict=True)
    ]
