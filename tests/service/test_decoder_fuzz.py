"""Fuzzing the bytes -> image -> tensor path of every uploaded file (`pipeline.prepare`: `decoding`, then
`preprocess.InputTransform`), with the service's default limits.

The seeds are real images encoded in memory: MNIST test digits and hymenoptera photos as PNG, JPEG, GIF,
WebP, TIFF, BMP and PPM in their usual modes, and the shapes attackers send: headers claiming huge sizes,
decompression bombs, deep palettes, 1x1 and 20000x1 images, a JPEG of hundreds of scans. Hypothesis
mutates them (bytes flipped, overwritten, inserted and deleted, header fields pushed to extremes,
truncation). Every case must end in a tensor of the model's input size or in one of the documented
`InputRejected` errors, within a time and a peak-memory bound measured per case. Run with `-s` to see the
cases run and their outcomes.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from exported.preprocessing import MNIST_PREPROCESSING
from service.errors import CorruptImage, EmptyImage, NotAnImage, TooManyPixels, UnsupportedImageMode
from service.pipeline import prepare
from service.preprocess import InputTransform
from service.settings import ServiceSettings
from tests.conftest import HYMENOPTERA_DIR
from tests.service import images

MAX_PIXELS: int = ServiceSettings.model_fields["max_image_pixels"].default
DOCUMENTED = (EmptyImage, NotAnImage, CorruptImage, UnsupportedImageMode, TooManyPixels)
TRANSFORMS = {
    "mnist": InputTransform(MNIST_PREPROCESSING, max_pixels=MAX_PIXELS),
    "photo": InputTransform(images.IMAGENET, max_pixels=MAX_PIXELS),
}
# Per case, on a shared 2-core machine. A legal 25-megapixel image decodes through a few full-size copies (the
# 25 kB transparent palette bomb below peaks at about 410 MiB); a thin strip whose resize multiplied its
# pixels went far past both (20000x1: 4 GiB, 5 s).
SECONDS_PER_CASE = 5.0
PEAK_BYTES_PER_CASE = 1 << 30
MUTATED_CASES = 500


@dataclass
class Outcome:
    result: str  # "tensor" or the InputRejected reason
    seconds: float
    peak_bytes: int  # peak RSS during the case above the RSS before it


def _status(field: str) -> int:
    """A /proc/self/status size, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def run_case(data: bytes, model: str) -> Outcome:
    """Decode and preprocess `data` as a worker does; the peak RSS is reset before (clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    start = time.perf_counter()
    try:
        pixels = prepare([data], TRANSFORMS[model], max_images=1, max_pixels=MAX_PIXELS)
    except DOCUMENTED as error:
        result = error.reason
    else:
        spec = TRANSFORMS[model].spec
        assert pixels.shape == (1, spec.channels, *spec.input_size) and pixels.dtype == np.uint8
        result = "tensor"
    return Outcome(result, time.perf_counter() - start, _status("VmHWM") - before)


def within_bounds(outcome: Outcome) -> bool:
    return outcome.seconds < SECONDS_PER_CASE and outcome.peak_bytes < PEAK_BYTES_PER_CASE


def describe(outcome: Outcome) -> str:
    return f"{outcome.result}, {outcome.seconds * 1000:.0f} ms, {outcome.peak_bytes >> 20} MiB"


# --- seeds ---------------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    return images.encode(image, fmt, **options)


def patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    """`data` with `values` packed (struct `fmt`) at `offset`."""
    patched = bytearray(data)
    struct.pack_into(fmt, patched, offset, *values)
    return bytes(patched)


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0) claims `width` x `height`; the scan data stays as small as it was."""
    sof = data.index(b"\xff\xc0")
    return patch(data, sof + 5, ">HH", height, width)


def gif_with_size(data: bytes, width: int, height: int) -> bytes:
    """A GIF whose screen and first image descriptor claim `width` x `height`."""
    descriptor = data.index(b"\x2c", 13)  # after the header and the screen descriptor (and its colour table)
    return patch(patch(data, 6, "<HH", width, height), descriptor + 5, "<HH", width, height)


def bmp_with_size(data: bytes, width: int, height: int) -> bytes:
    return patch(data, 18, "<ii", width, height)


