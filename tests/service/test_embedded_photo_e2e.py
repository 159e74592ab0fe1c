"""End to end: the embedded ImageNet MobileNetV2 (models/mobilenet-v2-imagenet), imported as
scripts/serve.sh does, answers `/classify/photo` for real ant and bee photos.

The photos are the first 8 of each class of the hymenoptera validation set. ImageNet has the classes
'ant' and 'bee', and the service should name them among its top 5 of 1000 (measured: 6 of the 8 ants,
7 of the 8 bees; top-1 5 and 5), with the scores of the stored network run in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from PIL import Image
from torchvision.models import MobileNet_V2_Weights

from exported.store import file_sha256
from tests.conftest import HYMENOPTERA_DIR
from tests.service import images
from tests.service.images import IMAGENET
from tests.support.server import EMBEDDED_PHOTO, Server, mnist_run
from training.models import create_model
from training.rundir import RunDir

pytestmark = pytest.mark.e2e

PHOTOS_PER_CLASS = 8
CLASSES = {"ants": "ant", "bees": "bee"}  # photo folder -> ImageNet class name


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("bentoml-home-embedded-photo")
    server = Server(home, log=home / "serve.log", device="cpu", workers="1")
    server.export(mnist_run(home / "mnist"), "--onnx")
    server.export(EMBEDDED_PHOTO, "--onnx", "--if-absent")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def photo_paths() -> list[Path]:
    return images.val_photos(HYMENOPTERA_DIR, CLASSES, PHOTOS_PER_CLASS)


@pytest.fixture(scope="module")
def answers(server: Server, photo_paths: list[Path]) -> list[list[dict[str, Any]]]:
    """The service's top 5 for each photo, from one request."""
    files = [("images", (path.name, path.read_bytes(), "image/jpeg")) for path in photo_paths]
    response = httpx.post(f"{server.url}/classify/photo", files=files, timeout=120)
    assert response.status_code == 200, response.text
    return [result["predictions"] for result in response.json()]


def test_the_photo_model_is_the_embedded_imagenet_classifier(server: Server) -> None:
    photo = httpx.get(f"{server.url}/models/photo").json()
    assert photo["name"] == "photo-classifier" and photo["arch"] == "mobilenet_v2"
    assert photo["version"] == file_sha256(EMBEDDED_PHOTO / "model.safetensors")[:16]
    assert photo["labels"] == MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    assert photo["preprocessing"] == IMAGENET.model_dump(mode="json")
    info = 'convnet_model_info{arch="mobilenet_v2",device="cpu",model="photo",name="photo-classifier"'
    assert info in httpx.get(f"{server.url}/metrics").text


def test_ants_and_bees_are_named_among_the_top_5(
    answers: list[list[dict[str, Any]]], photo_paths: list[Path]
) -> None:
    for folder, expected in CLASSES.items():
        tops = [
            [p["label"] for p in predictions]
            for predictions, path in zip(answers, photo_paths, strict=True)
            if path.parent.name == folder
        ]
        assert len(tops) == PHOTOS_PER_CLASS
        assert sum(expected in top for top in tops) >= 6, (expected, tops)
        assert sum(top[0] == expected for top in tops) >= 4, (expected, tops)


def test_the_answers_are_the_stored_networks(
    answers: list[list[dict[str, Any]]], photo_paths: list[Path]
) -> None:
    """Served (ONNX Runtime, the service's decoding and resizing) as the float16 weights loaded in-process."""
    run = RunDir.open_finished(EMBEDDED_PHOTO)
    labels = run.read_info().labels
    network = create_model("mobilenet_v2", len(labels))
    run.load_weights(network)
    pixels = torch.stack([IMAGENET.eval_transform()(Image.open(path)) for path in photo_paths])
    with torch.inference_mode():
        expected = network.eval()(pixels).softmax(dim=1)
    for predictions, probabilities, path in zip(answers, expected, photo_paths, strict=True):
        assert len(predictions) == 5
        scores, indices = probabilities.topk(5)
        assert predictions[0]["label"] == labels[int(indices[0])], path.name
        assert [p["score"] for p in predictions] == pytest.approx(scores.tolist(), abs=1e-3), path.name
