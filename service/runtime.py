"""The served models of one worker process: each network on its device, behind its own batcher."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from prometheus_client import Counter
from torch import nn

from exported import Preprocessing, load_model
from exported.store import ONNX_FILE, verified_file
from service import metrics
from service.batcher import MicroBatcher
from service.catalog import CatalogEntry
from service.errors import ModelNotLoaded
from service.pipeline import prepare, prepare_jpegs_on, prepare_pixels, top_k
from service.preprocess import InputTransform, concat, normalize
from service.settings import ServiceSettings

logger = logging.getLogger(__name__)

Network = Callable[[torch.Tensor], torch.Tensor]  # uint8 batch (N, C, H, W) -> probabilities (N, classes)


def resolve_device(setting: str) -> torch.device:
    """`auto` is CUDA when torch sees a GPU, else the CPU; `cuda` without one is an error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CONVNET_DEVICE=cuda but no CUDA device is available; use auto or cpu")
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(setting)


class TorchNetwork:
    """A forward pass in PyTorch: uint8 batch (N, C, H, W) -> class probabilities (N, classes) on the CPU.

    The batch is normalised on the device and runs in channels_last (faster for convolutions on CPU
    and GPU alike); on CUDA it runs under float16 autocast, with the softmax in float32. (A CUDA
    worker's requests arrive on the GPU already: see `LoadedModel.prepare`.)
    """

    def __init__(self, model: nn.Module, spec: Preprocessing, device: torch.device) -> None:
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        self.spec = spec
        self.device = device
        self.cuda = device.type == "cuda"

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            batch = normalize(pixels.to(self.device), self.spec).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.cuda):
                logits = self.model(batch)
            return logits.float().softmax(dim=1).cpu()


class OnnxNetwork:
    """The same forward pass on ONNX Runtime's CPU provider, from the graph exported with the weights."""

    def __init__(self, graph: Path, spec: Preprocessing, threads: int) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle intra-op threads would spin for work, taking CPU from the worker's HTTP event loop.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.spec = spec

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        batch = normalize(pixels, self.spec).numpy()
        (logits,) = self.session.run(None, {"pixels": batch})
        return torch.from_numpy(logits).softmax(dim=1)


def load_network(entry: CatalogEntry, settings: ServiceSettings, device: torch.device) -> Network:
    """The backend the settings ask for: `auto` is ONNX Runtime on the CPU when the model was exported
    with its ONNX graph (`python -m training export --onnx`), else PyTorch."""
    stored = entry.ref.stored
    graph = Path(stored.path_of(ONNX_FILE))
    backend = settings.backend
    if backend == "auto":
        backend = "onnx" if device.type == "cpu" and graph.is_file() else "torch"
    if backend == "torch":
        return TorchNetwork(load_model(str(entry.tag)).model, entry.card.preprocessing, device)
    if device.type != "cpu":
        raise RuntimeError("CONVNET_BACKEND=onnx runs on the CPU only; use torch (or auto) on CUDA")
    if not graph.is_file():
        raise RuntimeError(
            f"CONVNET_BACKEND=onnx but {entry.tag} has no ONNX graph: export it with "
            "`python -m training export <run> --onnx`"
        )
    graph = verified_file(stored, entry.card, ONNX_FILE)
    return OnnxNetwork(graph, entry.card.preprocessing, settings.threads_per_worker)


def delayed(network: Network, seconds: float) -> Network:
    """CONVNET_SIMULATED_LATENCY_MS: every forward pass takes `seconds` longer (for alert tests)."""

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        probabilities = network(pixels)
        time.sleep(seconds)
        return probabilities

    return forward


