"""The BentoML service (`bentoml serve` from the repository root starts it).

Every worker process serves every model of the table (`CONVNET_MODELS`, by default mnist and photo)
on its own: the HTTP front (`front.ClassifyFront`, in front of BentoML's app: `fast_path.py`) parses
and checks a request, the worker decodes and preprocesses its images, the model's batcher merges them
with concurrent requests' images into one forward pass, and the front answers the top-k labels of each
image, in order. The Open Inference
Protocol's routes (`v2.V2Front`, under /v2) take the same path to the same batcher; `/models`
(`models_front.ModelsFront`) and the OpenAPI document (`openapi.DocumentFront`) are answered there too.
The explanation routes (`explain_front.ExplainFront`: /explain/<model>, /features/<model>) run on a
PyTorch copy of the model, on a thread of their own (`explanations.Explanations`), never in a
classification batch. No request leaves the process it arrived in.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from _bentoml_sdk.method import APIMethod  # what bentoml.api returns; not re-exported by bentoml
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.context import server_context
from bentoml._internal.server.http.access import AccessLogMiddleware
from pydantic import Field
from starlette.types import ASGIApp

from service.auth import BearerAuth, read_tokens
from service.catalog import build_catalog
from service.connections import ConnectionRecycler
from service.demo import PATH as DEMO_PATH
from service.demo import demo_files
from service.explain_front import ExplainFront
from service.fast_path import FastPath, RouteMetrics
from service.front import PREFIX, ClassifyFront, read_base64
from service.models_front import ModelsFront
from service.openapi import DocumentFront, amend
from service.schemas import Base64Image, Classification
from service.settings import ServiceSettings
from service.shutdown import Drain, DrainGate
from service.timeouts import RequestTimeout
from service.timeouts import install as install_request_timeout
from service.v2 import PREFIX as V2_PREFIX
from service.v2 import ServedModel, V2Front

install_request_timeout()  # before BentoML builds the app's middleware (timeouts.py says why)
settings = ServiceSettings()
catalog = build_catalog(settings)
drain = Drain()  # this worker's requests in flight, for a graceful shutdown (shutdown.py)

IMAGES_PER_REQUEST = {"min_length": 1, "max_length": settings.max_images_per_request}
UPLOADS = Field(description="one or more image files (multipart field 'images')", **IMAGES_PER_REQUEST)
BASE64 = Field(description="one or more base64-encoded image files", **IMAGES_PER_REQUEST)


class ImageClassifier:
    def __init__(self) -> None:
        from service.explanations import Explanations
        from service.runtime import LoadedModels

        self.models = LoadedModels(catalog, settings)
        self.explanations = Explanations(catalog, settings, self.models.device)
        # Everything loaded so far (torch, BentoML, the models) lives as long as the process: frozen out of
        # the garbage collector's sight, it is no longer walked by every full collection. Measured: MNIST
        # at concurrency 16 had p99 spikes of 180 ms in half of the 8 s runs, none (p99 23-27 ms) after.
        gc.collect()
        gc.freeze()
        drain.take_over_sigterm()

    async def classify(self, model: str, files: Sequence[bytes]) -> list[dict[str, Any]]:
        """Top-k labels of each image file, in order; an `InputRejected` names what is wrong."""
        return await self.models.get(model).classify(files)

    async def probabilities(self, model: str, inputs: Sequence[bytes] | np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) of image files, or of already-preprocessed float32 pixels
        (N, C, H, W); the Open Inference Protocol's inference (`v2.V2Front`)."""
        loaded = self.models.get(model)
        if isinstance(inputs, np.ndarray):
            return await loaded.probabilities_of_pixels(inputs)
        return await loaded.probabilities(inputs)

    @bentoml.on_shutdown
    def close(self) -> None:
        self.models.close()
        self.explanations.close()


def _upload_api(model: str) -> APIMethod:
    async def classify(self: ImageClassifier, images: list[Path] = UPLOADS) -> list[Classification]:
        return await self.classify(model, [path.read_bytes() for path in images])

    classify.__name__ = f"classify_{model}"  # the API's name in BentoML's schema and clients
    classify.__doc__ = f"Classify images sent as multipart files with the {model} model, one result each."
    return bentoml.api(route=f"{PREFIX}{model}")(classify)


def _base64_api(model: str) -> APIMethod:
    async def classify(self: ImageClassifier, images: list[Base64Image] = BASE64) -> list[Classification]:
        return await self.classify(model, [read_base64(text) for text in images])

    classify.__name__ = f"classify_{model}_base64"
    classify.__doc__ = f'Classify images sent as JSON {{"images": ["<base64>", ...]}} with the {model} model.'
    return bentoml.api(route=f"{PREFIX}{model}/base64")(classify)


# The loaded models become the service's APIs and its model references (which put the models into the
# bento at `bentoml build`). Over HTTP, `ClassifyFront` answers these routes before BentoML's API
# handling (front.py says why); the API methods give BentoML the routes' schema (/docs.json), its
# clients their names (`SyncHTTPClient.classify_mnist`), and in-process callers the same classification.
# A model of the table that is not in the store has no API: its routes only ever answer 503.
for _entry in catalog.values():
    setattr(ImageClassifier, f"classify_{_entry.name}", _upload_api(_entry.name))
    setattr(ImageClassifier, f"classify_{_entry.name}_base64", _base64_api(_entry.name))
    setattr(ImageClassifier, f"{_entry.name}_model", _entry.ref)


