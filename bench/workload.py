"""The benchmark's inputs: real MNIST test digits as PNGs, real JPEG photos, and multipart bodies of them."""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
MNIST_IMAGES = SHARED / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
PHOTO_DIR = SHARED / "data" / "hymenoptera" / "val"

BOUNDARY = "convnet-bench-boundary-7f3a9c"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
FIELD = "images"


class MissingData(RuntimeError):
    """A file of ../shared the benchmark needs is not there."""


def check_shared_data() -> None:
    """Raise MissingData naming every missing input before anything starts."""
    missing = [str(path) for path in (MNIST_IMAGES, PHOTO_DIR) if not path.exists()]
    if not missing and not photo_paths():
        missing.append(f"{PHOTO_DIR}/*/*.jpg")
    if missing:
        raise MissingData("the benchmark needs these files of ../shared: " + ", ".join(missing))


def mnist_pngs(count: int) -> list[bytes]:
    """The first `count` MNIST test digits, each encoded as a 28x28 greyscale PNG."""
    with gzip.open(MNIST_IMAGES, "rb") as idx:
        idx.read(16)
        pixels = np.frombuffer(idx.read(count * 28 * 28), dtype=np.uint8).reshape(count, 28, 28)
    pngs = []
    for digit in pixels:
        buffer = io.BytesIO()
        Image.fromarray(digit).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def photo_paths() -> list[Path]:
    return sorted(PHOTO_DIR.glob("*/*.jpg"))


def photo_jpegs() -> list[bytes]:
    """Every validation photo of the hymenoptera set, as the JPEG bytes on disk."""
    return [path.read_bytes() for path in photo_paths()]


def multipart_body(images: Sequence[bytes], filename: str, media_type: str) -> bytes:
    """A multipart/form-data body with each image as one file part of the field `images`."""
    parts = []
    for index, data in enumerate(images):
        header = (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="{FIELD}"; filename="{index}-{filename}"\r\n'
            f"Content-Type: {media_type}\r\n\r\n"
        )
        parts.append(header.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def write_bodies(directory: Path, images: Sequence[bytes], per_request: int, media_type: str) -> Path:
    """Group `images` into bodies of `per_request` files and write them as directory/00000.body, ...

    The load generator's Lua script cycles through them in order.
    """
    directory.mkdir(parents=True, exist_ok=True)
    filename = "image.png" if media_type == "image/png" else "image.jpg"
    for number, start in enumerate(range(0, len(images) - per_request + 1, per_request)):
        body = multipart_body(images[start : start + per_request], filename, media_type)
        (directory / f"{number:05d}.body").write_bytes(body)
    return directory
