"""End to end: a tiny fine-tuned photo model, exported, answers `POST /classify/photo` over HTTP.

It belongs with the service's tests (tests/service), and lives here until they take it over. It
starts `bentoml serve` on a free loopback port against the test's own model store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import HYMENOPTERA_DIR, REPO, WEIGHTS_DIR
from training.checkpoint import save_weights
from training.export import export_run, load_exported
from training.finetune import FinetuneConfig, finetune
from training.mnist import LABELS
from training.models import create_model
from training.preprocessing import MNIST_PREPROCESSING
from training.rundir import RunDir, RunInfo

pytestmark = pytest.mark.e2e

if not (REPO / "service" / "service.py").is_file():
    pytest.skip("the service package (service/service.py) is absent", allow_module_level=True)

httpx = pytest.importorskip("httpx", reason="httpx (the dev extra) is needed to call the service")

PHOTOS = {"ants": 2, "bees": 2}  # val photos per class sent to the service


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def export_untrained_mnist(out: Path) -> None:
    """The service refuses to start without an MNIST model; an untrained one stands in here."""
    run = RunDir.create(out)
    info = RunInfo(
        task="mnist",
        arch="mnist_cnn",
        labels=LABELS,
        preprocessing=MNIST_PREPROCESSING,
        config={},
        data_sha256={},
    )
    run.write_info(info)
    save_weights(create_model("mnist_cnn", len(LABELS)), run.weights)
    export_run(out)


@pytest.fixture(scope="module")
def photo_tag(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A MobileNetV2 head trained on 16 photos per class at 128 px, exported as photo-classifier."""
    export_untrained_mnist(tmp_path_factory.mktemp("mnist"))
    config = FinetuneConfig(
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
    run = finetune(config, tmp_path_factory.mktemp("photo"))
    return str(export_run(run.path))


@pytest.fixture(scope="module")
def service_url(photo_tag: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "CONVNET_WORKERS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(f"bentoml serve exited: {server.stderr.read()[-2000:] if server.stderr else ''}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        else:
            pytest.fail("the service was not ready within 180 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_photo_endpoint_classifies_real_photos_like_the_exported_model(
    photo_tag: str, service_url: str
) -> None:
    paths = [
        p for label, n in PHOTOS.items() for p in sorted((HYMENOPTERA_DIR / "val" / label).glob("*.jpg"))[:n]
    ]
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    response = httpx.post(f"{service_url}/classify/photo", files=files, timeout=60)
    assert response.status_code == 200, response.text
    answers = response.json()
    assert len(answers) == len(paths)

    exported = load_exported(photo_tag)
    transform = exported.card.preprocessing.eval_transform()
    with torch.no_grad():
        expected = exported.model(torch.stack([transform(Image.open(p)) for p in paths])).softmax(1)
    for answer, probabilities, path in zip(answers, expected, paths, strict=True):
        top = answer["predictions"][0]
        assert answer["model"] == "photo-classifier" and f"photo-classifier:{answer['version']}" == photo_tag
        assert top["label"] == exported.card.labels[int(probabilities.argmax())], path.name
        assert top["score"] == pytest.approx(float(probabilities.max()), abs=1e-4), path.name
    correct = sum(a["predictions"][0]["label"] == p.parent.name for a, p in zip(answers, paths, strict=True))
    assert correct >= len(paths) - 1  # a head trained on 32 photos: at most one mistake
