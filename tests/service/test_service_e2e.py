"""The real service over HTTP: `bentoml serve` with 2 workers, real MNIST digits as PNG.

One server for the whole module (start-up costs ~20 s of CPU). Without the embedded trained model
(models/mnist) the server runs an untrained export and the accuracy checks are skipped.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import bentoml
import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.service import images
from tests.support.requirements import BENTO_LOCK, read_pins
from tests.support.server import EMBEDDED_MNIST, REPO, Server, free_port, mnist_run

pytestmark = pytest.mark.e2e

MAX_IMAGES = 16
MAX_PIXELS = 4_000_000
MAX_BYTES = 1_000_000
MULTIPART_NO_PARTS = {"content-type": "multipart/form-data; boundary=empty"}
TRAINED = (EMBEDDED_MNIST / "config.json").is_file()
needs_trained = pytest.mark.skipif(
    not TRAINED, reason="the embedded trained model models/mnist is not there yet"
)

CUSTOM_METRICS = (
    "convnet_batch_wait_seconds",
    "convnet_preprocess_seconds",
    "convnet_inference_seconds",
    "convnet_batch_size",
    "convnet_predictions_total",
    "convnet_model_info",
    "convnet_rejected_inputs_total",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("bentoml-home")
    server = Server(
        home,
        log=home / "serve.log",
        device="cpu",
        workers="2",
        torch_threads="1",
        max_images_per_request=str(MAX_IMAGES),
        max_image_pixels=str(MAX_PIXELS),
        max_request_bytes=str(MAX_BYTES),
    )
    server.export(mnist_run(home / "run"), "--onnx")  # as scripts/serve.sh does: served with ONNX Runtime
    # No photo model in this store (unlike serve.sh's): /classify/photo must answer 503.
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> tuple[list[np.ndarray], list[int]]:
    return images.mnist_test_digits(mnist_dir, 300)


@pytest.fixture(scope="module")
def good_png(digits: tuple[list[np.ndarray], list[int]]) -> bytes:
    return images.png(digits[0][0])


def upload(*files: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(files)]


def classify(server: Server, *files: bytes) -> list[dict[str, Any]]:
    response = httpx.post(f"{server.url}/classify/mnist", files=upload(*files), timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def scrape(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, /, **labels: str
) -> float:
    wanted = set(labels.items())
    return sum(value for (name, names), value in samples.items() if name == metric and wanted <= names)


def test_ready_live_and_model_metadata(server: Server) -> None:
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert httpx.get(f"{server.url}/livez").status_code == 200
    models = httpx.get(f"{server.url}/models").json()
    assert [m["model"] for m in models] == ["mnist"]
    mnist = httpx.get(f"{server.url}/models/mnist").json()
    assert mnist["name"] == "mnist-convnet" and mnist["labels"] == [str(i) for i in range(10)]
    assert mnist["preprocessing"]["input_size"] == [28, 28] and mnist["preprocessing"]["mean"] == [0.1307]
    assert (mnist["test_accuracy"] is not None) == TRAINED
    photo = httpx.get(f"{server.url}/models/photo")
    assert photo.status_code == 404 and "no photo model is loaded" in photo.json()["error"]


@needs_trained
def test_accuracy_on_real_mnist_test_digits(
    server: Server, digits: tuple[list[np.ndarray], list[int]]
) -> None:
    pixels, labels = digits
    predicted: list[str] = []
    for start in range(0, len(pixels), 10):
        results = classify(server, *(images.png(p) for p in pixels[start : start + 10]))
        predicted += [result["predictions"][0]["label"] for result in results]
    accuracy = np.mean([p == str(label) for p, label in zip(predicted, labels, strict=True)])
    assert accuracy >= 0.98, f"accuracy {accuracy:.3f} on {len(labels)} real test digits"


def test_several_images_keep_their_order(server: Server, digits: tuple[list[np.ndarray], list[int]]) -> None:
    files = [images.png(p) for p in digits[0][:8]]
    together = classify(server, *files)
    alone = [classify(server, data)[0] for data in files]
    assert len(together) == 8
    for joint, single in zip(together, alone, strict=True):
        assert [p["label"] for p in joint["predictions"]] == [p["label"] for p in single["predictions"]]
        assert joint["predictions"][0]["score"] == pytest.approx(single["predictions"][0]["score"], abs=1e-5)
    first = together[0]
    assert first["model"] == "mnist-convnet" and len(first["predictions"]) == 5
    scores = [p["score"] for p in first["predictions"]]
    assert scores == sorted(scores, reverse=True)
    if TRAINED:
        assert [r["predictions"][0]["label"] for r in together] == [str(n) for n in digits[1][:8]]


def test_base64_json_variant_matches_multipart(server: Server, good_png: bytes) -> None:
    encoded = base64.b64encode(good_png).decode()
    response = httpx.post(
        f"{server.url}/classify/mnist/base64", json={"images": [encoded, encoded]}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()[0] == response.json()[1] == classify(server, good_png)[0]


def test_bentoml_client_calls_the_apis_by_name(server: Server, good_png: bytes, tmp_path: Path) -> None:
    """BentoML's own client finds `classify_mnist` and `classify_mnist_base64` in the served schema."""
    digit = tmp_path / "digit.png"
    digit.write_bytes(good_png)
    with bentoml.SyncHTTPClient(server.url) as client:
        uploaded = client.classify_mnist(images=[digit])
        encoded = client.classify_mnist_base64(images=[base64.b64encode(good_png).decode()])
    assert uploaded == encoded == classify(server, good_png)


