"""The service in-process over HTTP (the `http` app of tests/service/conftest.py): classification.

The embedded MNIST model is exported with its ONNX graph (the worker serves it with ONNX Runtime),
beside an untrained MobileNetV2 photo model without one (served with PyTorch).
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.auth import BearerAuth
from tests.conftest import HYMENOPTERA_DIR
from tests.service import images
from tests.service.test_timeouts import live_timers
from tests.support.asgi import InProcess


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> tuple[list[bytes], list[int]]:
    pixels, labels = images.mnist_test_digits(mnist_dir, 24)
    return [images.png(p) for p in pixels], labels


def upload(*files: bytes) -> dict[str, Any]:
    return {"files": [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(files)]}


def top1(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [result["predictions"][0]["label"] for result in response.json()]


def test_digits_are_classified_in_order(http: InProcess, digits: tuple[list[bytes], list[int]]) -> None:
    files, labels = digits
    assert top1(http.post("/classify/mnist", **upload(*files))) == [str(n) for n in labels]


def test_base64_answers_equal_multipart(http: InProcess, digits: tuple[list[bytes], list[int]]) -> None:
    files = digits[0][:3]
    encoded = [base64.b64encode(data).decode() for data in files]
    assert (
        http.post("/classify/mnist/base64", json={"images": encoded}).json()
        == http.post("/classify/mnist", **upload(*files)).json()
    )


def test_concurrent_requests_answer_as_alone(http: InProcess, digits: tuple[list[bytes], list[int]]) -> None:
    files, labels = digits
    responses = http.gather(*(("/classify/mnist", upload(data)) for data in files))
    assert [top1(response)[0] for response in responses] == [str(n) for n in labels]
    together = responses[0].json()[0]["predictions"]
    alone = http.post("/classify/mnist", **upload(files[0])).json()[0]["predictions"]
    assert [p["label"] for p in together] == [p["label"] for p in alone]
    assert [p["score"] for p in together] == pytest.approx([p["score"] for p in alone], abs=1e-5)


def test_answered_requests_leave_no_timer_behind(
    http: InProcess, digits: tuple[list[bytes], list[int]]
) -> None:
    """The service's stack times requests out with `timeouts.RequestTimeout`, not BentoML's own."""
    loop = http.runner.get_loop()
    before = live_timers(loop)
    for data in digits[0][:10]:
        top1(http.post("/classify/mnist", **upload(data)))
    assert live_timers(loop) == before


def test_photos_are_classified_with_the_photo_model(http: InProcess) -> None:
    photos = sorted(HYMENOPTERA_DIR.glob("val/*/*.jpg"))[:3]
    response = http.post(
        "/classify/photo", files=[("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    )
    assert response.status_code == 200, response.text
    answers = response.json()
    assert len(answers) == 3 and answers[0]["model"] == "photo-classifier"
    for answer in answers:
        assert {p["label"] for p in answer["predictions"]} == {"ant", "bee"}
        assert sum(p["score"] for p in answer["predictions"]) == pytest.approx(1, abs=1e-5)


def test_models_metadata(http: InProcess) -> None:
    models = http.get("/models").json()
    assert [m["model"] for m in models] == ["mnist", "photo", "imagenet"]
    photo = http.get("/models/photo").json()
    assert photo["arch"] == "mobilenet_v2" and photo["labels"] == ["ant", "bee"]
    assert photo["preprocessing"]["input_size"] == [64, 64]
    unknown = http.get("/models/cifar")
    assert unknown.status_code == 404 and unknown.json()["reason"] == "unknown_model"
    for odd in ("/models/a%0Ab", "/models/a%2Fb", "/models/"):  # names a Starlette route would not match
        assert http.get(odd).json()["reason"] == "unknown_model", odd
    assert http.post("/models", json={}).json()["reason"] == "method_not_allowed"


def test_no_token_is_asked_while_none_is_configured(http: InProcess, service: Any) -> None:
    assert BearerAuth not in [middleware for middleware, _ in service.middlewares]
    stray = {"Authorization": "Bearer not-configured"}
    assert http.runner.run(http.client.get("/models", headers=stray)).status_code == 200


@pytest.mark.parametrize(
    ("path", "request_", "status", "reason"),
    [
        ("/classify/mnist", upload(b"hello"), 400, "not_an_image"),
        ("/classify/mnist", {"data": {"images": "http://127.0.0.1:9/x.png"}}, 415, "unsupported_media_type"),
        ("/classify/mnist/base64", {"json": {"images": []}}, 400, "no_images"),
        ("/classify/photo", upload(images.bomb_png(6000, 5000)), 413, "too_many_pixels"),
    ],
)
def test_bad_requests_are_4xx_and_the_next_one_succeeds(
    http: InProcess,
    digits: tuple[list[bytes], list[int]],
    path: str,
    request_: dict[str, Any],
    status: int,
    reason: str,
) -> None:
    response = http.post(path, **request_)
    assert (response.status_code, response.json()["reason"]) == (status, reason), response.text
    assert top1(http.post("/classify/mnist", **upload(digits[0][0]))) == [str(digits[1][0])]


def test_the_api_methods_answer_like_http(
    http: InProcess, service: Any, digits: tuple[list[bytes], list[int]], tmp_path: Path
) -> None:
    """The `@bentoml.api` methods (BentoML's schema and clients) run the same classification,
    on an instance of the class itself (BentoML's first testing tier)."""
    path = tmp_path / "digit.png"
    path.write_bytes(digits[0][1])
    instance = service.inner()
    try:
        answer = asyncio.run(instance.classify_mnist(images=[path]))
        encoded = base64.b64encode(digits[0][1]).decode()
        assert asyncio.run(instance.classify_mnist_base64(images=[encoded])) == answer
    finally:
        instance.close()
    assert answer == http.post("/classify/mnist", **upload(digits[0][1])).json()
