"""Real image files for the service tests: MNIST digits from the IDX files, and hostile or unusual inputs."""

from __future__ import annotations

import gzip
import io
import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from exported import Preprocessing

# The classic ImageNet eval preprocessing: shorter side to 256, centre crop 224.
IMAGENET = Preprocessing(
    input_size=(224, 224), channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize_size=256
)

# A small photo model's preprocessing (untrained MobileNetV2 stand-ins in the service tests).
SMALL_PHOTO = Preprocessing(
    input_size=(64, 64), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), resize_size=72
)


def val_photos(hymenoptera_dir: Path, classes: Iterable[str], per_class: int) -> list[Path]:
    """The first `per_class` validation photos of each class folder, class by class, in name order."""
    return [
        path
        for folder in classes
        for path in sorted((hymenoptera_dir / "val" / folder).glob("*.jpg"))[:per_class]
    ]


def mnist_test_digits(mnist_dir: Path, count: int) -> tuple[list[np.ndarray], list[int]]:
    """The first `count` digits of the real MNIST test split (28x28 uint8) and their labels."""
    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz", "rb") as images:
        assert int.from_bytes(images.read(16)[:4], "big") == 2051
        pixels = np.frombuffer(images.read(count * 28 * 28), dtype=np.uint8).reshape(count, 28, 28)
    with gzip.open(mnist_dir / "t10k-labels-idx1-ubyte.gz", "rb") as labels:
        assert int.from_bytes(labels.read(8)[:4], "big") == 2049
        targets = list(labels.read(count))
    return list(pixels), targets


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png(pixels: np.ndarray) -> bytes:
    return encode(Image.fromarray(pixels))


def noise_jpeg(size: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)), "JPEG", quality=95)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels (a decompression bomb's header)."""
    data = bytearray(encode(Image.new("L", (1, 1))))
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts at byte 16
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC of "IHDR" + its 13 bytes
    return bytes(data)


def many_scans_jpeg(size: int, scans: int) -> bytes:
    """A progressive `size` x `size` grey JPEG whose first scan (the DC one) comes `scans` times: every scan
    is a pass over every block of the image, and libjpeg only warns of the bogus progression."""
    data = encode(Image.new("L", (size, size), 128), "JPEG", progressive=True)
    start = data.index(b"\xff\xda")
    header_end = start + 2 + struct.unpack(">H", data[start + 2 : start + 4])[0]
    match = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, header_end)  # the marker after its data
    assert match is not None
    end = match.start()
    return data[:end] + data[start:end] * (scans - 1) + data[end:]


def cmyk_jpeg(digit: np.ndarray) -> bytes:
    return encode(Image.fromarray(digit).convert("CMYK"), "JPEG", quality=95)


def sixteen_bit_png(digit: np.ndarray) -> bytes:
    """The digit as 16-bit grayscale (value x 257, so 255 -> 65535)."""
    return encode(Image.fromarray(digit.astype(np.uint16) * 257))


def palette_png_with_transparency(digit: np.ndarray) -> bytes:
    """The digit as a palette image whose black index is transparent."""
    palette = Image.fromarray(digit).convert("P")
    black = palette.getpixel((0, 0))
    return encode(palette, transparency=black)


def rgba_png(digit: np.ndarray) -> bytes:
    """The digit drawn as opaque white on a fully transparent background."""
    rgba = np.zeros((*digit.shape, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = digit
    return encode(Image.fromarray(rgba))


def la_png(digit: np.ndarray) -> bytes:
    return encode(Image.merge("LA", [Image.fromarray(digit), Image.fromarray(np.full_like(digit, 255))]))


def animated_gif(first: np.ndarray, second: np.ndarray) -> bytes:
    frames = [Image.fromarray(first).convert("P"), Image.fromarray(second).convert("P")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
