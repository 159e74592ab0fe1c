"""Grad-CAM, feature maps and Sobel edges on the embedded trained MNIST ConvNet and real MNIST digits;
the conv2d operator they use against the convolution theorem (an FFT-based convolution)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from service.catalog import build_catalog
from service.errors import UnknownLayer, UnknownTarget
from service.explained_model import ExplainedModel
from service.feature_maps import LUMA, SOBEL_X, feature_maps, sobel
from service.gradcam import gradcam
from service.preprocess import normalize
from service.settings import ModelSettings, ServiceSettings
from tests.service import images
from tests.support.server import EMBEDDED_MNIST
from training.export import export_run

DIGITS = 30


@pytest.fixture(scope="module")
def mnist() -> ExplainedModel:
    settings = ServiceSettings(
        models={"mnist": ModelSettings(tag=str(export_run(EMBEDDED_MNIST)), required=True)}
    )
    return ExplainedModel(build_catalog(settings)["mnist"], settings, "cpu")


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> tuple[list[np.ndarray], list[int]]:
    return images.mnist_test_digits(mnist_dir, DIGITS)


def input_of(model: ExplainedModel, digit: np.ndarray) -> torch.Tensor:
    """The network's normalised input (1, 1, 28, 28) for a digit."""
    return torch.from_numpy(normalize(model.transform(Image.fromarray(digit))[None], model.spec))


def png_of(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url.removeprefix(prefix))))


def test_gradcam_heat_lies_on_the_strokes_of_real_digits(
    mnist: ExplainedModel, digits: tuple[list[np.ndarray], list[int]]
) -> None:
    """Measured on the first 1,000 test digits: 66% of the heat lies within 3 px of a stroke, an area of
    55% of the image (on the first 30: 68% against 55%, every digit above its area)."""
    layer = mnist.model.get_submodule(mnist.gradcam_layer)
    near_mass, near_area = [], []
    for digit, label in zip(*digits, strict=True):
        heat = gradcam(mnist.model, layer, input_of(mnist, digit), label)
        assert heat.shape == (28, 28)
        assert heat.min() >= 0 and heat.max() == 1 and heat.std() > 0.05
        ink = torch.from_numpy(digit > 0).float()[None, None]
        near = F.max_pool2d(ink, 7, stride=1, padding=3)[0, 0] > 0  # within 3 px of a stroke
        near_mass.append(float(heat[near].sum() / heat.sum()))
        near_area.append(float(near.float().mean()))
    assert np.mean(near_mass) > 0.6
    assert np.mean(near_mass) - np.mean(near_area) > 0.08


def test_explain_answers_the_top_class_and_any_target(
    mnist: ExplainedModel, digits: tuple[list[np.ndarray], list[int]]
) -> None:
    digit, label = digits[0][0], digits[1][0]
    answer = mnist.explain(images.png(digit), None)
    assert answer["target"]["index"] == label and answer["target"]["label"] == str(label)
    assert answer["predictions"][0] == {"label": str(label), "score": answer["target"]["score"]}
    assert answer["layer"] == "7" and answer["model"] == "mnist-convnet"
    heatmap = answer["heatmap"]
    assert (heatmap["width"], heatmap["height"]) == (28, 28)
    values = np.array(heatmap["values"])
    assert values.shape == (28, 28) and values.min() >= 0 and values.max() == 1
    overlay = png_of(answer["overlay"])
    assert overlay.size == (28, 28) and overlay.mode == "RGB"

    other = (label + 1) % 10
    by_index = mnist.explain(images.png(digit), str(other))
    assert by_index["target"]["index"] == other and by_index["target"]["score"] < answer["target"]["score"]
    assert by_index["predictions"] == answer["predictions"]
    with pytest.raises(UnknownTarget, match="from 0 to 9"):
        mnist.explain(images.png(digit), "10")
    with pytest.raises(UnknownTarget):
        mnist.explain(images.png(digit), "seven")


def test_feature_maps_are_the_convolution_outputs(
    mnist: ExplainedModel, digits: tuple[list[np.ndarray], list[int]]
) -> None:
    assert mnist.conv_layers == ["0", "3", "6"]
    batch = input_of(mnist, digits[0][0])
    first = mnist.model.get_submodule("0")
    maps = feature_maps(mnist.model, first, batch)
    torch.testing.assert_close(maps, F.conv2d(batch, first.weight, first.bias)[0])  # before its ReLU
    answers = {layer: mnist.features(images.png(digits[0][0]), layer) for layer in ("0", "3", "6")}
    assert [(a["channels"], a["size"]) for a in answers.values()] == [
        (32, [26, 26]),
        (64, [11, 11]),
        (64, [3, 3]),
    ]
    assert mnist.features(images.png(digits[0][0]), None)["layer"] == "0"
    # 32 maps of 26 px in a 6 x 6 grid, 64 maps in 8 x 8, 1 px apart; Sobel x, y, magnitude side by side
    assert png_of(answers["0"]["maps"]).size == (6 * 27 - 1, 6 * 27 - 1)
    assert png_of(answers["3"]["maps"]).size == (8 * 12 - 1, 8 * 12 - 1)
    assert png_of(answers["0"]["sobel"]).size == (3 * 29 - 1, 28)
    with pytest.raises(UnknownLayer, match="0, 3, 6"):
        mnist.features(images.png(digits[0][0]), "7")


