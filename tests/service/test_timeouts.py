"""The request timeout that replaces BentoML's: the same 504, no timer left behind, errors passed on."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware as BentoTimeout
from starlette.types import Receive, Scope, Send

from service.timeouts import RequestTimeout


def live_timers(loop: asyncio.AbstractEventLoop | None = None) -> int:
    """Timers scheduled on the loop (by default the running one) and not cancelled; asyncio keeps them
    in `_scheduled`."""
    scheduled = (loop or asyncio.get_running_loop())._scheduled  # type: ignore[attr-defined]
    return sum(not handle.cancelled() for handle in scheduled)


async def answer(
    scope: Scope, receive: Receive, send: Send, *, delay: float = 0, body_delay: float = 0
) -> None:
    await asyncio.sleep(delay)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await asyncio.sleep(body_delay)
    await send({"type": "http.response.body", "body": b"ok"})


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


BENTOML_LEAVES_TIMERS = pytest.mark.xfail(
    strict=True, reason="BentoML's own middleware: when this passes, service/timeouts.py can go"
)


@pytest.mark.parametrize(
    "middleware", [RequestTimeout, pytest.param(BentoTimeout, marks=BENTOML_LEAVES_TIMERS)]
)
def test_answered_requests_leave_no_timer_behind(middleware: type) -> None:

    async def scenario() -> tuple[int, int, list[int]]:
        async with client(middleware(answer, timeout=60)) as http:
            before = live_timers()
            statuses = [(await http.get("/")).status_code for _ in range(20)]
            return before, live_timers(), statuses

    before, after, statuses = asyncio.run(scenario())
    assert statuses == [200] * 20
    assert after == before


def test_an_answer_not_started_in_time_is_a_504_and_the_app_is_cancelled() -> None:
    cancelled = asyncio.Event()

    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await answer(scope, receive, send, delay=10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def scenario() -> httpx.Response:
        async with client(RequestTimeout(stuck, timeout=0.05)) as http:
            return await http.get("/")

    response = asyncio.run(scenario())
    assert response.status_code == 504
    assert response.json() == {"error": "Not able to process the request in 0.05 seconds"}
    assert cancelled.is_set()


def test_an_answer_started_in_time_is_not_cut_off() -> None:
    async def scenario() -> httpx.Response:
        async with client(RequestTimeout(lambda *a: answer(*a, body_delay=0.2), timeout=0.1)) as http:
            return await http.get("/")

    response = asyncio.run(scenario())
    assert (response.status_code, response.text) == (200, "ok")


@pytest.mark.parametrize("error", [RuntimeError("boom"), TimeoutError("the app's own")])
def test_an_app_that_fails_before_answering_fails_at_once_not_after_the_timeout(error: Exception) -> None:
    """Its error is passed on as it is, a TimeoutError of its own too (not taken for a 504)."""

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise error

    async def scenario() -> None:
        async with client(RequestTimeout(failing, timeout=5)) as http:
            await http.get("/")

    start = time.perf_counter()
    with pytest.raises(type(error), match=str(error)):
        asyncio.run(scenario())
    assert time.perf_counter() - start < 1