def zlib_bomb_png(width: int, height: int, transparent_palette: bool = False) -> bytes:
    """A real PNG of `width` x `height` 8-bit pixels, all 0: a few kB that inflate to width x height bytes.
    Grey, or indices into a one-colour palette whose colour is transparent (composited at full size)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    colour_type = 3 if transparent_palette else 0
    chunks = [chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))]
    if transparent_palette:
        chunks += [chunk(b"PLTE", b"\xff\x00\x00"), chunk(b"tRNS", b"\x00")]
    chunks += [chunk(b"IDAT", zlib.compress(b"\x00" * ((width + 1) * height), 9)), chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def deep_palette_png(digit: np.ndarray) -> bytes:
    """A 256-colour palette with 256 transparency levels (every entry partly transparent)."""
    rgb = Image.fromarray(np.stack([digit, 255 - digit, digit // 2], axis=-1)).quantize(256)
    return encode(rgb, "PNG", transparency=bytes(range(256)))


def special_seeds(digit: np.ndarray, photo: Image.Image) -> dict[str, bytes]:
    """Hostile and unusual shapes, each a real encoding (patched headers keep their checksums valid)."""
    jpeg = encode(photo, "JPEG", quality=90)
    gif = encode(photo.convert("P"), "GIF")
    bmp = encode(photo, "BMP")
    return {
        "1x1 png": encode(Image.new("L", (1, 1), 255), "PNG"),
        "1x1 jpeg": encode(Image.new("RGB", (1, 1), (255, 0, 0)), "JPEG"),
        "20000x1 png": encode(Image.new("RGB", (20_000, 1), (90, 200, 30)), "PNG"),
        "380x1 png": encode(Image.new("RGB", (380, 1), (90, 200, 30)), "PNG"),  # resizes to 24.9 Mpx
        "1x20000 png": encode(Image.new("L", (1, 20_000), 200), "PNG"),
        "20000x1 gif": encode(Image.new("P", (20_000, 1), 3), "GIF"),
        "png claiming 65535x65535": images.bomb_png(65_535, 65_535),
        "png claiming 5000x5000": images.bomb_png(5_000, 5_000),
        "png bomb 5000x5000": zlib_bomb_png(5_000, 5_000),
        "png bomb 6000x6000": zlib_bomb_png(6_000, 6_000),
        "transparent palette png bomb 5000x5000": zlib_bomb_png(5_000, 5_000, transparent_palette=True),
        "jpeg claiming 65500x65500": jpeg_with_size(jpeg, 65_500, 65_500),
        "jpeg claiming 5000x5000": jpeg_with_size(jpeg, 5_000, 5_000),
        "jpeg claiming 20000x1": jpeg_with_size(jpeg, 20_000, 1),
        "progressive jpeg of 305 scans": images.many_scans_jpeg(2_000, 300),
        "gif claiming 65535x65535": gif_with_size(gif, 65_535, 65_535),
        "gif claiming 4000x4000": gif_with_size(gif, 4_000, 4_000),
        "bmp claiming 5000x-5000": bmp_with_size(bmp, 5_000, -5_000),
        "bmp claiming 2**31-1 wide": bmp_with_size(bmp, 2**31 - 1, 1),
        "deep palette png": deep_palette_png(digit),
        "1-bit png": encode(Image.fromarray(digit > 127), "PNG"),
        "32-bit integer tiff": encode(Image.fromarray(digit.astype(np.int32) * 1000), "TIFF"),
        "float tiff": encode(Image.fromarray(digit.astype(np.float32) / 255), "TIFF"),
        "lab tiff": encode(photo.convert("LAB"), "TIFF"),
        "animated gif": images.animated_gif(digit, 255 - digit),
    }


def ordinary_seeds(digit: np.ndarray, photo: Image.Image) -> dict[str, bytes]:
    """The digit and the photo in each format, in the modes files usually have."""
    gray, rgb = Image.fromarray(digit), photo
    return {
        "digit png": encode(gray, "PNG"),
        "digit jpeg": encode(gray, "JPEG", quality=90),
        "digit gif": encode(gray.convert("P"), "GIF"),
        "digit webp": encode(gray, "WEBP", lossless=True),
        "digit tiff": encode(gray, "TIFF", compression="tiff_deflate"),
        "digit bmp": encode(gray, "BMP"),
        "digit pgm": encode(gray, "PPM"),
        "digit 16-bit png": images.sixteen_bit_png(digit),
        "digit rgba png": images.rgba_png(digit),
        "digit la png": images.la_png(digit),
        "digit palette png with transparency": images.palette_png_with_transparency(digit),
        "digit cmyk jpeg": images.cmyk_jpeg(digit),
        "photo jpeg": encode(rgb, "JPEG", quality=85),
        "photo progressive jpeg": encode(rgb, "JPEG", quality=85, progressive=True),
        "photo png": encode(rgb, "PNG"),
        "photo webp": encode(rgb, "WEBP", quality=80),
        "photo tiff": encode(rgb, "TIFF", compression="jpeg"),
        "photo gif": encode(rgb.convert("P"), "GIF"),
        "photo ppm": encode(rgb, "PPM"),
    }


@pytest.fixture(scope="module")
def seeds(mnist_dir: Path) -> dict[str, bytes]:
    digit = images.mnist_test_digits(mnist_dir, 1)[0][0]
    path = sorted(HYMENOPTERA_DIR.glob("val/bees/*.jpg"))[0]
    with Image.open(path) as opened:
        photo = opened.convert("RGB")
    photo.thumbnail((160, 160))  # small seeds keep each case fast; the special seeds bring the sizes
    return {
        "photo as shot": path.read_bytes(),
        **ordinary_seeds(digit, photo),
        **special_seeds(digit, photo),
    }


# --- mutations -----------------------------------------------------------------------------------------

EXTREMES = st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF])
Mutation = Callable[[bytes], bytes]


def _at(data: bytes, where: float) -> int:
    return min(int(where * len(data)), max(len(data) - 1, 0))


def _flip(where: float, bit: int) -> Mutation:
    return lambda data: data and patch(data, _at(data, where), "B", data[_at(data, where)] ^ (1 << bit))


def _header(offset: int, value: int) -> Mutation:
    return lambda data: patch(data, offset, "B", value) if offset < len(data) else data


def _insert(where: float, chunk: bytes) -> Mutation:
    return lambda data: data[: _at(data, where)] + chunk + data[_at(data, where) :]


def _delete(where: float, size: int) -> Mutation:
    return lambda data: data[: _at(data, where)] + data[_at(data, where) + size :]


def _truncate(where: float) -> Mutation:
    return lambda data: data[: _at(data, where)]


def _repeat(where: float, size: int, times: int) -> Mutation:
    return lambda data: (
        data[: _at(data, where)] + data[_at(data, where) :][:size] * times + data[_at(data, where) :]
    )


FRACTION = st.floats(0.02, 1)  # mostly past the magic bytes, which pick the decoder
MUTATIONS = st.one_of(
    st.builds(_flip, FRACTION, st.integers(0, 7)),
    st.builds(_header, st.integers(8, 95), EXTREMES),  # after the magic bytes: sizes, depths, modes
    st.builds(_insert, FRACTION, st.binary(min_size=1, max_size=64)),
    st.builds(_delete, FRACTION, st.integers(1, 256)),
    st.builds(_truncate, st.floats(0.05, 1)),
    st.builds(_repeat, FRACTION, st.integers(1, 64), st.integers(2, 16)),
)


def test_special_seeds_end_documented_within_bounds(seeds: dict[str, bytes]) -> None:
    outcomes = {f"{name} ({model})": run_case(seeds[name], model) for name in seeds for model in TRANSFORMS}
    for name, outcome in outcomes.items():
        print(f"{name}: {describe(outcome)}")  # noqa: T201
    beyond = [
        f"{name}: {describe(outcome)}" for name, outcome in outcomes.items() if not within_bounds(outcome)
    ]
    assert not beyond, "\n".join(beyond)


def test_mutated_seeds_end_documented_within_bounds(seeds: dict[str, bytes]) -> None:
    outcomes: list[Outcome] = []

    @settings(
        max_examples=MUTATED_CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        name=st.sampled_from(sorted(seeds)),
        mutations=st.lists(MUTATIONS, min_size=1, max_size=4),
        model=st.sampled_from(sorted(TRANSFORMS)),
    )
    def mutated(name: str, mutations: list[Mutation], model: str) -> None:
        data = seeds[name]
        for mutation in mutations:
            data = mutation(data)
        outcome = run_case(data, model)
        outcomes.append(outcome)
        assert within_bounds(outcome), f"mutated {name} ({model}): {describe(outcome)}"

    mutated()
    results = Counter(outcome.result for outcome in outcomes)
    slowest = max(outcome.seconds for outcome in outcomes)
    largest = max(outcome.peak_bytes for outcome in outcomes)
    print(f"{len(outcomes)} mutated cases: {dict(results.most_common())}")  # noqa: T201
    print(f"slowest {slowest * 1000:.0f} ms, largest peak {largest >> 20} MiB above the RSS before")  # noqa: T201
    assert len(outcomes) >= MUTATED_CASES
