"""The service in-process, shared by the modules that call it over HTTP without a server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.service import images
from tests.support.server import REPO, mnist_run, untrained_run


def export(run_dir: Path, *options: str) -> None:
    subprocess.run([sys.executable, "-m", "training", "export", str(run_dir), *options], cwd=REPO, check=True)


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The service class on the tests' own store: the embedded MNIST model exported with its ONNX graph
    (served with ONNX Runtime) and an untrained MobileNetV2 photo model without one (served with PyTorch)."""
    scratch = tmp_path_factory.mktemp("runs")
    export(mnist_run(scratch / "mnist"), "--onnx")
    export(untrained_run(scratch / "photo", "photo", "mobilenet_v2", ["ant", "bee"], images.SMALL_PHOTO))
    for name in [name for name in sys.modules if name == "service.service"]:
        del sys.modules[name]  # settings and catalog are read at import: read them with these models
    from service.service import ImageClassifier

    return ImageClassifier


@pytest.fixture(scope="session")
def asgi_app(service: Any) -> Any:
    """BentoML's ASGI app of the service (start its lifespan to load the models). One per test session:
    BentoML registers its HTTP metrics once per app in the process-wide Prometheus registry, so a second
    app in the same process fails its first request."""
    return service.to_asgi()
