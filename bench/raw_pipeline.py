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
from collections.abc import Sequence
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


def sweep(tag: str, images: Sequence[bytes], seconds: float, backend: Backend) -> dict:
    """Images/s at each of BATCH_SIZES (each timed for about `seconds`, after one warm-up batch), the
    best of them, the single-image latency (p50 and p90 of the batch-size-1 calls), and the CPU that
    other processes of the machine used meanwhile, in cores."""
    pipeline = RawPipeline(tag, backend)
    timings: dict[int, list[float]] = {}
    busy_before, own_before, sweep_start = machine_busy_seconds(), time.process_time(), time.perf_counter()
    for batch_size in BATCH_SIZES:
        batches = [images[i : i + batch_size] for i in range(0, len(images) - batch_size + 1, batch_size)]
        pipeline(batches[0])
        durations = timings[batch_size] = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(durations) < 3:
            batch = batches[len(durations) % len(batches)]
            call_start = time.perf_counter()
            pipeline(batch)
            durations.append(time.perf_counter() - call_start)
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
        "backend": backend,
        "threads": len(os.sched_getaffinity(0)),
        "sweep": points,
        "best_images_per_s": best["images_per_s"],
        "best_batch_size": best["batch_size"],
        "single_image_ms": {"p50": round(deciles[4], 2), "p90": round(deciles[8], 2)},
        "other_cpu_cores": round(max(0.0, background), 2),
    }
