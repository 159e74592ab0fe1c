"""The bearer-token middleware around a tiny app (no BentoML), and reading the configured tokens."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from service.auth import OPEN_PATHS, BearerAuth, read_tokens
from service.settings import ServiceSettings

TOKENS = ["first-token", "second.token~rotated+/=="]


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"{request.method} {request.url.path}")


async def hello(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


APP = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"]), WebSocketRoute("/ws", hello)])
APP.add_middleware(BearerAuth, tokens=TOKENS)


def request(method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=APP), base_url="http://auth"
        ) as client:
            return await client.request(method, path, headers=headers)

    return asyncio.run(send())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"error": "unauthorized", "reason": "unauthorized"}


@pytest.mark.parametrize("path", ["/classify/mnist", "/v2/models/mnist/infer", "/models", "/docs.json", "/"])
@pytest.mark.parametrize(
    "headers",
    [
        None,
        bearer("wrong-token"),
        bearer(""),
        bearer(TOKENS[0] + "x"),
        bearer(TOKENS[0][:-1]),
        {"Authorization": f"Basic {TOKENS[0]}"},
        {"Authorization": TOKENS[0]},
    ],
    ids=["missing", "wrong", "empty", "longer", "shorter", "basic", "no-scheme"],
)
def test_a_request_without_a_valid_token_is_refused(path: str, headers: dict[str, str] | None) -> None:
    assert_refused(request("POST", path, headers))


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_every_configured_token_passes(token: str, scheme: str) -> None:
    response = request("POST", "/classify/mnist", {"Authorization": f"{scheme} {token}"})
    assert (response.status_code, response.text) == (200, "POST /classify/mnist")


@pytest.mark.parametrize("path", sorted(OPEN_PATHS))
def test_probes_and_metrics_are_open(path: str) -> None:
    response = request("GET", path)
    assert (response.status_code, response.text) == (200, f"GET {path}")


def test_only_the_exact_open_paths_are_open() -> None:
    for path in ("/metrics/", "/metricsx", "/LIVEZ", "/v2/health", "/v2/health/live/x"):
        assert_refused(request("GET", path))


def test_a_websocket_needs_a_token_too() -> None:
    with TestClient(APP) as client:
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws"):
            pass
        assert refused.value.code == 1008
        with client.websocket_connect("/ws", headers=bearer(TOKENS[1])) as websocket:
            assert websocket.receive_text() == "hello"


def test_the_lifespan_passes_through() -> None:
    started: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.append(scope["type"])

    asyncio.run(BearerAuth(app, tokens=TOKENS)({"type": "lifespan"}, None, None))
    assert started == ["lifespan"]


def test_tokens_come_from_the_setting_and_the_file(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"\n  {TOKENS[0]}  \n\n{TOKENS[1]}\n")
    assert read_tokens(None, None) == []
    assert read_tokens(SecretStr("from-env"), None) == ["from-env"]
    assert read_tokens(None, token_file) == TOKENS
    assert read_tokens(SecretStr("from-env"), token_file) == ["from-env", *TOKENS]


def test_a_bad_token_file_stops_the_start_without_showing_a_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read .*missing"):
        read_tokens(None, tmp_path / "missing")
    blank = tmp_path / "blank"
    blank.write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no token"):
        read_tokens(None, blank)
    spaced = tmp_path / "spaced"
    spaced.write_text(f"{TOKENS[0]}\nsecret with spaces\n")
    with pytest.raises(ValueError, match="line 2 of .*spaced") as error:
        read_tokens(None, spaced)
    assert "secret" not in str(error.value)
    with pytest.raises(ValueError, match="CONVNET_API_TOKEN has characters") as error:
        read_tokens(SecretStr("s3cret\u00e9"), None)
    assert "s3cret" not in str(error.value)
    with pytest.raises(ValueError, match="at least one token"):
        BearerAuth(APP, tokens=[])


def test_settings_never_show_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVNET_API_TOKEN", "s3cret-token")
    settings = ServiceSettings()
    assert "s3cret-token" not in f"{settings!r} {settings}"
    assert settings.api_token is not None and settings.api_token.get_secret_value() == "s3cret-token"
    # Settings that contradict each other beside the token: the error names them, not the input.
    monkeypatch.setenv("CONVNET_MAX_QUEUED_IMAGES", "1")
    with pytest.raises(ValidationError, match="CONVNET_MAX_QUEUED_IMAGES=1 is below") as error:
        ServiceSettings()
    assert "s3cret-token" not in str(error.value)


def test_refusals_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        request("POST", "/classify/mnist", bearer("leaked-if-logged"))
        request("POST", "/classify/mnist", bearer(TOKENS[0]))
    assert "leaked-if-logged" not in caplog.text and TOKENS[0] not in caplog.text
