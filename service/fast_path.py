"""The classify routes answered in front of BentoML's app; every other request goes on to it.

BentoML's app takes each request through Starlette's error handler, BentoML's request metrics (five
label lookups and six metric writes), OpenTelemetry's URL checks and its timeout before the service's
own middleware sees it. For a request that takes a few hundred microseconds of CPU in all, that stack
was the largest part left (measured: the classify front under plain uvicorn answered 3,744 MNIST
requests/s at concurrency 64 where BentoML's app answered 3,150). `FastPath` checks the path first: a
classify request goes through the service's own middleware (drain, auth, connection recycling), the
request timeout and `RouteMetrics`, then `front.ClassifyFront`. BentoML's app still answers everything
else: health, /metrics, the OpenAPI document, /v2, the explanations, the demo page.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

INTERNAL_ERROR = 500


class FastPath:
    """ASGI app: the HTTP requests `answers(scope)` claims go to `fast`, everything else to `app`."""

    def __init__(self, app: ASGIApp, *, answers: Callable[[Scope], object], fast: ASGIApp) -> None:
        self.app = app
        self.answers = answers
        self.fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.answers(scope) is not None:
            await self.fast(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class RouteMetrics:
    """ASGI middleware: BentoML's request metrics, for the requests answered in front of its app.

    The series are those BentoML's `RunnerTrafficMetricsMiddleware` writes for the requests its app
    answers (`<namespace>_request_total`, `_request_duration_seconds`, `_request_in_progress`,
    `_last_request_timestamp_seconds`, with the same labels and buckets), so that dashboards, alerts and
    the autoscaler see one set. BentoML registers these names in the process's registry, so they are
    not registered again here: a worker writes every value to the multiprocess directory that
    `/metrics` reads.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        namespace: str,
        buckets: Sequence[float],
        service_name: str,
        bento_name: str,
        bento_version: str,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """`registry`: where to register the metrics (tests); by default nowhere, as the class says."""
        self.app = app
        per_request = ["endpoint", "service_name", "service_version", "http_response_code", "runner_name"]
        self._total = Counter(
            f"{namespace}_request_total", "Total number of runner RPC", per_request, registry=registry
        )
        self._duration = Histogram(
            f"{namespace}_request_duration_seconds",
            "runner RPC duration in seconds",
            per_request,
            buckets=buckets,
            registry=registry,
        )
        self._in_progress = Gauge(
            f"{namespace}_request_in_progress",
            "Total number of runner RPC in progress now",
            ["endpoint", "service_name", "service_version", "runner_name"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self._last_request = Gauge(
            f"{namespace}_last_request_timestamp_seconds",
            "Timestamp of the last received request",
            ["service_name", "service_version", "runner_name"],
            registry=registry,
        ).labels(bento_name, bento_version, service_name)
        self._bento = (bento_name, bento_version)
        self._runner = service_name
        # (endpoint, status) -> its children of the request counter and the duration histogram
        self._answered: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self._running: dict[str, Gauge] = {}  # endpoint -> its in-progress child

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint: str = scope["path"]
        started = time.perf_counter()
        self._last_request.set(time.time())
        status = INTERNAL_ERROR  # what the server answers when the app raises before answering
        answered = False

        async def send_counted(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
            elif not message.get("more_body", False):
                answered = True
                self._count(endpoint, status, started)
            await send(message)

        running = self._running.get(endpoint)
        if running is None:
            running = self._running[endpoint] = self._in_progress.labels(endpoint, *self._bento, self._runner)
        running.inc()
        try:
            await self.app(scope, receive, send_counted)
        finally:
            running.dec()
            if not answered:
                self._count(endpoint, status, started)

    def _count(self, endpoint: str, status: int, started: float) -> None:
        children = self._answered.get((endpoint, status))
        if children is None:
            labels = (endpoint, *self._bento, str(status), self._runner)
            children = self._answered[endpoint, status] = (
                self._total.labels(*labels),
                self._duration.labels(*labels),
            )
        total, duration = children
        total.inc()
        duration.observe(max(time.perf_counter() - started, 0.0))
