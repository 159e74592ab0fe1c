"""The HTTP front of the classify routes, around a recording `classify` and a tiny app (no BentoML)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.errors import NotAnImage, TooBusy
from service.front import ClassifyFront, read_base64

LIMIT = 1000
calls: list[tuple[str, list[bytes]]] = []


async def classify(model: str, files: Sequence[bytes]) -> list[dict[str, Any]]:
    if b"bad" in files:
        raise NotAnImage(f"images[{list(files).index(b'bad')}]: not an image")
    if b"busy" in files:
        raise TooBusy("the mnist model has 512 images queued (the limit is 512)")
    calls.append((model, list(files)))
    return [{"model": model, "bytes": len(data)} for data in files]


async def other(request: Request) -> JSONResponse:
    return JSONResponse({"bytes": len(await request.body())})


APP = Starlette(
    routes=[Route("/classify/other", other, methods=["POST"]), Route("/free", other, methods=["POST"])]
)
APP.add_middleware(ClassifyFront, models=["mnist", "photo"], max_bytes=LIMIT, classify=classify)


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    calls.clear()


def post(path: str, **request: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=APP), base_url="http://front"
        ) as client:
            return await client.post(path, **request)

    return asyncio.run(send())


def upload(*files: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(files)]


def test_uploaded_files_reach_classify_intact_and_in_order() -> None:
    response = post("/classify/photo", files=upload(b"x" * 300, b"\r\n--y", b""))
    assert response.status_code == 200
    assert response.json() == [{"model": "photo", "bytes": n} for n in (300, 5, 0)]
    assert calls == [("photo", [b"x" * 300, b"\r\n--y", b""])]


def test_base64_images_are_decoded_for_classify() -> None:
    data_url = "data:image/png;base64," + base64.b64encode(b"second").decode()
    response = post(
        "/classify/mnist/base64", json={"images": [base64.b64encode(b"first").decode(), data_url]}
    )
    assert response.status_code == 200
    assert calls == [("mnist", [b"first", b"second"])]


def test_a_rejected_image_is_a_json_4xx_with_its_reason() -> None:
    response = post("/classify/mnist", files=upload(b"ok", b"bad"))
    assert response.status_code == 400
    assert response.json() == {"error": "images[1]: not an image", "reason": "not_an_image"}


def test_a_full_queue_is_429_with_retry_after() -> None:
    response = post("/classify/mnist", files=upload(b"busy"))
    assert (response.status_code, response.json()["reason"]) == (429, "too_busy")
    assert response.headers["retry-after"] == "1"


def test_declared_body_over_the_limit_is_413() -> None:
    response = post(
        "/classify/mnist/base64", content=b"{}" * LIMIT, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["reason"] == "body_too_large"
    assert "over the limit of 1,000" in response.json()["error"]


def test_streamed_body_over_the_limit_is_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer
        for _ in range(5):
            yield b"a" * 400

    response = post("/classify/mnist/base64", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_urlencoded_form_is_415() -> None:
    response = post("/classify/mnist", data={"images": "http://127.0.0.1:9/x.png"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["error"]


def test_multipart_to_the_base64_route_is_415() -> None:
    response = post("/classify/mnist/base64", files=upload(b"x"))
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]


def test_plain_string_in_the_file_field_is_400() -> None:
    response = post("/classify/mnist", data={"images": "http://127.0.0.1:9/x.png"}, files=upload(b"x"))
    assert response.status_code == 400
    assert response.json()["reason"] == "not_a_file"
    assert "never fetched" in response.json()["error"]


def test_other_fields_are_400() -> None:
    response = post("/classify/mnist", files=[("image", ("a.png", b"\xff\xd8", "image/jpeg"))])
    assert response.status_code == 400
    assert "unexpected form field 'image'" in response.json()["error"]


@pytest.mark.parametrize(
    ("content", "content_type", "words"),
    [
        (b"x", "multipart/form-data", "no boundary"),
        (
            b"--b\r\nContent-Type: image/png\r\n\r\nxx\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
            "no name",
        ),
        (b"{", "application/json", "malformed JSON"),
        (b'{"images": 5}', "application/json", "validation error"),
        (b'["a"]', "application/json", "validation error"),
    ],
)
def test_malformed_bodies_are_400(content: bytes, content_type: str, words: str) -> None:
    path = "/classify/mnist/base64" if "json" in content_type else "/classify/mnist"
    response = post(path, content=content, headers={"content-type": content_type})
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]
    assert calls == []


def test_other_routes_and_models_are_not_handled() -> None:
    for path in ("/free", "/classify/other"):
        response = post(path, content=b"a" * 2 * LIMIT, headers={"content-type": "application/json"})
        assert response.json() == {"bytes": 2 * LIMIT}
    assert calls == []


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("%%%", "not valid base64"),
        ("http://example.com/a.png", "URLs are not fetched"),
        ("YQ", "not valid base64"),
    ],
)
def test_base64_errors(text: str, words: str) -> None:
    with pytest.raises(Exception, match=words):
        read_base64(text)
