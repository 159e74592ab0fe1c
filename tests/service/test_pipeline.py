"""The per-request steps and the settings, without a server."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from exported.preprocessing import MNIST_PREPROCESSING
from service import settings as settings_module
from service.errors import InvalidTensor, NoImages, NotAnImage, TooManyImages, TooManyPixels
from service.pipeline import prepare, prepare_pixels, top_k
from service.preprocess import InputTransform, normalize
from service.settings import ServiceSettings, available_cores
from service.torch_network import DeviceInput
from tests.conftest import HYMENOPTERA_DIR
from tests.service import images


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> list[bytes]:
    pixels, _ = images.mnist_test_digits(mnist_dir, 3)
    return [images.png(p) for p in pixels]


def _prepare(files: list[bytes], max_images: int = 4) -> np.ndarray:
    return prepare(files, InputTransform(MNIST_PREPROCESSING), max_images=max_images, max_pixels=10_000)


def test_prepare_keeps_order_shape_and_uint8_pixels(digits: list[bytes], mnist_dir: Path) -> None:
    pixels = _prepare(digits)
    assert pixels.shape == (3, 1, 28, 28) and pixels.dtype == np.uint8
    expected, _ = images.mnist_test_digits(mnist_dir, 3)
    assert np.array_equal(pixels[:, 0], np.stack(expected))


def test_prepare_refuses_zero_and_too_many_images(digits: list[bytes]) -> None:
    with pytest.raises(NoImages, match="no images"):
        _prepare([])
    with pytest.raises(TooManyImages, match="5 images in one request, over the limit of 4"):
        _prepare(digits + digits[:2])


def test_errors_name_the_bad_image(digits: list[bytes]) -> None:
    with pytest.raises(NotAnImage, match=r"^images\[1\]: not an image"):
        _prepare([digits[0], b"hello", digits[1]])


def test_top_k_is_sorted_and_capped_by_the_number_of_classes() -> None:
    probabilities = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], dtype=np.float32)
    first, second = top_k(probabilities, ["a", "b", "c"], 5, name="m", version="v")
    assert [p["label"] for p in first["predictions"]] == ["b", "c", "a"]
    assert first["predictions"][0]["score"] == pytest.approx(0.7)
    assert (first["model"], first["version"]) == ("m", "v")
    assert [p["label"] for p in second["predictions"]] == ["a", "c", "b"]


def test_settings_refuse_oversubscribed_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVNET_WORKERS", "2")
    monkeypatch.setenv("CONVNET_TORCH_THREADS", str(available_cores()))
    with pytest.raises(ValueError, match="oversubscribes"):
        ServiceSettings()


def test_default_model_table_and_its_batching(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVNET_WORKERS", "1")
    monkeypatch.setenv("CONVNET_PHOTO_MODEL", "ants:latest")
    monkeypatch.setenv("CONVNET_PHOTO_MAX_LATENCY_MS", "200")
    settings = ServiceSettings()
    assert settings.threads_per_worker == available_cores()
    assert list(settings.models) == ["mnist", "photo"]
    assert settings.models["mnist"].required and not settings.models["photo"].required
    assert settings.models["photo"].tag == "ants:latest"
    assert (settings.batch_size("photo"), settings.latency_ms("photo")) == (8, 200)
    assert (settings.batch_size("mnist"), settings.latency_ms("mnist")) == (64, 1000)
    assert (settings.onnx_threads("mnist"), settings.onnx_threads("photo")) == (available_cores(),) * 2


@pytest.mark.parametrize(
    ("cpu_max", "cores"), [("150000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None)]
)
def test_a_cgroup_cpu_quota_caps_the_cores(
    cpu_max: str, cores: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container limited to 1.5 CPUs on a larger node counts 2 cores; without a quota, every core."""
    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(settings_module, "CGROUP_CPU_MAX", tmp_path / "cpu.max")
    affinity = len(os.sched_getaffinity(0))
    assert available_cores() == (affinity if cores is None else min(cores, affinity))


def test_a_worker_per_core_on_the_cpu_each_with_one_thread_but_the_photo_model_on_every_core() -> None:
    settings = ServiceSettings(device="cpu")
    assert settings.workers == available_cores() and settings.threads_per_worker == 1
    assert (settings.onnx_threads("mnist"), settings.onnx_threads("photo")) == (1, available_cores())


