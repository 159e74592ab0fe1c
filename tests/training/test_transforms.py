"""The training presets: the batched affine (digits and flips) and the photo chain."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from training.data import IDX_PRESETS
from training.models import get_backbone
from training.transforms import AffineAugment, PhotoAugment, resize


def bar_images() -> torch.Tensor:
    images = torch.zeros(4, 1, 28, 28)
    images[:, :, 10:18, 12:16] = 1.0
    return images


def test_affine_moves_digits_a_little_without_losing_them() -> None:
    images = bar_images()
    out = IDX_PRESETS["mnist"].augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert not torch.equal(out, images)
    assert 0.6 < out.sum() / images.sum() < 1.5  # moved and turned a little, not lost


def test_a_flip_mirrors_the_image() -> None:
    images = torch.rand(3, 1, 28, 28)
    flipped = AffineAugment(rotation=0, shift=0, zoom=0, hflip=1.0)(images, torch.Generator())
    torch.testing.assert_close(flipped, images.flip(-1), atol=1e-5, rtol=0)
    kept = AffineAugment(rotation=0, shift=0, zoom=0, hflip=0.0)(images, torch.Generator())
    torch.testing.assert_close(kept, images, atol=1e-5, rtol=0)


def test_a_preset_without_flips_draws_only_the_affine_numbers() -> None:
    """So that the embedded model's recipe draws the same random numbers as when it was trained."""
    generator = torch.Generator().manual_seed(5)
    IDX_PRESETS["mnist"].augment.sample(8, generator)
    reference = torch.Generator().manual_seed(5)
    (
        torch.rand(8, generator=reference),
        torch.rand(8, generator=reference),
        torch.rand(8, 2, generator=reference),
    )
    assert torch.equal(generator.get_state(), reference.get_state())


def test_a_sample_applies_to_any_shard_of_its_batch() -> None:
    images = bar_images()
    draw = IDX_PRESETS["fashion-mnist"].augment.sample(4, torch.Generator().manual_seed(1))
    whole = draw.apply(images)
    torch.testing.assert_close(draw.shard(torch.tensor([2, 3])).apply(images[2:]), whole[2:])


def test_photo_preset(photos: Path) -> None:
    preprocessing = resize(get_backbone("resnet18").preprocessing(False), 64)
    image = Image.open(photos / "train" / "ants" / "ant photos.jpg")
    augment = PhotoAugment(min_scale=0.35, hflip=0.5, jitter=0.2).transform(preprocessing)
    first, second = augment(image), augment(image)
    assert first.shape == second.shape == (3, 64, 64)
    assert not torch.equal(first, second)


def test_resize_scales_the_recipe() -> None:
    small = resize(get_backbone("mobilenet_v2").preprocessing(False), 64)
    assert (small.input_size, small.resize_size) == ((64, 64), 73)
