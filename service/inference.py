"""The model service: holds the networks and runs adaptive batches, one forward pass per batch.

It is an internal dependency of the public `ImageClassifier` (`bentoml.depends`), which validates
and preprocesses every request first, so a batch holds only good tensors and one client's bad
input can never fail another client's request.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Annotated

import bentoml
import torch
from bentoml.validators import TensorSchema
from pydantic import BaseModel, Field
from torch import nn

from exported import load_model
from service import metrics
from service.catalog import Entry, build_catalog
from service.pipeline import forward
from service.settings import ModelKey, ServiceSettings

logger = logging.getLogger(__name__)

# BentoML rebuilds tensors received between the services with torch.from_numpy over read-only
# pickle buffers; nothing here writes to them.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)

settings = ServiceSettings()
catalog = build_catalog(settings)

Tensor = Annotated[torch.Tensor, TensorSchema("torch-tensor")]


class QueuedImage(BaseModel):
    """One preprocessed image on its way to a batch."""

    pixels: Tensor
    queued_at: float = Field(description="time.time() when the front handed it over")


def _resources() -> dict[str, int]:
    return {"gpu": 1} if settings.resolved_device == "cuda" else {}


# BentoML 1.4.40's client for a dependency replaces its connection pool every 100 requests or 300 s
# and closes the old one under the requests still in flight on it ("Server disconnected", a 500 for
# those clients; bentoml/BentoML#5540, #4971). The front talks to this service over a local socket,
# where recycling buys nothing, so the pool lives as long as the worker.
KEEP_CONNECTIONS = {"max_requests": 2**62, "max_age": 10.0 * 365 * 24 * 3600}


@bentoml.service(
    name="ConvNetModels",
    workers=settings.workers,
    resources=_resources(),
    runner_connection=KEEP_CONNECTIONS,
)
class ConvNetModels:
    # Class-level references put the models into the bento at `bentoml build`.
    mnist_model = catalog["mnist"].ref
    if "photo" in catalog:
        photo_model = catalog["photo"].ref

    def __init__(self) -> None:
        self.device = torch.device(settings.resolved_device)
        torch.set_num_threads(settings.threads_per_worker)
        self.networks: dict[ModelKey, nn.Module] = {key: self._load(entry) for key, entry in catalog.items()}

    @bentoml.api(batchable=True, **settings.batching("mnist"))
    def mnist(self, images: list[QueuedImage]) -> list[Tensor]:
        """Class probabilities of each image, in order (internal API)."""
        return self._run("mnist", images)

    @bentoml.api(batchable=True, **settings.batching("photo"))
    def photo(self, images: list[QueuedImage]) -> list[Tensor]:
        """Class probabilities of each image, in order (internal API)."""
        return self._run("photo", images)

    def _load(self, entry: Entry) -> nn.Module:
        """Load the network, then warm it up (batch of 1 and a full batch) before serving."""
        model = load_model(str(entry.tag), self.device).model
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        spec = entry.card.preprocessing
        blank = torch.zeros(spec.channels, *spec.input_size)
        for size in (1, settings.batching(entry.key)["max_batch_size"]):
            forward(model, [blank] * size, self.device)
        metrics.model_info.labels(
            entry.key, entry.tag.name, entry.tag.version, entry.card.arch, self.device.type
        ).set(1)
        logger.info(
            "loaded %s (%s, %d classes) on %s with %d torch threads",
            entry.tag,
            entry.card.arch,
            len(entry.card.labels),
            self.device,
            torch.get_num_threads(),
        )
        return model

    def _run(self, key: ModelKey, images: list[QueuedImage]) -> list[torch.Tensor]:
        started_at, start = time.time(), time.perf_counter()
        for image in images:
            metrics.batch_wait_seconds.labels(key).observe(max(0.0, started_at - image.queued_at))
        probabilities = forward(self.networks[key], [image.pixels for image in images], self.device)
        if settings.simulated_latency_ms:
            time.sleep(settings.simulated_latency_ms / 1000)
        metrics.inference_seconds.labels(key).observe(time.perf_counter() - start)
        metrics.batch_size.labels(key).observe(len(images))
        return list(probabilities)
