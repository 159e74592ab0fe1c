"""Real MNIST test digits as PNG files, read from the IDX files beside the project (never copied into it)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

_HEADER_BYTES = 16  # magic 2051, count, rows, columns: four big-endian int32


def mnist_test_pngs(mnist_dir: Path, count: int) -> list[bytes]:
    """The first `count` digits of the MNIST test split, each encoded as a 28x28 grayscale PNG."""
    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz", "rb") as idx:
        header = idx.read(_HEADER_BYTES)
        assert int.from_bytes(header[:4], "big") == 2051, "not an IDX image file"
        pixels = np.frombuffer(idx.read(count * 28 * 28), dtype=np.uint8).reshape(count, 28, 28)
    return [_png(image) for image in pixels]


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")  # uint8 (28, 28): grayscale, mode L
    return buffer.getvalue()