def test_sobel_finds_the_edges_of_a_step() -> None:
    """A vertical step from black to white: x is positive along it, y is zero, the magnitude is |x|."""
    step = torch.zeros(1, 1, 8, 8)
    step[..., 4:] = 1.0
    dx, dy, magnitude = sobel(step)
    assert (
        torch.equal(dx[:, 3:5], torch.full((8, 2), 4.0)) and dx[:, :3].eq(0).all() and dx[:, 5:].eq(0).all()
    )
    assert dy.eq(0).all() and torch.equal(magnitude, dx.abs())
    colour = sobel(step.expand(1, 3, 8, 8))  # the same grey in RGB: the luma weights sum to 1
    torch.testing.assert_close(colour, torch.stack([dx, dy, magnitude]))


def fft_convolve(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The full linear 2-D convolution of (H, W) with (h, w), by the convolution theorem: both zero-padded
    to (H + h - 1, W + w - 1) so that the circular convolution of the DFT is the linear one."""
    size = (image.shape[0] + kernel.shape[0] - 1, image.shape[1] + kernel.shape[1] - 1)
    return torch.fft.irfft2(torch.fft.rfft2(image, s=size) * torch.fft.rfft2(kernel, s=size), s=size)


def conv2d_by_fft(pixels: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """What F.conv2d(pixels (1, C, H, W), weight (O, C, h, w), padding) computes, through FFTs: conv2d is a
    cross-correlation, i.e. a convolution with the kernel flipped; its 'valid' part is the centre of the
    full convolution."""
    padded = F.pad(pixels, (padding,) * 4)[0].double()
    kernel_h, kernel_w = weight.shape[-2:]
    height, width = padded.shape[-2] - kernel_h + 1, padded.shape[-1] - kernel_w + 1
    outputs = []
    for filters in weight.double():
        full = sum(
            fft_convolve(channel, kernel.flip(0, 1)) for channel, kernel in zip(padded, filters, strict=True)
        )
        outputs.append(full[kernel_h - 1 : kernel_h - 1 + height, kernel_w - 1 : kernel_w - 1 + width])
    return torch.stack(outputs)[None]


@pytest.mark.parametrize(
    ("channels", "size", "kernel", "padding"), [(1, (28, 28), 3, 1), (3, (17, 23), 5, 0), (2, (9, 12), 4, 2)]
)
def test_conv2d_is_the_convolution_of_the_convolution_theorem(
    channels: int, size: tuple[int, int], kernel: int, padding: int
) -> None:
    generator = torch.Generator().manual_seed(channels)
    pixels = torch.randn(1, channels, *size, generator=generator)
    weight = torch.randn(4, channels, kernel, kernel, generator=generator)
    expected = conv2d_by_fft(pixels, weight, padding)
    torch.testing.assert_close(
        F.conv2d(pixels, weight, padding=padding).double(), expected, atol=1e-4, rtol=1e-4
    )


def test_sobel_is_the_convolution_of_the_convolution_theorem(
    digits: tuple[list[np.ndarray], list[int]],
) -> None:
    """On a real digit and on random RGB pixels: sobel() against the FFT convolution of the same grey,
    edge-padded image with the Sobel kernels flipped."""
    digit = torch.tensor(digits[0][0], dtype=torch.float32)[None, None] / 255
    rgb = torch.rand(1, 3, 20, 30, generator=torch.Generator().manual_seed(0))
    for pixels in (digit, rgb):
        grey = torch.tensor(LUMA if pixels.shape[1] == 3 else (1.0,)).view(1, -1, 1, 1)
        padded = F.pad((pixels * grey).sum(dim=1, keepdim=True), (1, 1, 1, 1), mode="replicate")
        dx, dy = conv2d_by_fft(padded, torch.stack([SOBEL_X, SOBEL_X.T])[:, None], padding=0)[0]
        expected = torch.stack([dx, dy, torch.hypot(dx, dy)])
        torch.testing.assert_close(sobel(pixels).double(), expected, atol=1e-5, rtol=1e-5)
