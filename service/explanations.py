"""The explanations of a worker process (`/explain`, `/features`): on a thread of their own, behind a
bounded queue.

The classification path may run ONNX Runtime, and runs its batches on its own thread. Explanations need
PyTorch's gradients and a network of their own (captum hooks the layer it explains, which would fire in
the classification batches too), and run on one more thread, one at a time: they never join, nor queue
ahead of, a classification batch (they do share the worker's cores: the README says how much). A worker
holds at most `max_queued_explanations` of them, running or waiting, and refuses more at once with 429.

A model's network for explanations is a second copy of its weights: it is loaded on the model's first
explanation, with captum (and torch, in a worker that serves ONNX graphs), so that a worker that never
explains does not hold them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from service import metrics
from service.catalog import CatalogEntry
from service.errors import ModelNotLoaded, TooBusy
from service.settings import ServiceSettings

if TYPE_CHECKING:
    from service.explained_model import ExplainedModel


class Explanations:
    """Every loaded model's explanations in this worker."""

    def __init__(self, catalog: dict[str, CatalogEntry], settings: ServiceSettings, device: str) -> None:
        self.catalog = catalog
        self.settings = settings
        self.device = device
        self.max_pending = settings.max_queued_explanations
        self._pending = 0  # submitted and not yet finished
        self._lock = threading.Lock()
        self._loaded: dict[str, ExplainedModel] = {}  # used on the explanation thread only
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")

    async def explain(self, model: str, image: bytes, target: str | None) -> dict[str, Any]:
        return await self._run(model, "gradcam", lambda explained: explained.explain(image, target))

    async def features(self, model: str, image: bytes, layer: str | None) -> dict[str, Any]:
        return await self._run(model, "features", lambda explained: explained.features(image, layer))

    @property
    def pending(self) -> int:
        """Explanations running or waiting in this worker."""
        return self._pending

    def close(self) -> None:
        """Finish the explanations already submitted, then stop the thread."""
        self._thread.shutdown(wait=True)

    async def _run(
        self, name: str, kind: str, job: Callable[[ExplainedModel], dict[str, Any]]
    ) -> dict[str, Any]:
        if name not in self.catalog:
            raise ModelNotLoaded(f"no {name} model is loaded")
        with self._lock:
            if self._pending >= self.max_pending:
                raise TooBusy(
                    f"{self._pending} explanations are running or waiting in this worker "
                    f"(the limit is {self.max_pending})"
                )
            self._pending += 1
        start = time.perf_counter()
        future = self._thread.submit(lambda: job(self._model(name)))
        future.add_done_callback(self._finished)
        answer = await asyncio.wrap_future(future)
        metrics.explanation_seconds.labels(name, kind).observe(time.perf_counter() - start)
        return answer

    def _finished(self, _: Future[dict[str, Any]]) -> None:
        with self._lock:
            self._pending -= 1

    def _model(self, name: str) -> ExplainedModel:
        if name not in self._loaded:
            from service.explained_model import ExplainedModel  # captum and a network: on first use

            self._loaded[name] = ExplainedModel(self.catalog[name], self.settings, self.device)
        return self._loaded[name]
