"""The per-request and per-batch steps, without a server."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import torch
from torch import nn

from exported.preprocessing import MNIST_PREPROCESSING
from service.errors import InvalidBase64, NoImages, NotAnImage, TooManyImages
from service.pipeline import forward, prepare, read_base64, to_classification
from service.settings import ServiceSettings, available_cores
from tests.service import images


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> list[bytes]:
    pixels, _ = images.mnist_test_digits(mnist_dir, 3)
    return [images.png(p) for p in pixels]


def _prepare(sources: list[bytes], max_images: int = 4) -> list[torch.Tensor]:
    transform = MNIST_PREPROCESSING.eval_transform()
    return prepare(sources, bytes, transform, max_images=max_images, max_pixels=10_000)


def test_prepare_keeps_order_and_shape(digits: list[bytes]) -> None:
    tensors = _prepare(digits)
    assert [t.shape for t in tensors] == [(1, 28, 28)] * 3
    assert torch.equal(tensors[2], _prepare([digits[2]])[0])


def test_prepare_refuses_zero_and_too_many_images(digits: list[bytes]) -> None:
    with pytest.raises(NoImages, match="no images"):
        _prepare([])
    with pytest.raises(TooManyImages, match="3 images in one request, over the limit of 2"):
        _prepare(digits, max_images=2)


def test_errors_name_the_bad_image(digits: list[bytes]) -> None:
    with pytest.raises(NotAnImage, match=r"^images\[1\]: not an image"):
        _prepare([digits[0], b"plain text", digits[2]])


def test_base64_plain_and_data_url(digits: list[bytes]) -> None:
    encoded = base64.b64encode(digits[0]).decode()
    assert read_base64(encoded) == digits[0]
    assert read_base64(f"data:image/png;base64,{encoded}") == digits[0]


@pytest.mark.parametrize(
    ("text", "words"),
    [("not base64!", "not valid base64"), ("https://example.com/7.png", "URLs are not fetched")],
)
def test_base64_errors(text: str, words: str) -> None:
    with pytest.raises(InvalidBase64, match=words):
        read_base64(text)


class _CountingIdentity(nn.Module):
    """Returns its flattened input as logits and records the batch sizes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(x.shape[0])
        return x.flatten(1)


def test_forward_runs_one_pass_and_returns_probabilities_in_order() -> None:
    model = _CountingIdentity()
    pixels = [torch.tensor([[[float(i), 0.0]]]) for i in range(5)]
    probabilities = forward(model, pixels, torch.device("cpu"))
    assert model.batch_sizes == [5]
    assert probabilities.shape == (5, 2)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(5))
    assert probabilities[:, 0].argsort().tolist() == [0, 1, 2, 3, 4]


def test_top_k_is_sorted_and_capped_by_the_number_of_classes() -> None:
    result = to_classification(torch.tensor([0.1, 0.7, 0.2]), ["a", "b", "c"], 5, name="m", version="v")
    assert [p.label for p in result.predictions] == ["b", "c", "a"]
    assert result.predictions[0].score == pytest.approx(0.7)
    assert (result.model, result.version) == ("m", "v")


def test_settings_refuse_oversubscribed_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVNET_WORKERS", "2")
    monkeypatch.setenv("CONVNET_TORCH_THREADS", str(available_cores()))
    with pytest.raises(ValueError, match="oversubscribes"):
        ServiceSettings()


def test_settings_defaults_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVNET_WORKERS", "1")
    monkeypatch.setenv("CONVNET_PHOTO_MAX_BATCH_SIZE", "8")
    settings = ServiceSettings()
    assert settings.threads_per_worker == available_cores()
    assert settings.batching("photo") == {"max_batch_size": 8, "max_latency_ms": settings.max_latency_ms}
    assert settings.batching("mnist")["max_batch_size"] == settings.max_batch_size
