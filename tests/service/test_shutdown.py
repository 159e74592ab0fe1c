"""The drain in-process: `DrainGate` in front of a slow ASGI app, and SIGTERM taken over from a server whose
handler is a stand-in for uvicorn's (the real server: test_shutdown_e2e.py)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType, SimpleNamespace

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from service.shutdown import Drain, DrainGate


class SlowApp:
    """Answers 200 `{"path": ...}` after reading the body, once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body", False):
            pass
        self.entered += 1
        await self.release.wait()
        body = f'{{"path": "{scope["path"]}"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class StandInServer:
    """What the drain reads from uvicorn's server: its SIGTERM handler and graceful-shutdown timeout."""

    def __init__(self, timeout: float | None) -> None:
        self.config = SimpleNamespace(timeout_graceful_shutdown=timeout)
        self.stopped = asyncio.Event()
        self.signals: list[int] = []

    def handle_exit(self, signum: int, _frame: FrameType | None) -> None:
        self.signals.append(signum)
        self.stopped.set()


@pytest.fixture
def sigterm_handler() -> Iterator[None]:
    original = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, original)


def client(drain: Drain, app: SlowApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=DrainGate(app, drain=drain)), base_url="http://w"
    )


async def until(condition: Callable[[], bool], seconds: float = 5) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.001)


def test_while_serving_requests_pass_with_keep_alive() -> None:
    async def scenario() -> httpx.Response:
        app, drain = SlowApp(), Drain()
        app.release.set()
        async with client(drain, app) as http:
            return await http.post("/classify/mnist", content=b"x" * 100)

    response = asyncio.run(scenario())
    assert response.status_code == 200 and "connection" not in response.headers


def test_once_closing_readiness_and_new_requests_get_503_liveness_and_metrics_do_not() -> None:
    async def scenario() -> dict[str, httpx.Response]:
        app, drain = SlowApp(), Drain()
        app.release.set()
        drain.closing = True
        async with client(drain, app) as http:
            return {
                path: await http.post(path, content=b"x" * 100)
                if path.startswith("/classify")
                else await http.get(path)
                for path in (
                    "/readyz",
                    "/classify/mnist",
                    "/v2/health/ready",
                    "/livez",
                    "/metrics",
                    "/v2/health/live",
                )
            }

    answers = asyncio.run(scenario())
    for path in ("/readyz", "/classify/mnist"):
        assert answers[path].status_code == 503
        assert answers[path].json()["reason"] == "shutting_down"
        assert "shutting down" in answers[path].json()["error"]
        assert answers[path].headers["retry-after"] == "1" and answers[path].headers["connection"] == "close"
    assert answers["/v2/health/ready"].status_code == 503
    assert list(answers["/v2/health/ready"].json()) == ["error"]  # the protocol's error form
    for path in ("/livez", "/metrics", "/v2/health/live"):
        assert answers[path].status_code == 200 and answers[path].json() == {"path": path}


def test_sigterm_drains_the_requests_in_flight_then_stops_the_server(sigterm_handler: None) -> None:
    async def scenario() -> tuple[list[httpx.Response], httpx.Response, StandInServer, Drain]:
        app, drain, server = SlowApp(), Drain(), StandInServer(timeout=10)
        signal.signal(signal.SIGTERM, server.handle_exit)
        drain.take_over_sigterm()
        assert drain.timeout_s == 10
        async with client(drain, app) as http:
            in_flight = [asyncio.create_task(http.post("/classify/mnist", content=b"d")) for _ in range(3)]
            await until(lambda: app.entered == 3)
            os.kill(os.getpid(), signal.SIGTERM)
            await until(lambda: drain.closing)
            refused = await http.get("/readyz")
            await asyncio.sleep(0.05)
            assert not server.stopped.is_set()  # still draining
            app.release.set()
            answered = await asyncio.gather(*in_flight)
            await asyncio.wait_for(server.stopped.wait(), 5)
        return answered, refused, server, drain

    answered, refused, server, drain = asyncio.run(scenario())
    assert [r.status_code for r in answered] == [200, 200, 200]
    assert all(r.headers["connection"] == "close" for r in answered)  # answered, then closed
    assert refused.status_code == 503
    assert server.signals == [signal.SIGTERM]


def test_at_the_timeout_what_is_left_is_answered_503_and_the_server_stops(sigterm_handler: None) -> None:
    async def scenario() -> tuple[httpx.Response, StandInServer, float]:
        app, drain, server = SlowApp(), Drain(), StandInServer(timeout=0.2)
        signal.signal(signal.SIGTERM, server.handle_exit)
        drain.take_over_sigterm()
        async with client(drain, app) as http:
            stuck = asyncio.create_task(http.post("/classify/mnist", content=b"d"))
            await until(lambda: app.entered == 1)
            started = asyncio.get_running_loop().time()
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(server.stopped.wait(), 5)
            return await stuck, server, asyncio.get_running_loop().time() - started

    response, server, took = asyncio.run(scenario())
    assert response.status_code == 503 and response.json()["reason"] == "shutting_down"
    assert "graceful-shutdown timeout of 0.2 s" in response.json()["error"]
    assert 0.2 <= took < 2 and server.signals == [signal.SIGTERM]


def test_without_a_server_handler_sigterm_is_left_alone(sigterm_handler: None) -> None:
    async def scenario() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        Drain().take_over_sigterm()

    asyncio.run(scenario())
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
