"""The service in-process over HTTP (BentoML's `to_asgi()` app with its lifespan), shared by the HTTP
tests of tests/service: BentoML registers its HTTP metrics in the process's Prometheus registry for each
app it builds, and refuses a second app in the same process.

Its model table: the embedded MNIST model with its ONNX graph (classified with ONNX Runtime, explained
with PyTorch); `photo`, an untrained MobileNetV2 for two classes at 64 px, without one (PyTorch);
`imagenet`, the embedded ImageNet MobileNetV2 (models/mobilenet-v2-imagenet); `ants`, in the table but
never exported.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.service import images
from tests.support.asgi import InProcess
from tests.support.server import EMBEDDED_PHOTO, mnist_run, untrained_run
from training.export import export_run

MAX_QUEUED_EXPLANATIONS = 1  # so that one running explanation fills the queue


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    scratch = tmp_path_factory.mktemp("runs")
    photo = untrained_run(scratch / "photo", "photo", "mobilenet_v2", ["ant", "bee"], images.SMALL_PHOTO)
    table = {
        "mnist": {"tag": str(export_run(mnist_run(scratch / "mnist"), onnx=True)), "required": True},
        "photo": {"tag": str(export_run(photo)), "max_batch_size": 8},
        "imagenet": {"tag": str(export_run(EMBEDDED_PHOTO)), "max_batch_size": 4},
        "ants": {"tag": "ants-never-exported:latest"},
    }
    with pytest.MonkeyPatch.context() as patch:  # the settings are read at import, then restored
        patch.setenv("CONVNET_MODELS", json.dumps(table))
        patch.setenv("CONVNET_MAX_QUEUED_EXPLANATIONS", str(MAX_QUEUED_EXPLANATIONS))
        sys.modules.pop("service.service", None)
        from service.service import ImageClassifier
    yield ImageClassifier


@pytest.fixture(scope="session")
def asgi_app(service: Any) -> Any:
    """BentoML's ASGI app of the service (its lifespan loads the models), one per test session."""
    return service.to_asgi()


@pytest.fixture(scope="module")
def http(asgi_app: Any) -> Iterator[InProcess]:
    """The app with its lifespan running, per module: test_api_fuzz.py runs the same app's lifespan through
    schemathesis, and two at once would share BentoML's one service instance."""
    client = InProcess(asgi_app)
    yield client
    client.close()
