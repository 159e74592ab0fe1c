"""Graceful shutdown of a worker: on SIGTERM, stop taking work, answer what was received, then exit.

A worker is a uvicorn server listening on a socket that it shares with the `bentoml serve` parent
(circus), which keeps the socket open until every worker has exited. Left to itself, uvicorn closes the
worker's copy of the socket at SIGTERM: connections opened afterwards wait unanswered in the parent's
backlog until the process exits, then are reset, and a readiness probe times out instead of failing.
So the worker takes SIGTERM over (`Drain.take_over_sigterm`) and shuts down in this order:

1. readiness (`/readyz`, `/v2/health/ready`) and every new request are answered 503 `shutting_down`
   (`DrainGate`), with `Connection: close` and `Retry-After`; the requests already received are answered
   normally, with `Connection: close`. Liveness (`/livez`, `/healthz`, `/v2/health/live`) and `/metrics`
   keep answering;
2. once no request is left in flight, or the graceful-shutdown timeout is over (`bentoml serve
   --timeout-graceful-shutdown`; the requests still running then are answered 503), uvicorn's own
   shutdown runs: it stops listening, closes the idle connections and runs the lifespan's shutdown,
   which closes the batchers (`runtime.LoadedModels.close`, by then with nothing queued); the worker
   exits.

Between the worker closing its copy of the socket and the parent closing its own (a fraction of a
second), a new connection is still reset. Shutting the shared socket down from the worker would refuse
it instead, but a worker still draining then spins on its dead listener (measured), and the workers
that `bentoml serve --reload` restarts could no longer listen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ShuttingDown
from service.v2 import PREFIX as V2_PREFIX

logger = logging.getLogger(__name__)

# Answered as usual while shutting down: a draining worker is alive, and its metrics are still read.
ALWAYS_ANSWERED = frozenset({"/livez", "/healthz", f"{V2_PREFIX}/health/live", "/metrics"})
CANCELLED_GRACE_S = 1.0  # for the requests cancelled at the timeout to send their 503

SignalHandler = Callable[[int, FrameType | None], Any]


class Drain:
    """The requests in flight in this worker, and whether it is shutting down."""

    def __init__(self) -> None:
        self.closing = False
        self.timeout_s: float | None = None  # the server's graceful-shutdown timeout; None: no limit
        self._requests: set[asyncio.Task[Any]] = set()
        self._expired: set[asyncio.Task[Any]] = set()  # cancelled at the timeout
        self._idle = asyncio.Event()
        self._idle.set()
        self._shutdown: asyncio.Task[None] | None = None  # held: the loop keeps weak references only

    @contextmanager
    def tracking(self) -> Iterator[None]:
        """The current task is a request in flight until the block ends."""
        task = asyncio.current_task()
        assert task is not None
        self._requests.add(task)
        self._idle.clear()
        try:
            yield
        finally:
            self._requests.discard(task)
            if not self._requests:
                self._idle.set()

    def expired(self) -> bool:
        """Whether the current request was cancelled because the graceful-shutdown timeout is over."""
        return asyncio.current_task() in self._expired

    def take_over_sigterm(self) -> None:
        """Run this drain before the server's own SIGTERM handling (uvicorn's, which stops the worker).

        Called in the worker's main thread, with its event loop running. Without a Python SIGTERM
        handler to precede (the service in-process, without a server), it does nothing.
        """
        stop = signal.getsignal(signal.SIGTERM)
        if not callable(stop):
            return
        self.timeout_s = _graceful_timeout(stop)
        loop = asyncio.get_running_loop()

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if not self.closing:
                self.closing = True
                loop.call_soon_threadsafe(self._start_shutdown, stop, signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

    def _start_shutdown(self, stop: SignalHandler, signum: int, frame: FrameType | None) -> None:
        self._shutdown = asyncio.get_running_loop().create_task(self._shut_down(stop, signum, frame))

    async def _shut_down(self, stop: SignalHandler, signum: int, frame: FrameType | None) -> None:
        started = time.monotonic()
        logger.info(
            "SIGTERM: not ready; answering the %d requests in flight (within %s s), refusing new ones",
            len(self._requests),
            "unlimited" if self.timeout_s is None else self.timeout_s,
        )
        try:
            await asyncio.wait_for(self._idle.wait(), self.timeout_s)
        except TimeoutError:
            self._expired = set(self._requests)
            logger.warning("%d requests still in flight at the timeout: answering 503", len(self._expired))
            for task in self._expired:
                task.cancel()
            await asyncio.wait(self._expired, timeout=CANCELLED_GRACE_S)
        logger.info("drained in %.2f s: stopping the server", time.monotonic() - started)
        stop(signum, frame)


class DrainGate:
    """ASGI middleware: counts the requests in flight for `Drain`, and refuses new ones once it closes."""

    def __init__(self, app: ASGIApp, *, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ALWAYS_ANSWERED:
            await self.app(scope, receive, send)
            return
        if self.drain.closing:
            # Read the body first: closing a connection with unread bytes resets it, and the client would
            # see an error instead of the answer.
            while (await receive()).get("more_body", False):
                pass
            await _refuse(scope, receive, send, "the server is shutting down: retry on another replica")
            return
        started = False

        async def send_closing(message: Message) -> None:
            """The response, with `Connection: close` once the drain has begun (no new request on it)."""
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if self.drain.closing:
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        with self.drain.tracking():
            try:
                await self.app(scope, receive, send_closing)
            except asyncio.CancelledError:
                if started or not self.drain.expired():
                    raise
                message = f"not answered within the graceful-shutdown timeout of {self.drain.timeout_s} s"
                await _refuse(scope, receive, send, message)


async def _refuse(scope: Scope, receive: Receive, send: Send, message: str) -> None:
    """503 `shutting_down`; on the Open Inference Protocol's routes in its error form, `{"error"}` alone."""
    error = ShuttingDown(message)
    if scope["path"] == V2_PREFIX or scope["path"].startswith(f"{V2_PREFIX}/"):
        body = json.dumps({"error": message}).encode()
        response = Response(body, error.error_code, error.headers, media_type="application/json")
    else:
        response = error.to_response()
    await response(scope, receive, send)


def _graceful_timeout(handler: SignalHandler) -> float | None:
    """The server's graceful-shutdown timeout (`bentoml serve --timeout-graceful-shutdown`), None for
    none: uvicorn's SIGTERM handler is its server's bound method `handle_exit`."""
    config = getattr(getattr(handler, "__self__", None), "config", None)
    return getattr(config, "timeout_graceful_shutdown", None)
