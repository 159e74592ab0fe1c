"""The steps of one classification, as pure functions (litserve's decode -> batch -> predict -> unbatch).

The front runs `prepare` per request (so a bad image fails only its own request) and `to_classification`
per image; the model service runs `forward` once per batch.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from PIL import Image
from torch import nn

from service.decoding import decode_image
from service.errors import InputRejected, InvalidBase64, NoImages, TooManyImages
from service.schemas import Classification, Prediction

Source = TypeVar("Source")
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,")


def read_upload(path: Path) -> bytes:
    """An uploaded file, as BentoML stored it for this request."""
    return path.read_bytes()


def read_base64(text: str) -> bytes:
    """Standard base64, optionally as a `data:image/...;base64,` URL; never fetches anything."""
    if text.startswith(("http://", "https://")):
        raise InvalidBase64("URLs are not fetched: send the image bytes base64-encoded")
    try:
        return base64.b64decode(_DATA_URL.sub("", text.strip(), count=1), validate=True)
    except ValueError as error:  # binascii.Error is one
        raise InvalidBase64(f"not valid base64: {error}") from None


def prepare(
    sources: Sequence[Source],
    read: Callable[[Source], bytes],
    transform: Callable[[Image.Image], torch.Tensor],
    *,
    max_images: int,
    max_pixels: int,
) -> list[torch.Tensor]:
    """Read, decode and preprocess every image of one request; errors name the image's index."""
    if not sources:
        raise NoImages("no images: send one or more image files in the field 'images'")
    if len(sources) > max_images:
        raise TooManyImages(f"{len(sources)} images in one request, over the limit of {max_images}")
    tensors = []
    for index, source in enumerate(sources):
        try:
            tensors.append(transform(decode_image(read(source), max_pixels=max_pixels)))
        except InputRejected as error:
            raise type(error)(f"images[{index}]: {error}") from None
    return tensors


def forward(model: nn.Module, pixels: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Stack the images into ONE batch and return class probabilities (N, classes) on the CPU.

    On CUDA the batch runs channels_last under float16 autocast; the softmax is taken in float32.
    """
    batch = torch.stack(list(pixels)).to(device, non_blocking=True)
    cuda = device.type == "cuda"
    if cuda:
        batch = batch.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
        logits = model(batch)
    return logits.float().softmax(dim=1).cpu()


def to_classification(
    probabilities: torch.Tensor, labels: Sequence[str], k: int, *, name: str, version: str
) -> Classification:
    """Top-k labels of one image, highest score first."""
    scores, indices = probabilities.topk(min(k, len(labels)))
    predictions = [
        Prediction(label=labels[i], score=round(s, 6))
        for s, i in zip(scores.tolist(), indices.tolist(), strict=True)
    ]
    return Classification(model=name, version=version, predictions=predictions)