async def _classify_in_worker(model: str, files: Sequence[bytes]) -> list[dict[str, Any]]:
    return await bentoml.get_current_service().classify(model, files)


async def _infer_in_worker(model: str, inputs: Sequence[bytes] | np.ndarray) -> np.ndarray:
    return await bentoml.get_current_service().probabilities(model, inputs)


async def _explain_in_worker(model: str, image: bytes, target: str | None) -> dict[str, Any]:
    return await bentoml.get_current_service().explanations.explain(model, image, target)


async def _features_in_worker(model: str, image: bytes, layer: str | None) -> dict[str, Any]:
    return await bentoml.get_current_service().explanations.features(model, image, layer)


class ConvnetService(bentoml.Service[ImageClassifier]):
    """BentoML's service, its app behind the classify fast path (fast_path.py says why)."""

    def to_asgi(self, is_main: bool = True) -> ASGIApp:
        app = super().to_asgi(is_main)  # merges BentoML's configuration into self.config
        if settings.trace_requests:  # each classify request traced: through BentoML's whole stack
            return app
        return with_fast_path(app, timeout=self.config.get("traffic", {}).get("timeout"))


ImageClassifier = bentoml.service(
    name="ImageClassifier",
    workers=settings.workers,
    resources={"gpu": 1} if settings.device == "cuda" else {},
    tracing={} if settings.trace_requests else {"excluded_urls": [PREFIX, f"{V2_PREFIX}/"]},
    logging={"access": {"enabled": settings.access_log}},
    service_class=ConvnetService,
)(ImageClassifier)

api_tokens = read_tokens(settings.api_token, settings.api_token_file)
# Around every route the service answers, outermost first: the drain gate sees every request, then the
# bearer-token check protects everything behind it.
OWN_MIDDLEWARE: list[tuple[type, dict[str, Any]]] = [(DrainGate, {"drain": drain})]
if api_tokens:
    OWN_MIDDLEWARE.append((BearerAuth, {"tokens": api_tokens}))
if settings.requests_per_connection:
    OWN_MIDDLEWARE.append((ConnectionRecycler, {"mean_requests": settings.requests_per_connection}))

CLASSIFY: dict[str, Any] = {  # ClassifyFront's options
    "models": list(settings.models),
    "max_bytes": settings.max_request_bytes,
    "classify": _classify_in_worker,
}


def with_fast_path(app: ASGIApp, *, timeout: float | None) -> FastPath:
    """BentoML's app `app` with the classify routes answered in front of it, through the service's own
    middleware, the request timeout (BentoML's `traffic.timeout`), BentoML's access log when it is on
    and BentoML's request metrics."""
    front = ClassifyFront(app, **CLASSIFY)
    fast: ASGIApp = front
    for middleware, options in reversed(OWN_MIDDLEWARE):
        fast = middleware(fast, **options)
    if timeout:
        fast = RequestTimeout(fast, timeout=timeout)
    access_log = BentoMLContainer.api_server_config.logging.access
    if access_log.enabled.get():
        fast = AccessLogMiddleware(
            fast,
            has_request_content_length=access_log.request_content_length.get(),
            has_request_content_type=access_log.request_content_type.get(),
            has_response_content_length=access_log.response_content_length.get(),
            has_response_content_type=access_log.response_content_type.get(),
        )
    fast = RouteMetrics(
        fast,
        namespace=BentoMLContainer.api_server_config.metrics.namespace.get(),
        buckets=BentoMLContainer.duration_buckets.get(),
        service_name=server_context.service_name,
        bento_name=server_context.bento_name,
        bento_version=server_context.bento_version,
    )
    return FastPath(app, answers=front.route, fast=fast)


for _middleware, _options in OWN_MIDDLEWARE:
    ImageClassifier.add_asgi_middleware(_middleware, **_options)
ImageClassifier.add_asgi_middleware(ModelsFront, catalog=catalog, table=list(settings.models))
if settings.trace_requests:
    ImageClassifier.add_asgi_middleware(ClassifyFront, **CLASSIFY)
ImageClassifier.add_asgi_middleware(
    V2Front,
    served={name: ServedModel.of(entry) for name, entry in catalog.items()},
    table=list(settings.models),
    max_bytes=settings.max_request_bytes,
    infer=_infer_in_worker,
    server={"name": "convnet-serve", "version": bentoml.__version__},
)
ImageClassifier.add_asgi_middleware(
    ExplainFront,
    models=list(settings.models),
    max_bytes=settings.max_request_bytes,
    max_pixels=settings.max_image_pixels,
    explain=_explain_in_worker,
    features=_features_in_worker,
)
ImageClassifier.add_asgi_middleware(
    DocumentFront,
    document=lambda: amend(
        ImageClassifier.openapi_spec.asdict(),
        served={name: entry.tag.version or "" for name, entry in catalog.items()},
    ),
)
ImageClassifier.mount_asgi_app(demo_files(), path=DEMO_PATH, name="demo")
