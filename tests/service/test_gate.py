"""The request gate in front of the classify routes, around a tiny echo app (no BentoML)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.gate import RequestGate

LIMIT = 1000


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"bytes": len(body)})


APP = Starlette(routes=[Route(path, echo, methods=["POST"]) for path in ("/upload", "/json", "/free")])
APP.add_middleware(
    RequestGate, max_bytes=LIMIT, routes={"/upload": "mnist", "/json": "mnist"}, multipart_routes={"/upload"}
)


def post(path: str, **request: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=APP), base_url="http://gate"
        ) as client:
            return await client.post(path, **request)

    return asyncio.run(send())


def test_good_upload_reaches_the_app_intact() -> None:
    response = post("/upload", files=[("images", ("a.png", b"x" * 300, "image/png"))])
    assert response.status_code == 200
    assert response.json()["bytes"] == int(response.request.headers["content-length"])


def test_declared_body_over_the_limit_is_413() -> None:
    response = post("/json", content=b"{}" * LIMIT, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["reason"] == "body_too_large"
    assert "over the limit of 1,000" in response.json()["error"]


def test_streamed_body_over_the_limit_is_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer
        for _ in range(5):
            yield b"a" * 400

    response = post("/json", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_urlencoded_form_is_415() -> None:
    response = post("/upload", data={"images": "http://127.0.0.1:9/x.png"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["error"]


def test_plain_string_in_the_file_field_is_400() -> None:
    response = post(
        "/upload",
        data={"images": "http://127.0.0.1:9/x.png"},
        files=[("images", ("a.png", b"x", "image/png"))],
    )
    assert response.status_code == 400
    assert response.json()["reason"] == "not_a_file"
    assert "never fetched" in response.json()["error"]


def test_other_fields_are_400() -> None:
    response = post("/upload", files=[("image", ("a.png", b"\xff\xd8", "image/jpeg"))])
    assert response.status_code == 400
    assert "unexpected form field 'image'" in response.json()["error"]


def test_other_routes_are_not_guarded() -> None:
    response = post("/free", content=b"a" * 2 * LIMIT, headers={"content-type": "application/json"})
    assert response.json() == {"bytes": 2 * LIMIT}
