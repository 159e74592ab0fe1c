"""The Open Inference Protocol front around a recording `infer` and a tiny app (no BentoML, no model):
routes, metadata, JSON and binary-data tensors, the classification extension, and every refusal."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.errors import NotAnImage
from service.v2 import ServedModel, V2Front

LIMIT = 100_000
DIGITS = ServedModel(version="abc123", labels=tuple("0123456789"), input_shape=(1, 28, 28))
PROBABILITIES = np.array([[0.1, 0.6, 0.3, 0, 0, 0, 0, 0, 0, 0], [0.7, 0, 0, 0, 0, 0, 0, 0, 0.2, 0.1]], "f4")
calls: list[tuple[str, Any]] = []


async def infer(model: str, inputs: Sequence[bytes] | np.ndarray) -> np.ndarray:
    if isinstance(inputs, list) and b"bad" in inputs:
        raise NotAnImage(f"images[{inputs.index(b'bad')}]: not an image")
    calls.append((model, inputs))
    return PROBABILITIES[: len(inputs)]


async def other(request: Request) -> JSONResponse:
    return JSONResponse({"path": request.url.path})


APP = Starlette(routes=[Route("/v2x", other), Route("/models", other)])
APP.add_middleware(
    V2Front,
    served={"mnist": DIGITS},
    table=["mnist", "photo"],
    max_bytes=LIMIT,
    infer=infer,
    server={"name": "convnet-serve", "version": "1.0"},
)


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    calls.clear()


def request(method: str, path: str, **options: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://v2") as client:
            return await client.request(method, path, **options)

    return asyncio.run(send())


def infer_json(document: dict[str, Any], model: str = "mnist") -> httpx.Response:
    return request("POST", f"/v2/models/{model}/infer", json=document)


def images_input(*files: bytes) -> dict[str, Any]:
    data = [base64.b64encode(data).decode() for data in files]
    return {"name": "images", "datatype": "BYTES", "shape": [len(files)], "data": data}


def binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), {"inference-header-content-length": str(len(text))}


def length_prefixed(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def test_health_and_server_metadata() -> None:
    assert request("GET", "/v2/health/live").json() == {"live": True}
    assert request("GET", "/v2/health/ready").json() == {"ready": True}
    assert request("GET", "/v2").json() == {
        "name": "convnet-serve",
        "version": "1.0",
        "extensions": ["binary_tensor_data", "classification"],
    }


def test_model_metadata_and_readiness() -> None:
    metadata = request("GET", "/v2/models/mnist").json()
    assert metadata == {
        "name": "mnist",
        "versions": ["abc123"],
        "platform": "bentoml",
        "inputs": [
            {"name": "images", "datatype": "BYTES", "shape": [-1]},
            {"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 28, 28]},
        ],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
    }
    assert request("GET", "/v2/models/mnist/versions/abc123").json() == metadata
    assert request("GET", "/v2/models/mnist/ready").json() == {"name": "mnist", "ready": True}


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("GET", "/v2/models/photo", 503, "no photo model is loaded"),
        ("GET", "/v2/models/photo/ready", 503, "no photo model is loaded"),
        ("GET", "/v2/models/cifar/ready", 404, "unknown model 'cifar'; choose one of: mnist, photo"),
        ("GET", "/v2/models/mnist/versions/zzz", 404, "has no version 'zzz'"),
        ("GET", "/v2/models/mnist/stats", 404, "no route /v2/models/mnist/stats"),
        ("GET", "/v2/models/mnist/infer", 405, "takes POST, not GET"),
        ("POST", "/v2/health/live", 405, "takes GET, not POST"),
    ],
)
def test_route_errors_are_protocol_errors(method: str, path: str, status: int, words: str) -> None:
    response = request(method, path)
    assert response.status_code == status
    assert list(response.json()) == ["error"] and words in response.json()["error"]


def test_other_paths_pass_through() -> None:
    assert request("GET", "/v2x").json() == {"path": "/v2x"}
    assert request("GET", "/models").json() == {"path": "/models"}


def test_json_images_reach_infer_as_files_and_probabilities_come_back() -> None:
    response = infer_json({"id": "r1", "inputs": [images_input(b"first", b"second")]})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert calls == [("mnist", [b"first", b"second"])]
    answer = response.json()
    assert answer["model_name"] == "mnist" and answer["model_version"] == "abc123" and answer["id"] == "r1"
    (output,) = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("probabilities", "FP32", [2, 10])
    assert output["data"] == pytest.approx(PROBABILITIES.ravel().tolist())


def test_a_model_version_in_the_path_must_be_the_served_one() -> None:
    document = {"inputs": [images_input(b"a")]}
    served = request("POST", "/v2/models/mnist/versions/abc123/infer", json=document)
    assert served.status_code == 200 and served.json()["model_version"] == "abc123"
    other = request("POST", "/v2/models/mnist/versions/old/infer", json=document)
    assert other.status_code == 404 and "has no version 'old'" in other.json()["error"]
    assert calls == [("mnist", [b"a"])]


def test_classification_extension_gives_score_index_label() -> None:
    outputs = [{"name": "probabilities", "parameters": {"classification": 2}}]
    response = infer_json({"inputs": [images_input(b"a", b"b")], "outputs": outputs})
    (output,) = response.json()["outputs"]
    assert (output["datatype"], output["shape"]) == ("BYTES", [2, 2])
    assert output["data"] == ["0.600000:1:1", "0.300000:2:2", "0.700000:0:0", "0.200000:8:8"]
    many = [{"name": "probabilities", "parameters": {"classification": 99}}]
    assert infer_json({"inputs": [images_input(b"a")], "outputs": many}).json()["outputs"][0]["shape"] == [
        1,
        10,
    ]


def test_binary_images_in_and_binary_probabilities_out() -> None:
    blob = length_prefixed(b"\x00\xff", b"second\r\n")
    tensor = {
        "name": "images",
        "datatype": "BYTES",
        "shape": [2],
        "parameters": {"binary_data_size": len(blob)},
    }
    body, headers = binary_body({"inputs": [tensor], "parameters": {"binary_data_output": True}}, blob)
    response = request("POST", "/v2/models/mnist/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert calls == [("mnist", [b"\x00\xff", b"second\r\n"])]
    size = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:size])
    (output,) = answer["outputs"]
    assert output["parameters"] == {"binary_data_size": 80} and "data" not in output
    values = np.frombuffer(response.content[size:], dtype="<f4").reshape(output["shape"])
    np.testing.assert_array_equal(values, PROBABILITIES)


def test_binary_classification_output() -> None:
    outputs = [{"name": "probabilities", "parameters": {"classification": 1, "binary_data": True}}]
    response = infer_json({"inputs": [images_input(b"a")], "outputs": outputs})
    size = int(response.headers["inference-header-content-length"])
    assert response.content[size:] == length_prefixed(b"0.600000:1:1")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_pixels_reach_infer_as_a_float32_array(binary: bool) -> None:
    pixels = np.linspace(-1, 2, 2 * 28 * 28, dtype=np.float32).reshape(2, 1, 28, 28)
    tensor: dict[str, Any] = {"name": "pixels", "datatype": "FP32", "shape": [2, 1, 28, 28]}
    if binary:
        tensor["parameters"] = {"binary_data_size": pixels.nbytes}
        body, headers = binary_body({"inputs": [tensor]}, pixels.tobytes())
        response = request("POST", "/v2/models/mnist/infer", content=body, headers=headers)
    else:
        response = infer_json({"inputs": [{**tensor, "data": pixels.tolist()}]})  # nested lists
    assert response.status_code == 200, response.text
    ((model, received),) = calls
    assert model == "mnist" and received.dtype == np.float32
    np.testing.assert_array_equal(received, pixels)


def test_a_rejected_image_keeps_its_status_and_is_counted() -> None:
    def rejected() -> float:
        labels = {"model": "mnist", "reason": "not_an_image"}
        return REGISTRY.get_sample_value("convnet_rejected_inputs_total", labels) or 0

    before = rejected()
    response = infer_json({"inputs": [images_input(b"ok", b"bad")]})
    assert response.status_code == 400
    assert response.json() == {"error": "images[1]: not an image"}
    assert rejected() == before + 1


def _tensor(**fields: Any) -> dict[str, Any]:
    return {"name": "images", "datatype": "BYTES", "shape": [1], "data": ["aGk="], **fields}


@pytest.mark.parametrize(
    ("document", "status", "words"),
    [
        ([1], 400, "JSON object"),
        ({"inputs": []}, 400, "non-empty list of 'inputs'"),
        ({"inputs": [_tensor(), _tensor()]}, 400, "2 inputs: send exactly one of"),
        ({"inputs": [_tensor(name="image")]}, 400, "unknown input 'image'"),
        ({"inputs": [_tensor(datatype="UINT8")]}, 400, "datatype 'UINT8'"),
        ({"inputs": [_tensor(datatype="FP32", data=[1.0])]}, 400, "must be BYTES, not FP32"),
        ({"inputs": [_tensor(shape=[2])]}, 400, "1 elements but its shape holds 2"),
        ({"inputs": [_tensor(shape=[1, 1])]}, 400, "expected [N]"),
        ({"inputs": [_tensor(shape=[-1])]}, 400, "non-negative integers"),
        ({"inputs": [_tensor(data=[5])]}, 400, "flat list of strings"),
        ({"inputs": [_tensor(data=["%%%"])]}, 400, "images[0]: not valid base64"),
        ({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1]}]}, 400, "neither 'data'"),
        (
            {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2], "data": ["a", "b"]}]},
            400,
            "list of numbers",
        ),
        (
            {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2], "data": [[1], [2, 3]]}]},
            400,
            "list of numbers",
        ),
        ({"inputs": [_tensor()], "outputs": [{"name": "logits"}]}, 400, "unknown output 'logits'"),
        (
            {
                "inputs": [_tensor()],
                "outputs": [{"name": "probabilities", "parameters": {"classification": 0}}],
            },
            400,
            "positive number",
        ),
        ({"inputs": [_tensor()], "parameters": {"binary_data_output": "yes"}}, 400, "true or false"),
        ({"inputs": [_tensor()], "id": 7}, 400, "'id' must be a string"),
    ],
)
def test_bad_requests_are_400_naming_the_problem(document: Any, status: int, words: str) -> None:
    response = infer_json(document)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    assert calls == []


@pytest.mark.parametrize(
    ("header", "blob", "header_length", "words"),
    [
        (
            {"inputs": [_tensor(data=None, parameters={"binary_data_size": 9})]},
            b"\x05\0\0\0ab",
            None,
            "binary_data_size 9 is not within the 6 bytes left",
        ),
        (
            {"inputs": [_tensor(data=None, parameters={"binary_data_size": 6})]},
            b"\x05\0\0\0ab",
            None,
            "cut short",
        ),
        (
            {"inputs": [_tensor(data=None, parameters={"binary_data_size": 2})]},
            b"\x05\0",
            None,
            "truncated length",
        ),
        ({"inputs": [_tensor()]}, b"extra", None, "5 bytes after the inputs"),
        (
            {
                "inputs": [
                    {
                        "name": "pixels",
                        "datatype": "FP32",
                        "shape": [3],
                        "parameters": {"binary_data_size": 8},
                    }
                ]
            },
            b"\0" * 8,
            None,
            "8 bytes of FP32 data for 3 elements",
        ),
        ({"inputs": [_tensor()]}, b"", "99999", "not a size within the body"),
    ],
)
def test_bad_binary_data_is_400(
    header: dict[str, Any], blob: bytes, header_length: str | None, words: str
) -> None:
    body, headers = binary_body(header, blob)
    if header_length is not None:
        headers["inference-header-content-length"] = header_length
    response = request("POST", "/v2/models/mnist/infer", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]


def test_body_over_the_limit_is_413_and_compressed_bodies_415() -> None:
    too_large = infer_json({"inputs": [images_input(b"x" * LIMIT)]})
    assert too_large.status_code == 413 and "over the limit" in too_large.json()["error"]
    gzipped = request(
        "POST", "/v2/models/mnist/infer", content=b"\x1f\x8b", headers={"content-encoding": "gzip"}
    )
    assert gzipped.status_code == 415 and "Content-Encoding 'gzip'" in gzipped.json()["error"]


def test_inference_on_a_model_that_is_not_loaded_is_503() -> None:
    response = infer_json({"inputs": [images_input(b"a")]}, model="photo")
    assert response.status_code == 503 and response.json() == {"error": "no photo model is loaded"}
