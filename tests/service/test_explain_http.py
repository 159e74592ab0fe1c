"""`/explain/<model>` and `/features/<model>` in-process over HTTP (the `http` app of
tests/service/conftest.py): the embedded MNIST model, classified with ONNX Runtime and explained with
PyTorch, and the real ImageNet MobileNetV2 (`imagenet`), on real digits and photos; every refusal; the
bounded queue; classification answered while an explanation runs."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path
from typing import Any

import bentoml
import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from service.schemas import Explanation, FeatureMaps
from tests.conftest import HYMENOPTERA_DIR
from tests.service import images
from tests.support.asgi import InProcess

ANT = HYMENOPTERA_DIR / "val" / "ants" / "11381045_b352a47d8c.jpg"  # ImageNet's 'ant' (310) at 0.95
BEE = HYMENOPTERA_DIR / "val" / "bees" / "10870992_eebeeb3a12.jpg"  # 'bee' (309) at 0.99
EMPTY_FORM = "multipart/form-data; boundary=x"


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> tuple[list[bytes], list[int]]:
    pixels, labels = images.mnist_test_digits(mnist_dir, 3)
    return [images.png(p) for p in pixels], labels


def upload(*files: bytes, field: str = "image") -> dict[str, Any]:
    return {"files": [(field, (f"{i}.png", data, "image/png")) for i, data in enumerate(files)]}


def answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON answer, which has exactly the fields of its schema in the OpenAPI document."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    schema = Explanation if response.url.path.startswith("/explain/") else FeatureMaps
    assert schema.model_validate(document).model_dump(mode="json") == document
    return document


def png_of(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url.removeprefix(prefix))))


def heat(document: dict[str, Any]) -> np.ndarray:
    values = np.array(document["heatmap"]["values"])
    assert values.shape == (document["heatmap"]["height"], document["heatmap"]["width"])
    assert values.min() >= 0 and values.max() == 1 and values.std() > 0.05  # normalised, not constant
    return values


def explanations_timed(model: str, kind: str) -> float:
    """The count of `convnet_explanation_seconds` in this process."""
    labels = {"model": model, "kind": kind}
    return REGISTRY.get_sample_value("convnet_explanation_seconds_count", labels) or 0.0


def test_a_digit_is_explained_by_its_class(http: InProcess, digits: tuple[list[bytes], list[int]]) -> None:
    files, labels = digits
    timed = explanations_timed("mnist", "gradcam")
    explained = answer(http.post("/explain/mnist", **upload(files[0])))
    assert explanations_timed("mnist", "gradcam") == timed + 1
    classified = http.post("/classify/mnist", files=[("images", ("0.png", files[0], "image/png"))]).json()[0]
    assert explained["model"] == classified["model"] == "mnist-convnet"
    assert explained["version"] == classified["version"]
    assert explained["target"]["label"] == str(labels[0]) and explained["target"]["index"] == labels[0]
    # /classify ran ONNX Runtime, the explanation PyTorch: the same labels, scores to float precision
    assert [p["label"] for p in explained["predictions"]] == [p["label"] for p in classified["predictions"]]
    assert [p["score"] for p in explained["predictions"]] == pytest.approx(
        [p["score"] for p in classified["predictions"]], abs=1e-5
    )
    assert explained["layer"] == "7"
    assert heat(explained).shape == (28, 28)
    overlay = png_of(explained["overlay"])
    assert (overlay.size, overlay.mode) == ((28, 28), "RGB")

    other = answer(http.post("/explain/mnist?target=3", **upload(files[0])))
    assert other["target"]["index"] == 3 and other["target"]["label"] == "3"
    assert not np.array_equal(heat(other), heat(explained))


def test_feature_maps_of_each_convolution(http: InProcess, digits: tuple[list[bytes], list[int]]) -> None:
    first = answer(http.post("/features/mnist", **upload(digits[0][1])))
    assert (first["layer"], first["layers"], first["channels"], first["size"]) == (
        "0",
        ["0", "3", "6"],
        32,
        [26, 26],
    )
    assert png_of(first["maps"]).size == (6 * 27 - 1, 6 * 27 - 1)  # 32 maps in a 6 x 6 grid, 1 px apart
    assert png_of(first["sobel"]).size == (3 * 29 - 1, 28)  # x, y and magnitude of the 28 x 28 input
    for layer, size in (("3", [11, 11]), ("6", [3, 3])):
        maps = answer(http.post(f"/features/mnist?layer={layer}", **upload(digits[0][1])))
        assert (maps["layer"], maps["channels"], maps["size"]) == (layer, 64, size)
        assert maps["sobel"] == first["sobel"]


def test_a_photo_is_explained_differently_for_each_target(http: InProcess) -> None:
    photo = {"files": [("image", (ANT.name, ANT.read_bytes(), "image/jpeg"))]}
    top = answer(http.post("/explain/imagenet", **photo))
    assert top["target"] == {"index": 310, "label": "ant", "score": top["predictions"][0]["score"]}
    assert top["layer"] == "features.18" and heat(top).shape == (224, 224)
    assert png_of(top["overlay"]).size == (224, 224)
    by_index = answer(http.post("/explain/imagenet?target=310", **photo))
    assert by_index["heatmap"] == top["heatmap"]
    bee = answer(http.post("/explain/imagenet?target=bee", **photo))
    assert bee["target"]["index"] == 309 and bee["target"]["score"] < 0.01
    assert np.abs(heat(bee) - heat(top)).mean() > 0.1

    features = answer(
        http.post("/features/imagenet", files=[("image", (BEE.name, BEE.read_bytes(), "image/jpeg"))])
    )
    assert features["layers"][:2] == ["features.0.0", "features.1.conv.0.0"] and len(features["layers"]) == 52
    assert (features["layer"], features["channels"], features["size"]) == ("features.0.0", 32, [112, 112])
    assert png_of(features["sobel"]).size == (3 * 225 - 1, 224)


@pytest.mark.parametrize(
    ("path", "request_", "status", "reason"),
    [
        ("/explain/mnist", upload(b"hello"), 400, "not_an_image"),
        ("/explain/mnist", {"json": {"image": "aGVsbG8="}}, 415, "unsupported_media_type"),
        ("/features/mnist", {"files": {"image": (None, b"http://127.0.0.1:9/x.png")}}, 400, "not_a_file"),
        (
            "/explain/mnist",
            {"content": b"--x--\r\n", "headers": {"content-type": EMPTY_FORM}},
            400,
            "no_images",
        ),
        (
            "/explain/mnist",
            upload(images.png(np.zeros((28, 28), np.uint8)), field="images"),
            400,
            "unexpected_field",
        ),
        ("/explain/mnist", "two digits", 400, "more_than_one_image"),
        ("/features/mnist", upload(images.bomb_png(6000, 5000)), 413, "too_many_pixels"),
        ("/explain/mnist?target=10", "a digit", 422, "unknown_target"),
        ("/explain/mnist?target=seven", "a digit", 422, "unknown_target"),
        ("/explain/mnist?layer=0", "a digit", 400, "unexpected_field"),
        ("/features/mnist?layer=7", "a digit", 422, "unknown_layer"),
        ("/features/mnist?layer=0&layer=3", "a digit", 400, "malformed_request"),
        ("/explain/cifar", "a digit", 404, "unknown_model"),
        ("/features/ants", "a digit", 503, "model_not_loaded"),
    ],
)
def test_bad_requests_are_4xx_naming_the_problem_and_the_next_one_succeeds(
    http: InProcess,
    digits: tuple[list[bytes], list[int]],
    path: str,
    request_: dict[str, Any] | str,
    status: int,
    reason: str,
) -> None:
    if request_ == "a digit":
        request_ = upload(digits[0][0])
    elif request_ == "two digits":
        request_ = upload(*digits[0][:2])
    response = http.post(path, **request_)
    assert (response.status_code, response.json()["reason"]) == (status, reason), response.text
    assert set(response.json()) == {"error", "reason"} and response.json()["error"]
    assert answer(http.post("/explain/mnist", **upload(digits[0][0])))["target"]["label"] == str(digits[1][0])


def test_other_methods_are_refused(http: InProcess) -> None:
    response = http.get("/explain/mnist")
    assert (response.status_code, response.json()["reason"]) == (405, "method_not_allowed")


def test_a_full_explanation_queue_answers_429_and_classification_goes_on(
    http: InProcess, digits: tuple[list[bytes], list[int]]
) -> None:
    """One photo explanation holds the queue (CONVNET_MAX_QUEUED_EXPLANATIONS=1): a second one is refused
    at once, and digits sent meanwhile are classified before the explanation is done."""
    photo = {"files": [("image", (ANT.name, ANT.read_bytes(), "image/jpeg"))]}
    finished: dict[str, float] = {}

    async def post(name: str, path: str, request: dict[str, Any]) -> httpx.Response:
        response = await http.client.post(path, **request)
        finished[name] = time.perf_counter()
        return response

    async def together() -> list[httpx.Response]:
        explanations = bentoml.get_current_service().explanations
        explanation = asyncio.ensure_future(post("explanation", "/explain/imagenet?target=bee", photo))
        while explanations.pending == 0:  # until it holds the queue
            await asyncio.sleep(0.001)
        refused = await post("refused", "/features/mnist", upload(digits[0][0]))
        classified = [
            await post(f"digit {i}", "/classify/mnist", {"files": [("images", ("d.png", data, "image/png"))]})
            for i, data in enumerate(digits[0])
        ]
        return [await explanation, refused, *classified]

    explanation, refused, *classified = http.runner.run(together())
    assert answer(explanation)["target"]["label"] == "bee"
    assert (refused.status_code, refused.json()["reason"], refused.headers["retry-after"]) == (
        429,
        "too_busy",
        "1",
    )
    assert [r.json()[0]["predictions"][0]["label"] for r in classified] == [str(n) for n in digits[1]]
    assert max(finished[f"digit {i}"] for i in range(3)) < finished["explanation"]


def test_the_openapi_document_describes_both_routes(http: InProcess) -> None:
    document = http.get("/docs.json").json()
    assert "/classify/mnist" in document["paths"]  # BentoML's own entries stay
    for path, parameter, answer_schema in (
        ("/explain/{model}", "target", "Explanation"),
        ("/features/{model}", "layer", "FeatureMaps"),
    ):
        operation = document["paths"][path]["post"]
        assert [p["name"] for p in operation["parameters"]] == ["model", parameter]
        assert operation["parameters"][0]["schema"]["enum"] == [
            "imagenet",
            "mnist",
            "photo",
        ]  # the loaded ones
        assert list(operation["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]) == [
            "image"
        ]
        responses = operation["responses"]
        assert (
            responses["200"]["content"]["application/json"]["schema"]["$ref"]
            == f"#/components/schemas/{answer_schema}"
        )
        assert {"400", "404", "413", "415", "422", "429", "503"} <= set(responses)
    assert {"Explanation", "FeatureMaps", "Target", "Heatmap"} <= set(document["components"]["schemas"])
