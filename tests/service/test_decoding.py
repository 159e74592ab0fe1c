"""Decoding and validation of untrusted image bytes, without a server."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageOps

from service.decoding import decode_image
from service.errors import CorruptImage, EmptyImage, InputRejected, NotAnImage, TooManyPixels
from tests.conftest import HYMENOPTERA_DIR
from tests.service import images

LIMIT = 1_000_000


@pytest.fixture(scope="module")
def digit(mnist_dir: Path) -> np.ndarray:
    pixels, _ = images.mnist_test_digits(mnist_dir, 1)
    return pixels[0]


def test_png_digit_decodes_to_its_exact_pixels(digit: np.ndarray) -> None:
    decoded = decode_image(images.png(digit), max_pixels=LIMIT)
    assert decoded.mode == "L"
    assert np.array_equal(np.asarray(decoded), digit)


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"", EmptyImage, "empty file"),
        (b"hello, I am text and not a picture", NotAnImage, "not an image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", NotAnImage, "not an image"),  # never handed to Ghostscript
    ],
)
def test_non_images_are_named(data: bytes, error: type[InputRejected], words: str) -> None:
    with pytest.raises(error, match=words):
        decode_image(data, max_pixels=LIMIT)


def test_truncated_png_is_corrupt(digit: np.ndarray) -> None:
    data = images.png(digit)
    with pytest.raises(CorruptImage, match="PNG"):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_truncated_jpeg_is_corrupt() -> None:
    data = images.noise_jpeg()
    with pytest.raises(CorruptImage, match="JPEG"):
        decode_image(data[: len(data) * 2 // 3], max_pixels=LIMIT)


def test_png_with_damaged_pixel_data_is_corrupt(digit: np.ndarray) -> None:
    data = bytearray(images.png(digit))
    start = data.index(b"IDAT") + 8
    data[start : start + 16] = bytes(16)
    with pytest.raises(CorruptImage):
        decode_image(bytes(data), max_pixels=LIMIT)


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    with pytest.raises(TooManyPixels, match="2,000x1,000|2000x1000"):
        decode_image(images.bomb_png(2000, 1000), max_pixels=LIMIT)


def test_decompression_bomb_beyond_pils_own_guard_is_refused() -> None:
    assert 100_000 * 100_000 > 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(TooManyPixels):
        decode_image(images.bomb_png(100_000, 100_000), max_pixels=LIMIT)


def test_cmyk_becomes_rgb(digit: np.ndarray) -> None:
    decoded = decode_image(images.cmyk_jpeg(digit), max_pixels=LIMIT)
    assert decoded.mode == "RGB"
    assert np.abs(np.asarray(decoded.convert("L"), dtype=int) - digit).mean() < 8


def test_sixteen_bit_grayscale_is_scaled_not_clipped(digit: np.ndarray) -> None:
    decoded = decode_image(images.sixteen_bit_png(digit), max_pixels=LIMIT)
    assert decoded.mode == "L"
    assert np.array_equal(np.asarray(decoded), digit)


@pytest.mark.parametrize("make", [images.palette_png_with_transparency, images.rgba_png, images.la_png])
def test_transparency_is_composited_onto_black(digit: np.ndarray, make) -> None:
    decoded = decode_image(make(digit), max_pixels=LIMIT)
    assert decoded.mode == "RGB"
    gray = np.asarray(decoded.convert("L"), dtype=int)
    assert gray[digit == 0].max() == 0  # transparent or black stays black
    assert np.abs(gray - digit).mean() < 4


def test_animated_gif_uses_its_first_frame(digit: np.ndarray) -> None:
    decoded = decode_image(images.animated_gif(digit, 255 - digit), max_pixels=LIMIT)
    assert np.abs(np.asarray(decoded.convert("L"), dtype=int) - digit).mean() < 4


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding() -> None:
    """600 copies of a 5000x5000 JPEG's first scan (29 MB) took 5.0 s to decode; one real photo has 10."""
    started = time.perf_counter()
    with pytest.raises(CorruptImage, match="605 scans"):
        decode_image(images.many_scans_jpeg(5000, 600), max_pixels=25_000_000)
    assert time.perf_counter() - started < 1
    assert decode_image(images.many_scans_jpeg(64, 90), max_pixels=LIMIT).size == (64, 64)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_photo_is_turned_as_its_exif_orientation_says(orientation: int) -> None:
    """A camera's portrait photo (orientation 6: stored on its side) reaches the model upright."""
    with Image.open(next(HYMENOPTERA_DIR.glob("val/bees/*.jpg"))) as photo:
        stored = photo.convert("RGB")
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif)
    decoded = decode_image(buffer.getvalue(), max_pixels=10**8)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue())))
    assert decoded.size == upright.size == (stored.size if orientation in (1, 3) else stored.size[::-1])
    assert np.array_equal(np.asarray(decoded), np.asarray(upright.convert("RGB")))