def test_a_third_model_is_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    digits = '"digits": {"tag": "mnist-convnet:latest", "required": true}'
    monkeypatch.setenv("CONVNET_MODELS", f'{{{digits}, "fashion": {{"tag": "f:1", "max_batch_size": 16}}}}')
    settings = ServiceSettings()
    assert list(settings.models) == ["digits", "fashion"]
    assert settings.batch_size("fashion") == 16 and settings.batch_size("digits") == settings.max_batch_size


def test_model_names_must_be_route_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVNET_MODELS", '{"Bad/Name": {"tag": "x:1"}}')
    with pytest.raises(ValueError, match="pattern"):
        ServiceSettings()


def test_jpegs_decoded_by_torchvision_are_within_one_level_of_the_cpu_path() -> None:
    """The CUDA workers' JPEG path (torchvision's decode_jpeg: nvJPEG on a GPU, then its tensor resize),
    run on the CPU here: the decode is the same libjpeg's, the resize within one level of PIL's."""
    photos = [path.read_bytes() for path in sorted(HYMENOPTERA_DIR.glob("val/*/*.jpg"))[:6]]
    transform = InputTransform(images.IMAGENET)
    on_device = DeviceInput(transform, "cpu").decode_jpegs(photos, max_images=8, max_pixels=10**7)
    assert on_device is not None
    on_cpu = torch.from_numpy(prepare(photos, transform, max_images=8, max_pixels=10**7))
    assert (on_device.int() - on_cpu.int()).abs().max() <= 1


def test_other_formats_and_corrupt_jpegs_are_left_to_the_cpu_path(digits: list[bytes]) -> None:
    photo = next(HYMENOPTERA_DIR.glob("val/ants/*.jpg")).read_bytes()
    device_input = DeviceInput(InputTransform(images.IMAGENET), "cpu")
    limits = {"max_images": 8, "max_pixels": 10**7}
    assert device_input.decode_jpegs([photo, digits[0]], **limits) is None
    truncated = photo[: len(photo) // 3]
    assert device_input.decode_jpegs([truncated], **limits) is None
    with pytest.raises(TooManyPixels, match=r"^images\[0\]: "):
        device_input.decode_jpegs([photo], max_images=8, max_pixels=1000)


def test_preprocessed_pixels_reach_the_network_as_the_same_normalised_values(mnist_dir: Path) -> None:
    """Pixels normalised by the card's eval transform (client side) -> the batcher's [0, 1] scale ->
    `normalize` in the network: the values the client sent, and those of the image path."""
    digits, _ = images.mnist_test_digits(mnist_dir, 3)
    transform = MNIST_PREPROCESSING.eval_transform()
    sent = torch.stack([transform(Image.fromarray(d)) for d in digits]).numpy()
    queued = prepare_pixels(sent, MNIST_PREPROCESSING, max_images=4)
    assert queued.dtype == np.float32 and queued.min() >= 0 and queued.max() <= 1 + 1e-6
    np.testing.assert_allclose(normalize(queued, MNIST_PREPROCESSING), sent, atol=1e-5)
    from_files = normalize(_prepare([images.png(d) for d in digits]), MNIST_PREPROCESSING)
    np.testing.assert_allclose(normalize(queued, MNIST_PREPROCESSING), from_files, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "fill", "error", "words"),
    [
        (
            (2, 3, 28, 28),
            0.0,
            InvalidTensor,
            r"pixels of shape \[2, 3, 28, 28\]: this model takes \[N, 1, 28, 28\]",
        ),
        ((2, 28, 28), 0.0, InvalidTensor, "takes"),
        ((0, 1, 28, 28), 0.0, NoImages, "0 images"),
        ((5, 1, 28, 28), 0.0, TooManyImages, "5 images in one request"),
        ((1, 1, 28, 28), np.nan, InvalidTensor, "finite"),
    ],
)
def test_bad_pixels_are_refused(shape: tuple[int, ...], fill: float, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        prepare_pixels(np.full(shape, fill, dtype=np.float32), MNIST_PREPROCESSING, max_images=4)


def test_the_jpeg_path_checks_the_resized_size_from_the_header() -> None:
    strip = images.encode(Image.new("RGB", (20_000, 1), (40, 90, 200)), "JPEG")
    device_input = DeviceInput(InputTransform(images.IMAGENET, max_pixels=25_000_000), "cpu")
    with pytest.raises(TooManyPixels, match=r"^images\[1\]: .*on its shorter side"):
        device_input.decode_jpegs([images.noise_jpeg(), strip], max_images=8, max_pixels=10**7)
