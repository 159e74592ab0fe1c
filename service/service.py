"""The public BentoML service (`bentoml serve` from the repository root starts it).

Flow of a request: `RequestGate` (body size, media type, file parts) -> a public, non-batched API
that reads, decodes and preprocesses its own images (errors answer 4xx for this request only) ->
`ConvNetModels.<model>`, a batchable API that merges images from concurrent requests into one
forward pass -> top-k labels per image, in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import TypeVar

import aiohttp
import anyio.to_thread
import bentoml
import torch
from bentoml.exceptions import ServiceUnavailable
from PIL import Image
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service import metrics
from service.errors import InputRejected, ModelNotLoaded, Overloaded
from service.gate import RequestGate
from service.inference import ConvNetModels, QueuedImage, catalog, settings
from service.pipeline import prepare, read_base64, read_upload, to_classification
from service.schemas import Classification
from service.settings import ModelKey

logger = logging.getLogger(__name__)

Source = TypeVar("Source")
UPLOADS = Field(default_factory=list, description="one or more image files (multipart field 'images')")
BASE64 = Field(default_factory=list, description="one or more base64-encoded image files")
ROUTES: dict[str, ModelKey] = {
    "/classify/mnist": "mnist",
    "/classify/mnist/base64": "mnist",
    "/classify/photo": "photo",
    "/classify/photo/base64": "photo",
}


async def list_models(_: Request) -> JSONResponse:
    return JSONResponse([entry.info().model_dump(mode="json") for entry in catalog.values()])


async def describe_model(request: Request) -> JSONResponse:
    key = request.path_params["model"]
    if key in catalog:
        return JSONResponse(catalog[key].info().model_dump(mode="json"))
    if key == "photo":
        return ModelNotLoaded("no photo model is loaded", error_code=HTTPStatus.NOT_FOUND).to_response()
    return JSONResponse({"error": f"unknown model {key!r}; choose mnist or photo"}, status_code=404)


models_app = Starlette(routes=[Route("/models", list_models), Route("/models/{model}", describe_model)])


@bentoml.asgi_app(models_app, path="/")
@bentoml.service(name="ImageClassifier", workers=settings.workers)
class ImageClassifier:
    models = bentoml.depends(ConvNetModels)

    def __init__(self) -> None:
        torch.set_num_threads(1)  # decoding is per request; the cores belong to the model service
        Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
        self.transforms = {key: entry.card.preprocessing.eval_transform() for key, entry in catalog.items()}

    @bentoml.api(route="/classify/mnist")
    async def classify_mnist(self, images: list[Path] = UPLOADS) -> list[Classification]:
        """Classify handwritten digits sent as multipart files; one result per image, in order."""
        return await self._classify("mnist", images, read_upload)

    @bentoml.api(route="/classify/mnist/base64")
    async def classify_mnist_base64(self, images: list[str] = BASE64) -> list[Classification]:
        """Classify digits sent as JSON `{"images": ["<base64>", ...]}`."""
        return await self._classify("mnist", images, read_base64)

    @bentoml.api(route="/classify/photo")
    async def classify_photo(self, images: list[Path] = UPLOADS) -> list[Classification]:
        """Classify photos sent as multipart files (503 while no photo model is loaded)."""
        return await self._classify("photo", images, read_upload)

    @bentoml.api(route="/classify/photo/base64")
    async def classify_photo_base64(self, images: list[str] = BASE64) -> list[Classification]:
        """Classify photos sent as JSON `{"images": ["<base64>", ...]}`."""
        return await self._classify("photo", images, read_base64)

    async def _classify(
        self, key: ModelKey, images: Sequence[Source], read: Callable[[Source], bytes]
    ) -> list[Classification] | JSONResponse:
        """Validate and preprocess this request alone, then join a batch; errors become JSON 4xx/503."""
        try:
            entry = catalog.get(key)
            if entry is None:
                raise ModelNotLoaded(f"no {key} model is loaded")
            start = time.perf_counter()
            pixels = await anyio.to_thread.run_sync(
                lambda: prepare(
                    images,
                    read,
                    self.transforms[key],
                    max_images=settings.max_images_per_request,
                    max_pixels=settings.max_image_pixels,
                )
            )
            metrics.preprocess_seconds.labels(key).observe(time.perf_counter() - start)
            queued = [QueuedImage(pixels=tensor, queued_at=time.time()) for tensor in pixels]
            probabilities = await self._infer(key, queued)
        except InputRejected as error:
            metrics.rejected_inputs_total.labels(key, error.reason).inc()
            logger.info("rejected a %s request: %s", key, error)
            return error.to_response()
        labels = entry.card.labels
        results = [
            to_classification(p, labels, settings.top_k, name=entry.tag.name, version=entry.tag.version or "")
            for p in probabilities
        ]
        for result in results:
            metrics.predictions_total.labels(key, result.predictions[0].label).inc()
        return results

    async def _infer(self, key: ModelKey, queued: list[QueuedImage]) -> list[torch.Tensor]:
        """Join a batch of the model service; retried once if the local connection drops (idempotent)."""
        infer = getattr(self.models.to_async, key)
        try:
            try:
                return await infer(queued)
            except aiohttp.ClientConnectionError as error:  # an idle pooled connection closed under us
                logger.warning("retrying a %s batch call after a dropped connection: %s", key, error)
                return await infer(queued)
        except ServiceUnavailable:  # BentoML's batcher sheds requests beyond max_latency_ms
            raise Overloaded(f"the {key} model is overloaded; retry later") from None


ImageClassifier.add_asgi_middleware(
    RequestGate,
    max_bytes=settings.max_request_bytes,
    routes=ROUTES,
    multipart_routes={path for path in ROUTES if not path.endswith("/base64")},
)
