"""The service's uint8 input path (PIL and numpy, no torch) equals the card's eval transform (what
training evaluated), exactly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from exported import Preprocessing
from exported.preprocessing import MNIST_PREPROCESSING
from service.decoding import decode_image
from service.errors import TooManyPixels
from service.preprocess import InputTransform, normalize
from tests.conftest import HYMENOPTERA_DIR
from tests.service import images


def served(spec: Preprocessing, image: Image.Image) -> torch.Tensor:
    pixels = InputTransform(spec)(image)
    assert pixels.dtype == np.uint8 and pixels.shape == (spec.channels, *spec.input_size)
    return torch.from_numpy(normalize(pixels[None], spec)[0])


def test_mnist_digits_of_any_size_and_mode(mnist_dir: Path) -> None:
    digits, _ = images.mnist_test_digits(mnist_dir, 20)
    evaluated = MNIST_PREPROCESSING.eval_transform()
    for pixels in digits:
        digit = Image.fromarray(pixels)
        for image in (digit, digit.resize((56, 41)), digit.convert("RGB")):
            assert torch.equal(served(MNIST_PREPROCESSING, image), evaluated(image))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_real_photos_with_resize_and_centre_crop(interpolation: str) -> None:
    photos = sorted(HYMENOPTERA_DIR.glob("val/*/*.jpg"))[::15]
    assert photos, f"real photos are expected in {HYMENOPTERA_DIR}"
    spec = images.IMAGENET.model_copy(update={"interpolation": interpolation})
    evaluated = spec.eval_transform()
    for path in photos:
        with Image.open(path) as photo:
            rgb = photo.convert("RGB")
        assert torch.equal(served(spec, rgb), evaluated(rgb)), path.name
        assert torch.equal(served(spec, rgb.convert("L")), evaluated(rgb.convert("L"))), path.name


def test_large_jpegs_are_decoded_at_a_reduced_scale_close_to_the_full_decode() -> None:
    """A 12-megapixel JPEG (a real photo, enlarged) is drafted at 1/4 scale, twice the resize size, and
    the model input is within a few levels of the full decode's; a 0.2-megapixel one is decoded whole."""
    with Image.open(sorted(HYMENOPTERA_DIR.glob("val/ants/*.jpg"))[3]) as photo:
        large = images.encode(photo.convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC), "JPEG")
    transform = InputTransform(images.IMAGENET)
    drafted = decode_image(large, max_pixels=25_000_000, min_side=transform.min_side)
    full = decode_image(large, max_pixels=25_000_000)
    assert drafted.size == (1008, 756) and full.size == (4032, 3024)
    difference = np.abs(transform(drafted).astype(float) - transform(full).astype(float))
    assert difference.mean() < 1 and difference.max() <= 8
    small = next(HYMENOPTERA_DIR.glob("val/bees/*.jpg")).read_bytes()
    assert decode_image(small, max_pixels=25_000_000, min_side=64).size == Image.open(io.BytesIO(small)).size


def test_a_strip_that_the_resize_would_blow_up_is_refused_before_resizing() -> None:
    """Shorter side to 256 turns a 20000x1 strip into 256 x 5,120,000 pixels (measured before the limit:
    12 s and 4.1 GB for one 100-byte PNG); the limit on decoded pixels bounds the resized ones too."""
    transform = InputTransform(images.IMAGENET, max_pixels=25_000_000)
    for size in ((20_000, 1), (1, 20_000), (400, 1)):
        with pytest.raises(TooManyPixels, match="on its shorter side"):
            transform(Image.new("RGB", size))
    assert transform(Image.new("RGB", (380, 1))).shape == (3, 224, 224)  # 256 x 97,280 pixels: within
    assert InputTransform(MNIST_PREPROCESSING, max_pixels=25_000_000)(Image.new("L", (20_000, 1))).shape == (
        1,
        28,
        28,
    )


def test_a_crop_larger_than_the_resized_photo_pads_it_as_torchvision_does() -> None:
    """An odd margin on both axes: the padding split and rounding of torchvision's `CenterCrop`."""
    spec = images.IMAGENET.model_copy(update={"resize_size": 215, "input_size": (230, 224)})
    evaluated = spec.eval_transform()
    for path in sorted(HYMENOPTERA_DIR.glob("val/bees/*.jpg"))[:3]:
        with Image.open(path) as photo:
            rgb = photo.convert("RGB")
        assert torch.equal(served(spec, rgb), evaluated(rgb)), path.name
