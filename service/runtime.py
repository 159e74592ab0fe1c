"""The served models of one worker process: each network on its device, behind its own batcher."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from prometheus_client import Counter

from exported import Preprocessing
from exported.store import ONNX_FILE, verified_file
from service import metrics
from service.batcher import MicroBatcher
from service.catalog import CatalogEntry
from service.devices import resolve_device
from service.errors import ModelNotLoaded
from service.pipeline import prepare, prepare_pixels, top_k
from service.preprocess import InputTransform, concat, normalize
from service.settings import ServiceSettings

logger = logging.getLogger(__name__)

# uint8 batch (N, C, H, W) -> probabilities (N, classes) on the CPU; on CUDA the batch is a tensor there
Network = Callable[[Any], np.ndarray]


class OnnxNetwork:
    """The same forward pass on ONNX Runtime's CPU provider, from the graph exported with the weights."""

    def __init__(self, graph: Path, spec: Preprocessing, threads: int) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle intra-op threads would spin for work, taking CPU from the worker's HTTP event loop.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # A memory plan kept per batch size kept growing the worker as new sizes came (measured over 4
        # passes of the benchmark's levels: RSS plateau about 300 against 315 MiB, requests/s the same).
        options.enable_mem_pattern = False
        self.session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.spec = spec
        self._input = np.empty(0, dtype=np.float32)  # the normalised batch, reused: one caller at a time

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if len(self._input) < len(pixels):
            self._input = np.empty(pixels.shape, dtype=np.float32)
        batch = normalize(pixels, self.spec, out=self._input[: len(pixels)])
        (logits,) = self.session.run(None, {"pixels": batch})
        return softmax(logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32."""
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def load_network(entry: CatalogEntry, settings: ServiceSettings, device: str) -> Network:
    """The backend the settings ask for: `auto` is ONNX Runtime on the CPU when the model was exported
    with its ONNX graph (`python -m training export --onnx`), else PyTorch."""
    stored = entry.ref.stored
    graph = Path(stored.path_of(ONNX_FILE))
    backend = settings.backend
    if backend == "auto":
        backend = "onnx" if device == "cpu" and graph.is_file() else "torch"
    if backend == "torch":
        from exported import load_model
        from service.torch_network import TorchNetwork

        model = load_model(str(entry.tag)).model
        logger.info("%s: PyTorch on %s, %d threads", entry.name, device, settings.threads_per_worker)
        return TorchNetwork(model, entry.card.preprocessing, device, settings.threads_per_worker)
    if device != "cpu":
        raise RuntimeError("CONVNET_BACKEND=onnx runs on the CPU only; use torch (or auto) on CUDA")
    if not graph.is_file():
        raise RuntimeError(
            f"CONVNET_BACKEND=onnx but {entry.tag} has no ONNX graph: export it with "
            "`python -m training export <run> --onnx`"
        )
    graph = verified_file(stored, entry.card, ONNX_FILE)
    threads = settings.onnx_threads(entry.name)
    logger.info("%s: ONNX Runtime on the CPU, %d threads", entry.name, threads)
    return OnnxNetwork(graph, entry.card.preprocessing, threads)


def delayed(network: Network, seconds: float) -> Network:
    """CONVNET_SIMULATED_LATENCY_MS: every forward pass takes `seconds` longer (for alert tests)."""

    def forward(pixels: Any) -> np.ndarray:
        probabilities = network(pixels)
        time.sleep(seconds)
        return probabilities

    return forward


class LoadedModel:
    """A loaded model: its input transform, its network and its batcher."""

    def __init__(self, entry: CatalogEntry, settings: ServiceSettings, device: str) -> None:
        self.entry = entry
        self.settings = settings
        self.device = device
        spec = entry.card.preprocessing
        self.transform = InputTransform(spec, max_pixels=settings.max_image_pixels)
        self._limits = {
            "max_images": settings.max_images_per_request,
            "max_pixels": settings.max_image_pixels,
        }
        self._prepare: Callable[..., Any] = partial(prepare, transform=self.transform)
        join: Callable[[Sequence[Any]], Any] = concat
        if device != "cpu":
            from service.torch_network import DeviceInput

            self._prepare = DeviceInput(self.transform, device)
            join = self._prepare.concat
        network = load_network(entry, settings, device)
        if settings.simulated_latency_ms:
            network = delayed(network, settings.simulated_latency_ms / 1000)
        max_batch_size = settings.batch_size(entry.name)
        blank = np.zeros((max_batch_size, spec.channels, *spec.input_size), dtype=np.uint8)
        for size in (1, max_batch_size):  # warm-up: first calls allocate and pick kernels
            network(blank[:size])
        self.batcher = MicroBatcher(
            entry.name,
            network,
            max_batch_size=max_batch_size,
            max_latency_s=settings.latency_ms(entry.name) / 1000,
            max_queued=settings.max_queued_images,
            join=join,
        )
        self._preprocess_seconds = metrics.preprocess_seconds.labels(entry.name)
        self._predicted: dict[str, Counter] = {}  # label -> its counter, created on first use
        metrics.model_info.labels(entry.name, entry.tag.name, entry.tag.version, entry.card.arch, device).set(
            1
        )
        logger.info(
            "serving %s as %s (%s, %d classes), batches of up to %d",
            entry.tag,
            entry.name,
            entry.card.arch,
            len(entry.card.labels),
            max_batch_size,
        )

    async def classify(self, files: Sequence[bytes]) -> list[dict[str, Any]]:
        """The top-k labels of each image file, in order."""
        probabilities = await self.probabilities(files)
        tag, labels = self.entry.tag, self.entry.card.labels
        return top_k(probabilities, labels, self.settings.top_k, name=tag.name, version=tag.version or "")

    async def probabilities(self, files: Sequence[bytes]) -> np.ndarray:
        """Decode and preprocess this request's images, join a batch: their probabilities (k, classes).

        The images stay uint8 until the batch: on the CPU as an array, on CUDA as a tensor on the GPU
        (`torch_network.DeviceInput`).
        """
        start = time.perf_counter()
        pixels = self._prepare(files, **self._limits)
        self._preprocess_seconds.observe(time.perf_counter() - start)
        return await self._submit(pixels)

    async def probabilities_of_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """The same for already-preprocessed float32 pixels (k, C, H, W), normalised as the card says."""
        start = time.perf_counter()
        batch = prepare_pixels(
            pixels, self.entry.card.preprocessing, max_images=self.settings.max_images_per_request
        )
        self._preprocess_seconds.observe(time.perf_counter() - start)
        if self.device != "cpu":
            import torch

            batch = torch.from_numpy(batch).to(self.device)
        return await self._submit(batch)

    async def _submit(self, pixels: Any) -> np.ndarray:
        probabilities = await self.batcher.submit(pixels)
        labels = self.entry.card.labels
        for index in probabilities.argmax(axis=1).tolist():
            label = labels[index]
            if label not in self._predicted:
                self._predicted[label] = metrics.predictions_total.labels(self.entry.name, label)
            self._predicted[label].inc()
        return probabilities


class LoadedModels:
    """Every model of the catalog, loaded in this worker process."""

    def __init__(self, catalog: dict[str, CatalogEntry], settings: ServiceSettings) -> None:
        self.device = resolve_device(settings.device)
        self.models = {name: LoadedModel(entry, settings, self.device) for name, entry in catalog.items()}

    def get(self, name: str) -> LoadedModel:
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotLoaded(f"no {name} model is loaded") from None

    def close(self) -> None:
        """Answer every queued request, then stop the batch threads."""
        for model in self.models.values():
            model.batcher.close()
