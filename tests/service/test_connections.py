"""Keep-alive connections closed at random, one response in `mean_requests`, over a real HTTP server."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from service.connections import ConnectionRecycler
from tests.support.server import free_port

REQUESTS = 400


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(ConnectionRecycler(hello, mean_requests=10), port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def test_one_response_in_mean_requests_closes_its_connection_and_the_client_reconnects(url: str) -> None:
    random.seed(7)
    with httpx.Client() as client:
        responses = [client.get(url) for _ in range(REQUESTS)]
    assert all(response.status_code == 200 and response.text == "hello" for response in responses)
    closing = sum(response.headers.get("connection") == "close" for response in responses)
    assert REQUESTS / 10 / 2 < closing < REQUESTS / 10 * 2  # 40 expected
