"""`bentoml serve` with `CONVNET_API_TOKEN` set: the setting reaches the worker, which asks every request
for the token but the probes' and Prometheus', and the token never shows in the server's log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.service import images
from tests.support.server import Server, mnist_run

pytestmark = pytest.mark.e2e

TOKEN = "e2e-token-5b7c1d"
WRONG = "wrong-token-9a8f2e"


@pytest.fixture(scope="module")
def digit(mnist_dir: Path) -> tuple[bytes, str]:
    pixels, labels = images.mnist_test_digits(mnist_dir, 1)
    return images.png(pixels[0]), str(labels[0])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("bentoml-home")
    server = Server(
        home, log=home / "serve.log", device="cpu", workers="1", access_log="true", api_token=TOKEN
    )
    server.export(mnist_run(home / "run"))
    server.start()  # waits for /readyz, without a token
    yield server
    server.stop()


def test_the_worker_asks_for_the_token(server: Server, digit: tuple[bytes, str]) -> None:
    png, label = digit
    files = {"files": [("images", ("digit.png", png, "image/png"))]}
    url = f"{server.url}/classify/mnist"
    for headers in ({}, {"Authorization": f"Bearer {WRONG}"}):
        refused = httpx.post(url, headers=headers, timeout=30, **files)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    served = httpx.post(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30, **files)
    assert served.status_code == 200, served.text
    assert served.json()[0]["predictions"][0]["label"] == label
    assert httpx.get(f"{server.url}/models", timeout=30).status_code == 401


def test_third_party_clients_send_the_token(server: Server, digit: tuple[bytes, str], tmp_path: Path) -> None:
    png, label = digit
    path = tmp_path / "digit.png"
    path.write_bytes(png)
    with bentoml.SyncHTTPClient(server.url, token=TOKEN) as client:
        assert client.classify_mnist(images=[path])[0]["predictions"][0]["label"] == label

    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    images_input = triton.InferInput("images", [1], "BYTES")
    images_input.set_data_from_numpy(np.array([png], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="unauthorized"):
        client.infer("mnist", [images_input])
    result = client.infer("mnist", [images_input], headers={"Authorization": f"Bearer {TOKEN}"})
    assert str(result.as_numpy("probabilities").argmax(axis=1)[0]) == label


def test_probes_and_metrics_stay_open(server: Server) -> None:
    for path in ("/livez", "/readyz", "/healthz", "/v2/health/ready"):
        assert httpx.get(f"{server.url}{path}", timeout=30).status_code == 200, path
    metrics = httpx.get(f"{server.url}/metrics", timeout=30)
    assert metrics.status_code == 200
    assert 'endpoint="/classify/mnist",http_response_code="401"' in metrics.text


def test_no_token_in_the_log(server: Server) -> None:
    log = server.log.read_text(errors="replace")
    assert "/classify/mnist" in log, log[-2000:]  # the access log lines are there
    assert TOKEN not in log and WRONG not in log