def _bad_requests(good: bytes, digit: np.ndarray) -> list[tuple[str, str, dict[str, Any], int, str]]:
    """(id, path, httpx.post keyword arguments, status, words the error must contain)."""
    jpeg = images.noise_jpeg()
    float_tiff = images.encode(images.Image.fromarray(digit.astype(np.float32)), "TIFF")
    url = "http://127.0.0.1:9/digit.png"
    mnist, base64_route = "/classify/mnist", "/classify/mnist/base64"
    return [
        (
            "not-an-image",
            mnist,
            {"files": [("images", ("a.txt", b"hello", "text/plain"))]},
            400,
            "not an image",
        ),
        ("truncated-png", mnist, {"files": upload(good[: len(good) // 2])}, 400, "truncated or corrupt PNG"),
        (
            "truncated-jpeg",
            mnist,
            {"files": upload(jpeg[: len(jpeg) // 2])},
            400,
            "truncated or corrupt JPEG",
        ),
        ("empty-file", mnist, {"files": upload(b"")}, 400, "empty file"),
        (
            "zero-images",
            mnist,
            {"content": b"--empty--\r\n", "headers": MULTIPART_NO_PARTS},
            400,
            "no images",
        ),
        (
            "other-field",
            mnist,
            {"files": [("other", ("a.png", good, "image/png"))]},
            400,
            "unexpected form field",
        ),
        ("too-many-images", mnist, {"files": upload(*[good] * (MAX_IMAGES + 1))}, 413, "17 images"),
        ("too-many-pixels", mnist, {"files": upload(images.bomb_png(3000, 2000))}, 413, "6,000,000 pixels"),
        ("bomb", mnist, {"files": upload(images.bomb_png(100_000, 100_000))}, 413, "pixels"),
        ("body-too-large", mnist, {"files": upload(b"\0" * (MAX_BYTES + 1))}, 413, "over the limit"),
        ("float-mode", mnist, {"files": upload(float_tiff)}, 400, "unsupported image mode 'F'"),
        ("plain-string", mnist, {"files": [("images", (None, url))]}, 400, "never fetched"),
        ("urlencoded-form", mnist, {"data": {"images": url}}, 415, "multipart/form-data"),
        ("json-to-upload-route", mnist, {"json": {"images": [url]}}, 415, "base64"),
        (
            "no-boundary",
            mnist,
            {"content": b"x", "headers": {"content-type": "multipart/form-data"}},
            400,
            "boundary",
        ),
        ("base64-invalid", base64_route, {"json": {"images": ["%%%"]}}, 400, "not valid base64"),
        ("base64-url", base64_route, {"json": {"images": [url]}}, 400, "URLs are not fetched"),
        ("base64-empty", base64_route, {"json": {"images": []}}, 400, "no images"),
        ("base64-not-a-list", base64_route, {"json": {"images": 5}}, 400, "validation error"),
        ("no-photo-model", "/classify/photo", {"files": upload(good)}, 503, "no photo model is loaded"),
    ]


def test_every_bad_input_gets_a_4xx_naming_the_problem(
    server: Server, good_png: bytes, digits: tuple[list[np.ndarray], list[int]]
) -> None:
    for name, path, request, status, words in _bad_requests(good_png, digits[0][0]):
        response = httpx.post(f"{server.url}{path}", timeout=60, **request)
        assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
        assert words in response.json()["error"], f"{name}: {response.text}"
        assert classify(server, good_png), f"{name}: the next good request failed"


@pytest.mark.parametrize(
    "make",
    [
        images.cmyk_jpeg,
        images.sixteen_bit_png,
        images.palette_png_with_transparency,
        images.rgba_png,
        images.la_png,
        lambda digit: images.animated_gif(digit, 255 - digit),
    ],
    ids=["cmyk", "16-bit", "palette-transparency", "rgba", "la", "animated-gif"],
)
def test_unusual_modes_are_classified(
    server: Server, digits: tuple[list[np.ndarray], list[int]], make
) -> None:
    pixels, labels = digits
    (result,) = classify(server, make(pixels[0]))
    if TRAINED:
        assert result["predictions"][0]["label"] == str(labels[0])


def test_urls_are_never_fetched(server: Server) -> None:
    hits: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    with HTTPServer(("127.0.0.1", port), Recorder) as listener:
        threading.Thread(target=listener.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{port}/digit.png"
        for path, request in [
            ("/classify/mnist", {"files": [("images", (None, url))]}),
            ("/classify/mnist", {"data": {"images": url}}),
            ("/classify/mnist", {"content": url, "headers": {"content-type": "application/json"}}),
            ("/classify/mnist/base64", {"json": {"images": [url]}}),
        ]:
            response = httpx.post(f"{server.url}{path}", timeout=30, **request)
            assert 400 <= response.status_code < 500, response.text
        listener.shutdown()
    assert hits == []


def test_concurrent_requests_are_batched_and_none_is_lost(server: Server, good_png: bytes) -> None:
    """Single-image requests sent together share forward passes (batch size > 1 in /metrics)."""

    async def burst(count: int) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            responses = await asyncio.gather(
                *(client.post("/classify/mnist", files=upload(good_png)) for _ in range(count))
            )
        assert all(r.status_code == 200 for r in responses)

    def multi_image_batches() -> float:
        samples = scrape(server)
        return total(samples, "convnet_batch_size_count", model="mnist") - total(
            samples, "convnet_batch_size_bucket", model="mnist", le="1.0"
        )

    before = multi_image_batches()
    asyncio.run(burst(250))
    assert multi_image_batches() > before


def test_metrics_add_up_across_two_workers(server: Server, good_png: bytes) -> None:
    before = total(scrape(server), "convnet_predictions_total", model="mnist")
    for _ in range(40):  # a new connection each: the two workers share the listening socket
        classify(server, good_png, good_png)
    samples = scrape(server)
    assert total(samples, "convnet_predictions_total", model="mnist") - before == 80

    # Each process writes its own file; /metrics must be their sum, and both workers served.
    per_process = {}
    for path in (server_home(server) / "prometheus_multiproc_dir").glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(path))
        per_process[path.name] = sum(v for key, v, *_ in values if '"convnet_predictions_total"' in key)
    served = [count for count in per_process.values() if count > 0]
    assert len(served) == 2, per_process
    assert sum(served) == total(samples, "convnet_predictions_total", model="mnist")


def test_metrics_has_every_custom_metric(server: Server) -> None:
    text = httpx.get(f"{server.url}/metrics").text
    for name in CUSTOM_METRICS:
        assert f"\n{name}" in text, f"{name} missing from /metrics"
    samples = scrape(server)
    assert total(samples, "convnet_model_info", model="mnist", name="mnist-convnet", device="cpu") == 1
    assert total(samples, "convnet_rejected_inputs_total", model="photo", reason="model_not_loaded") >= 1
    assert total(samples, "convnet_batch_wait_seconds_count", model="mnist") > 0


def test_bentoml_build_contains_the_models_and_the_service_code(server: Server, tmp_path: Path) -> None:
    """The bento lists the model by exact version; its exported archive carries the weights, the ONNX
    graph, the serving code and its demo page, and none of the training package, and installs the bento
    lock, hashes included (BentoML adds its own pin of itself)."""
    build = bentoml_cli(server, "build", "--output", "tag")
    tag = build.stdout.strip().split("__tag__:")[-1]
    archive = tmp_path / "classifier.bento"
    bentoml_cli(server, "export", tag, str(archive))
    with tarfile.open(archive) as bento:
        files = {member.name.removeprefix("./"): member for member in bento.getmembers()}
        bento_yaml = yaml.safe_load(bento.extractfile(files["bento.yaml"]).read())
        requirements = bento.extractfile(files["env/python/requirements.txt"]).read().decode()

    models = [model["tag"] for service in bento_yaml["services"] for model in service["models"]]
    assert models == [httpx.get(f"{server.url}/models/mnist").json()["tag"]]
    version = models[0].split(":")[1]
    assert {
        f"models/mnist-convnet/{version}/model.{kind}" for kind in ("safetensors", "onnx")
    } <= files.keys()
    assert {"src/service/service.py", "src/service/runtime.py", "src/exported/store.py"} <= files.keys()
    assert {f"src/service/static/{page}" for page in ("index.html", "demo.js", "demo.css")} <= files.keys()
    assert not any(name.startswith("src/training/") for name in files)
    assert read_pins(requirements) == read_pins(BENTO_LOCK.read_text())


def bentoml_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", *args],
        cwd=REPO, env=server.env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, (
        f"bentoml {' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    )
    return result


def server_home(server: Server) -> Path:
    return Path(server.env["BENTOML_HOME"])
