"""The service in-process over HTTP with bearer tokens from a token file (two tokens, as while rotating).

The same tier as test_service_http.py (which runs with authentication off): BentoML's ASGI app with its
lifespan, on the tests' own store, the embedded MNIST model.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _bentoml_impl.server.app import ServiceAppFactory  # what to_asgi() builds, with its options

from service.auth import OPEN_PATHS, BearerAuth
from service.shutdown import DrainGate
from tests.service import images
from tests.support.asgi import InProcess
from tests.support.server import mnist_run
from training.export import export_run

TOKENS = ["old-token-7f3a9c", "new-token-e41b20"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    scratch = tmp_path_factory.mktemp("auth")
    export_run(mnist_run(scratch / "mnist"))
    token_file = scratch / "tokens"
    token_file.write_text("\n".join(TOKENS) + "\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CONVNET_API_TOKEN_FILE", str(token_file))
        env.setenv("CONVNET_MODELS", '{"mnist": {"tag": "mnist-convnet:latest", "required": true}}')
        sys.modules.pop("service.service", None)  # settings are read at import: read them with these
        from service.service import ImageClassifier
    yield ImageClassifier
    sys.modules.pop("service.service", None)  # the next importer reads its own settings


@pytest.fixture(scope="module")
def http(service: Any) -> Iterator[InProcess]:
    """`service.to_asgi()` without BentoML's request metrics, which a process registers only once: the
    app of test_service_http.py registers them (they sit outside the service's middlewares anyway)."""
    service.inject_config()
    bentoml_app = ServiceAppFactory(service, is_main=True, enable_metrics=False)()
    client = InProcess(sys.modules["service.service"].with_fast_path(bentoml_app, timeout=60))
    yield client
    client.close()


@pytest.fixture(scope="module")
def digit(mnist_dir: Path) -> tuple[bytes, str]:
    pixels, labels = images.mnist_test_digits(mnist_dir, 1)
    return images.png(pixels[0]), str(labels[0])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def v2_infer(png: bytes) -> dict[str, Any]:
    data = [base64.b64encode(png).decode()]
    return {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": data}]}


def requests(png: bytes) -> list[tuple[str, str, dict[str, Any]]]:
    """A classify route, v2 routes and /models, each as (method, path, request)."""
    return [
        ("POST", "/classify/mnist", {"files": [("images", ("digit.png", png, "image/png"))]}),
        ("POST", "/classify/mnist/base64", {"json": {"images": [base64.b64encode(png).decode()]}}),
        ("POST", "/v2/models/mnist/infer", {"json": v2_infer(png)}),
        ("GET", "/v2/models/mnist", {}),
        ("GET", "/models", {}),
        ("GET", "/models/mnist", {}),
        ("GET", "/docs.json", {}),
    ]


def send(http: InProcess, method: str, path: str, headers: dict[str, str], **request: Any) -> httpx.Response:
    return http.runner.run(http.client.request(method, path, headers=headers, **request))


def test_the_middleware_is_outside_every_route_the_service_answers(service: Any) -> None:
    """Only the shutdown gate, which answers nothing but 503 while draining, sits outside it."""
    assert [middleware for middleware, _ in service.middlewares][:2] == [DrainGate, BearerAuth]


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong-token"), {"Authorization": f"Basic {TOKENS[0]}"}],
    ids=["missing", "wrong", "basic"],
)
def test_every_protected_route_refuses_a_request_without_a_valid_token(
    http: InProcess, digit: tuple[bytes, str], headers: dict[str, str]
) -> None:
    for method, path, request in requests(digit[0]):
        response = send(http, method, path, headers, **request)
        assert response.status_code == 401, f"{method} {path}: {response.status_code}"
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"error": "unauthorized", "reason": "unauthorized"}


@pytest.mark.parametrize("token", TOKENS, ids=["old", "new"])
def test_either_token_of_the_file_is_served(http: InProcess, digit: tuple[bytes, str], token: str) -> None:
    png, label = digit
    answers = {
        path: send(http, method, path, bearer(token), **request) for method, path, request in requests(png)
    }
    for path, response in answers.items():
        assert response.status_code == 200, f"{path}: {response.text}"
    assert answers["/classify/mnist"].json()[0]["predictions"][0]["label"] == label
    probabilities = answers["/v2/models/mnist/infer"].json()["outputs"][0]["data"]
    assert str(max(range(len(probabilities)), key=probabilities.__getitem__)) == label


def test_probes_need_no_token(http: InProcess) -> None:
    """/metrics is open too: the e2e test scrapes it (BentoML's /metrics needs its multiprocess set-up)."""
    for path in sorted(OPEN_PATHS - {"/metrics"}):
        response = http.get(path)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
