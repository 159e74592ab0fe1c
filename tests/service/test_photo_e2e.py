"""The photo path over HTTP: an untrained MobileNetV2 export with 2 labels, real JPEG photos.

The trained photo model comes from the transfer-learning work; this checks the serving path only
(RGB preprocessing with resize + centre crop, its own batch queue, metadata, metrics).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import HYMENOPTERA_DIR
from tests.service.server import EMBEDDED_MNIST, Server, untrained_run
from training.errors import UserError
from training.models import create_model
from training.preprocessing import MNIST_PREPROCESSING, Preprocessing

pytestmark = pytest.mark.e2e

LABELS = ["ants", "bees"]
# A small input keeps the CPU cost low; the resize + centre-crop path is the ImageNet recipe's.
PHOTO_PREPROCESSING = Preprocessing(
    input_size=(96, 96), channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize_size=110
)


def _photo_arch_available() -> bool:
    try:
        create_model("mobilenet_v2", len(LABELS))
    except UserError:
        return False
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not _photo_arch_available():
        pytest.skip("create_model does not know mobilenet_v2 yet")
    home = tmp_path_factory.mktemp("bentoml-home-photo")
    server = Server(home, log=home / "serve.log", device="cpu", workers="1", photo_max_batch_size="4")
    mnist = EMBEDDED_MNIST
    if not (mnist / "config.json").is_file():
        mnist = untrained_run(
            home / "mnist", "mnist", "mnist_cnn", [str(i) for i in range(10)], MNIST_PREPROCESSING
        )
    server.export(mnist)
    server.export(untrained_run(home / "photo", "photo", "mobilenet_v2", LABELS, PHOTO_PREPROCESSING))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    paths = [sorted((HYMENOPTERA_DIR / "val" / label).glob("*.jpg"))[0] for label in LABELS]
    return [path.read_bytes() for path in paths]


def _check(results: list[dict], count: int) -> None:
    assert len(results) == count
    for result in results:
        assert result["model"] == "photo-classifier"
        assert sorted(p["label"] for p in result["predictions"]) == LABELS  # top-5 capped at 2 classes
        assert sum(p["score"] for p in result["predictions"]) == pytest.approx(1.0, abs=1e-4)


def test_photos_are_classified_multipart_and_base64(server: Server, photos: list[bytes]) -> None:
    files = [("images", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]
    multipart = httpx.post(f"{server.url}/classify/photo", files=files, timeout=120)
    assert multipart.status_code == 200, multipart.text
    _check(multipart.json(), len(photos))

    encoded = [base64.b64encode(data).decode() for data in photos]
    as_json = httpx.post(f"{server.url}/classify/photo/base64", json={"images": encoded}, timeout=120)
    assert as_json.status_code == 200, as_json.text
    assert as_json.json() == multipart.json()


def test_photo_metadata_and_metrics(server: Server, photos: list[bytes]) -> None:
    assert [m["model"] for m in httpx.get(f"{server.url}/models").json()] == ["mnist", "photo"]
    photo = httpx.get(f"{server.url}/models/photo").json()
    assert photo["arch"] == "mobilenet_v2" and photo["labels"] == LABELS
    assert photo["preprocessing"]["resize_size"] == 110
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'convnet_model_info{arch="mobilenet_v2",device="cpu",model="photo"' in metrics
    assert 'convnet_batch_size_count{model="photo"}' in metrics


def test_photo_model_is_not_used_for_digits(server: Server, photos: list[bytes]) -> None:
    response = httpx.post(
        f"{server.url}/classify/mnist", files=[("images", ("a.jpg", photos[0], "image/jpeg"))]
    )
    assert response.status_code == 200
    assert response.json()[0]["model"] == "mnist-convnet"
