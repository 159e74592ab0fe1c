"""End to end: a tiny fine-tuned MobileNetV2 photo model, exported, answers `/classify/photo` over HTTP.

The head is trained on 16 real hymenoptera photos per class at 128 px (the transfer-learning path,
RGB preprocessing with resize + centre crop), exported next to an MNIST model into the server's own
model store, and served by `bentoml serve` with the photo model's own batch queue. The served labels
and scores must be the exported model's own, computed in-process; multipart and base64 uploads must
get the same answers; metadata and metrics must describe the photo model; digits stay with MNIST.
(Without a photo model the service answers 503: tests/service/test_service_e2e.py checks that.)
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from PIL import Image

from exported import ExportedModel, load_model
from exported.preprocessing import Preprocessing
from tests.conftest import HYMENOPTERA_DIR, WEIGHTS_DIR
from tests.service import images
from tests.support.server import Server, mnist_run
from training.export import export_run
from training.recipes import finetune

pytestmark = pytest.mark.e2e

LABELS = ["ants", "bees"]
PHOTOS_PER_CLASS = 2  # val photos per class sent to the service


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MobileNetV2 head trained on 16 photos per class at 128 px (a few seconds of CPU)."""
    config = finetune.Config(
        arch="mobilenet_v2",
        weights=str(WEIGHTS_DIR / "mobilenet_v2_imagenet1k_from_tflite_quant.pth"),
        data_dir=str(HYMENOPTERA_DIR),
        image_size=128,
        limit=16,
        batch_size=8,
        feature_epochs=10,
        head_lr=3e-3,
        finetune_epochs=0,
        workers=0,
    )
    return finetune.train(config, tmp_path_factory.mktemp("photo")).path


@pytest.fixture(scope="module")
def photo_tag(photo_run: Path) -> str:
    """The run exported into the tests' own store too: the tag is the weights' hash, as in the server's."""
    return str(export_run(photo_run))


@pytest.fixture(scope="module")
def exported(photo_tag: str) -> ExportedModel:
    return load_model(photo_tag)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, photo_run: Path) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("bentoml-home-photo")
    server = Server(home, log=home / "serve.log", device="cpu", workers="1", photo_max_batch_size="4")
    server.export(mnist_run(home / "mnist"))
    server.export(photo_run)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def photo_paths() -> list[Path]:
    return images.val_photos(HYMENOPTERA_DIR, LABELS, PHOTOS_PER_CLASS)


def classify_multipart(server: Server, paths: list[Path]) -> list[dict[str, Any]]:
    files = [("images", (path.name, path.read_bytes(), "image/jpeg")) for path in paths]
    response = httpx.post(f"{server.url}/classify/photo", files=files, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_photo_endpoint_classifies_real_photos_like_the_exported_model(
    server: Server, photo_paths: list[Path], photo_tag: str, exported: ExportedModel
) -> None:
    answers = classify_multipart(server, photo_paths)
    assert len(answers) == len(photo_paths)

    assert exported.card.labels == LABELS
    transform = exported.card.preprocessing.eval_transform()
    with torch.no_grad():
        expected = exported.model(torch.stack([transform(Image.open(p)) for p in photo_paths])).softmax(1)
    for answer, probabilities, path in zip(answers, expected, photo_paths, strict=True):
        assert answer["model"] == "photo-classifier" and f"photo-classifier:{answer['version']}" == photo_tag
        assert sorted(p["label"] for p in answer["predictions"]) == LABELS  # top-5 capped at 2 classes
        assert sum(p["score"] for p in answer["predictions"]) == pytest.approx(1.0, abs=1e-4)
        top = answer["predictions"][0]
        assert top["label"] == exported.card.labels[int(probabilities.argmax())], path.name
        assert top["score"] == pytest.approx(float(probabilities.max()), abs=1e-4), path.name
    correct = sum(
        a["predictions"][0]["label"] == p.parent.name for a, p in zip(answers, photo_paths, strict=True)
    )
    assert correct >= len(photo_paths) - 1  # a head trained on 32 photos: at most one mistake


def test_base64_answers_equal_multipart(server: Server, photo_paths: list[Path]) -> None:
    multipart = classify_multipart(server, photo_paths)
    encoded = [base64.b64encode(path.read_bytes()).decode() for path in photo_paths]
    as_json = httpx.post(f"{server.url}/classify/photo/base64", json={"images": encoded}, timeout=120)
    assert as_json.status_code == 200, as_json.text
    assert as_json.json() == multipart


def test_photo_metadata_and_metrics(server: Server, photo_paths: list[Path], exported: ExportedModel) -> None:
    assert [m["model"] for m in httpx.get(f"{server.url}/models").json()] == ["mnist", "photo"]
    photo = httpx.get(f"{server.url}/models/photo").json()
    assert photo["arch"] == "mobilenet_v2" and photo["labels"] == LABELS
    preprocessing = Preprocessing.model_validate(photo["preprocessing"])
    assert preprocessing == exported.card.preprocessing
    assert preprocessing.input_size == (128, 128) and preprocessing.channels == 3
    assert preprocessing.resize_size is not None and preprocessing.resize_size > 128  # resize + centre crop

    classify_multipart(server, photo_paths[:1])  # at least one photo batch before the scrape
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'convnet_model_info{arch="mobilenet_v2",device="cpu",model="photo"' in metrics
    assert 'convnet_batch_size_count{model="photo"}' in metrics


def test_photo_model_is_not_used_for_digits(server: Server, photo_paths: list[Path]) -> None:
    files = [("images", ("a.jpg", photo_paths[0].read_bytes(), "image/jpeg"))]
    response = httpx.post(f"{server.url}/classify/mnist", files=files, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()[0]["model"] == "mnist-convnet"
