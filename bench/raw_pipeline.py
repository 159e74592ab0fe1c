"""The ceiling reference: the in-process pipeline without HTTP, swept over batch sizes.

bytes -> PIL decode -> the model card's eval preprocessing -> forward -> top-5 labels, on the same stored
weights and the same images as the servers, with the fastest code the project has for each step: the
service's uint8 preprocessing (equal to the card's eval transform, tested) and either backend, PyTorch
(channels_last) or ONNX Runtime, with threads = cores. The service is measured against the faster.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import bentoml
import numpy as np

from bench.procstats import machine_busy_seconds
from exported import load_model
from exported.store import ONNX_FILE
from service.decoding import decode_image
from service.pipeline import top_k
from service.preprocess import InputTransform
from service.runtime import Network, OnnxNetwork
from service.torch_network import TorchNetwork

Backend = Literal["torch", "onnx"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnx")
MAX_PIXELS = 25_000_000

TOP_K = 5
BATCH_SIZES = (1, 4, 8, 16, 32, 64)


class RawPipeline:
    """One stored model, called on a list of encoded images, answering top-5 (label, score) per image."""

    def __init__(self, tag: str, backend: Backend) -> None:
        exported = load_model(tag)
        spec = exported.card.preprocessing
        self.tag = str(exported.tag)
        self.backend = backend
        self.labels = exported.card.labels
        self.transform = InputTransform(spec)
        threads = len(os.sched_getaffinity(0))
        if backend == "torch":
            self.network: Network = TorchNetwork(exported.model, spec, "cpu", threads)
        else:
            graph = Path(bentoml.models.get(tag).path_of(ONNX_FILE))
            self.network = OnnxNetwork(graph, spec, threads)

    def __call__(self, images: Sequence[bytes]) -> list[dict]:
        min_side = self.transform.min_side
        decoded = [decode_image(data, max_pixels=MAX_PIXELS, min_side=min_side) for data in images]
        probabilities = self.network(np.stack([self.transform(image) for image in decoded]))
        return top_k(probabilities, self.labels, TOP_K, name=self.tag, version="")


def timed_calls(
    pipeline: RawPipeline, images: Sequence[bytes], batch_size: int, seconds: float
) -> list[float]:
    """Durations in seconds of `pipeline` calls on consecutive batches of `batch_size` images, for about
    `seconds` (3 calls at least), after one warm-up call."""
    batches = [images[i : i + batch_size] for i in range(0, len(images) - batch_size + 1, batch_size)]
    pipeline(batches[0])
    durations: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(durations) < 3:
        batch = batches[len(durations) % len(batches)]
        call_start = time.perf_counter()
        pipeline(batch)
        durations.append(time.perf_counter() - call_start)
    return durations


def sweep(pipeline: RawPipeline, images: Sequence[bytes], seconds: float) -> dict:
    """Images/s at each of BATCH_SIZES (each timed for about `seconds`), the best of them, the
    single-image latency (p50 and p90 of the batch-size-1 calls), and the CPU that other processes of
    the machine used meanwhile, in cores."""
    busy_before, own_before, sweep_start = machine_busy_seconds(), time.process_time(), time.perf_counter()
    timings = {size: timed_calls(pipeline, images, size, seconds) for size in BATCH_SIZES}
    elapsed = time.perf_counter() - sweep_start
    background = (machine_busy_seconds() - busy_before - (time.process_time() - own_before)) / elapsed
    points = [
        {"batch_size": size, "images_per_s": round(size * len(durations) / sum(durations), 1)}
        for size, durations in timings.items()
    ]
    best = max(points, key=lambda point: point["images_per_s"])
    deciles = statistics.quantiles([duration * 1000 for duration in timings[1]], n=10)
    return {
        "model": pipeline.tag,
        "backend": pipeline.backend,
        "threads": len(os.sched_getaffinity(0)),
        "sweep": points,
        "best_images_per_s": best["images_per_s"],
        "best_batch_size": best["batch_size"],
        "single_image_ms": {"p50": round(deciles[4], 2), "p90": round(deciles[8], 2)},
        "other_cpu_cores": round(max(0.0, background), 2),
    }


class PairedReference:
    """The raw pipeline measured again right before and right after each level of a server.

    This machine's speed drifts by 10-20 % over minutes, so a ceiling measured once at the start is not
    what a level measured minutes later should be held against. For a level at concurrency 1 with one
    image per request this measures the single-image p50 (with the backend whose sweep had the lower
    one); for any other level, images/s at the sweep's best backend and batch size. The level's
    reference is the mean of the two measurements.
    """

    def __init__(self, sweeps: dict[str, dict], images: dict[str, Sequence[bytes]], seconds: float) -> None:
        """`sweeps`: sweep() results named "<model> <backend>"; `images`: each model's images."""
        self.images = images
        self.seconds = seconds
        self._fastest: dict[str, tuple[RawPipeline, int]] = {}  # model -> (pipeline, best batch size)
        self._quickest: dict[str, RawPipeline] = {}  # model -> the pipeline with the lowest single p50
        loaded: dict[tuple[str, Backend], RawPipeline] = {}

        def pipeline(result: dict) -> RawPipeline:
            key = (result["model"], result["backend"])
            if key not in loaded:
                loaded[key] = RawPipeline(*key)
            return loaded[key]

        for model in images:
            results = [result for name, result in sweeps.items() if name.split()[0] == model]
            best = max(results, key=lambda result: result["best_images_per_s"])
            single = min(results, key=lambda result: result["single_image_ms"]["p50"])
            self._fastest[model] = (pipeline(best), best["best_batch_size"])
            self._quickest[model] = pipeline(single)

    def around(self, model: str, single_image: bool, level: Callable[[], dict]) -> dict:
        """`level()`'s figures, with the reference measured before and after it under "raw_reference"
        (single-image p50 if `single_image`, else images/s): both measurements and their mean."""
        before = self._measure(model, single_image)
        figures = level()
        after = self._measure(model, single_image)
        figures["raw_reference"] = {
            "backend": before["backend"],
            "batch_size": before["batch_size"],
            "images_per_s": round((before["images_per_s"] + after["images_per_s"]) / 2, 1),
            "p50_ms": round((before["p50_ms"] + after["p50_ms"]) / 2, 2),
            "before": before,
            "after": after,
        }
        return figures

    def _measure(self, model: str, single_image: bool) -> dict:
        if single_image:
            pipeline, batch_size = self._quickest[model], 1
        else:
            pipeline, batch_size = self._fastest[model]
        durations = timed_calls(pipeline, self.images[model], batch_size, self.seconds)
        return {
            "backend": pipeline.backend,
            "batch_size": batch_size,
            "images_per_s": round(batch_size * len(durations) / sum(durations), 1),
            "p50_ms": round(statistics.median(durations) * 1000, 2),
        }
