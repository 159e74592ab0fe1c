"""The classify fast path: which requests skip BentoML's app, and BentoML's request metrics for them.

The HTTP tier (test_service_http.py) and the e2e tests run every classify request through it; the
e2e tests read its metrics from a real server's /metrics (test_auth_e2e, test_overload_e2e,
test_shutdown_e2e).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from service.fast_path import FastPath, RouteMetrics
from service.front import ClassifyFront

BUCKETS = (0.01, 0.1, 1.0)
LABELS = {"service_name": "convnet", "service_version": "1", "runner_name": "ImageClassifier"}


class Recorder:
    """An ASGI app that answers 200 and records the paths it saw."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(f"{scope.get('method', scope['type'])} {scope.get('path', '')}".strip())
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})


async def unused_classify(model: str, files: Any) -> list[dict[str, Any]]:
    raise AssertionError("not called")


def test_only_the_classify_routes_of_served_models_skip_bentomls_app() -> None:
    bentoml_app, fast = Recorder(), Recorder()
    front = ClassifyFront(bentoml_app, models=["mnist"], max_bytes=1000, classify=unused_classify)
    app = FastPath(bentoml_app, answers=front.route, fast=fast)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as http:
            for method, path in [
                ("POST", "/classify/mnist"),
                ("POST", "/classify/mnist/base64"),
                ("GET", "/classify/mnist"),
                ("POST", "/classify/unknown"),
                ("GET", "/metrics"),
                ("POST", "/v2/models/mnist/infer"),
            ]:
                await http.request(method, path)
        await app({"type": "lifespan"}, None, None)  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert fast.paths == ["POST /classify/mnist", "POST /classify/mnist/base64"]
    assert bentoml_app.paths == [
        "GET /classify/mnist",
        "POST /classify/unknown",
        "GET /metrics",
        "POST /v2/models/mnist/infer",
        "lifespan",
    ]


class FailingOn(Recorder):
    """Answers 200, but raises before answering on /fail."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("path") == "/fail":
            raise RuntimeError("boom")
        await super().__call__(scope, receive, send)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def metered(app: Any, registry: CollectorRegistry) -> RouteMetrics:
    return RouteMetrics(
        app,
        namespace="bentoml_service",
        buckets=BUCKETS,
        service_name=LABELS["runner_name"],
        bento_name=LABELS["service_name"],
        bento_version=LABELS["service_version"],
        registry=registry,
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(f"bentoml_service_{name}", {**LABELS, **labels})


def test_bentomls_request_metrics_count_answers_and_failures(registry: CollectorRegistry) -> None:
    app = metered(FailingOn(), registry)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as http:
            for path in ("/classify/mnist", "/classify/mnist", "/fail"):
                try:
                    await http.post(path)
                except RuntimeError:  # the server answers 500
                    pass

    asyncio.run(scenario())
    ok = {"endpoint": "/classify/mnist", "http_response_code": "200"}
    assert sample(registry, "request_total", **ok) == 2
    assert sample(registry, "request_duration_seconds_count", **ok) == 2
    assert sample(registry, "request_duration_seconds_bucket", le="1.0", **ok) == 2
    assert sample(registry, "request_total", endpoint="/fail", http_response_code="500") == 1
    running = {"endpoint": "/classify/mnist", **LABELS}
    assert registry.get_sample_value("bentoml_service_request_in_progress", running) == 0
    assert (registry.get_sample_value("bentoml_service_last_request_timestamp_seconds", LABELS) or 0) > 0


def test_with_tracing_on_classify_requests_take_bentomls_whole_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONVNET_TRACE_REQUESTS: each classify request is traced, by BentoML's OpenTelemetry middleware."""
    monkeypatch.setenv("CONVNET_TRACE_REQUESTS", "true")
    monkeypatch.setenv("CONVNET_MODELS", '{"mnist": {"tag": "mnist-convnet:latest"}}')
    sys.modules.pop("service.service", None)  # settings are read at import
    try:
        from service.service import ImageClassifier

        assert ClassifyFront in [middleware for middleware, _ in ImageClassifier.middlewares]
        assert not isinstance(ImageClassifier.to_asgi(), FastPath)
    finally:
        sys.modules.pop("service.service", None)  # the next importer reads its own settings