class LoadedModel:
    """A loaded model: its input transform, its network and its batcher."""

    def __init__(self, entry: CatalogEntry, settings: ServiceSettings, device: torch.device) -> None:
        self.entry = entry
        self.settings = settings
        self.device = device
        spec = entry.card.preprocessing
        self.transform = InputTransform(spec, max_pixels=settings.max_image_pixels)
        network = load_network(entry, settings, device)
        if settings.simulated_latency_ms:
            network = delayed(network, settings.simulated_latency_ms / 1000)
        max_batch_size = settings.batch_size(entry.name)
        blank = torch.zeros(max_batch_size, spec.channels, *spec.input_size, dtype=torch.uint8)
        for size in (1, max_batch_size):  # warm-up: first calls allocate and pick kernels
            network(blank[:size])
        self.batcher = MicroBatcher(
            entry.name,
            network,
            max_batch_size=max_batch_size,
            max_latency_s=settings.latency_ms(entry.name) / 1000,
            max_queued=settings.max_queued_images,
            join=concat,
        )
        self._preprocess_seconds = metrics.preprocess_seconds.labels(entry.name)
        self._predicted: dict[str, Counter] = {}  # label -> its counter, created on first use
        metrics.model_info.labels(
            entry.name, entry.tag.name, entry.tag.version, entry.card.arch, device.type
        ).set(1)
        logger.info(
            "serving %s as %s (%s, %d classes), backend %s, on %s, %d threads, batches of up to %d",
            entry.tag,
            entry.name,
            entry.card.arch,
            len(entry.card.labels),
            settings.backend,
            device,
            torch.get_num_threads(),
            max_batch_size,
        )

    async def classify(self, files: Sequence[bytes]) -> list[dict[str, Any]]:
        """The top-k labels of each image file, in order."""
        probabilities = await self.probabilities(files)
        tag, labels = self.entry.tag, self.entry.card.labels
        return top_k(probabilities, labels, self.settings.top_k, name=tag.name, version=tag.version or "")

    async def probabilities(self, files: Sequence[bytes]) -> torch.Tensor:
        """Decode and preprocess this request's images, join a batch: their probabilities (k, classes)."""
        start = time.perf_counter()
        pixels = self.prepare(files)
        self._preprocess_seconds.observe(time.perf_counter() - start)
        return await self._submit(pixels)

    async def probabilities_of_pixels(self, pixels: np.ndarray) -> torch.Tensor:
        """The same for already-preprocessed float32 pixels (k, C, H, W), normalised as the card says."""
        start = time.perf_counter()
        batch = prepare_pixels(
            pixels, self.entry.card.preprocessing, max_images=self.settings.max_images_per_request
        )
        self._preprocess_seconds.observe(time.perf_counter() - start)
        return await self._submit(batch.to(self.device))

    async def _submit(self, pixels: torch.Tensor) -> torch.Tensor:
        probabilities = await self.batcher.submit(pixels)
        labels = self.entry.card.labels
        for index in probabilities.argmax(dim=1).tolist():
            label = labels[index]
            if label not in self._predicted:
                self._predicted[label] = metrics.predictions_total.labels(self.entry.name, label)
            self._predicted[label].inc()
        return probabilities

    def prepare(self, files: Sequence[bytes]) -> torch.Tensor:
        """The request's images as one uint8 tensor on the model's device.

        On CUDA, a request of JPEG files is decoded on the GPU with nvJPEG (and resized there); anything
        else is decoded on the CPU and copied over from pinned memory without blocking.
        """
        limits = {
            "max_images": self.settings.max_images_per_request,
            "max_pixels": self.settings.max_image_pixels,
        }
        if self.device.type != "cuda":
            return prepare(files, self.transform, **limits)
        pixels = prepare_jpegs_on(self.device, files, self.transform, **limits)
        if pixels is None:
            pixels = prepare(files, self.transform, **limits).pin_memory().to(self.device, non_blocking=True)
        return pixels


class LoadedModels:
    """Every model of the catalog, loaded in this worker process."""

    def __init__(self, catalog: dict[str, CatalogEntry], settings: ServiceSettings) -> None:
        torch.set_num_threads(settings.threads_per_worker)
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
