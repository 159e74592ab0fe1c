"""The ceiling reference: the in-process pipeline without HTTP, swept over batch sizes.

bytes -> PIL decode -> the model card's eval preprocessing -> forward (inference mode, channels_last,
torch threads = cores) -> top-5 labels, on the same stored weights and the same images as the servers.
"""

from __future__ import annotations

import io
import os
import statistics
import time
from collections.abc import Sequence

import torch
from PIL import Image

from bench.procstats import machine_busy_seconds
from exported import load_model

TOP_K = 5
BATCH_SIZES = (1, 4, 8, 16, 32, 64)


class RawPipeline:
    """One stored model, called on a list of encoded images, answering top-5 (label, score) per image."""

    def __init__(self, tag: str) -> None:
        exported = load_model(tag)
        self.tag = str(exported.tag)
        self.labels = exported.card.labels
        self.transform = exported.card.preprocessing.eval_transform()
        self.model = exported.model.to(memory_format=torch.channels_last)

    def __call__(self, images: Sequence[bytes]) -> list[list[tuple[str, float]]]:
        pixels = torch.stack([self.transform(Image.open(io.BytesIO(data))) for data in images])
        with torch.inference_mode():
            logits = self.model(pixels.contiguous(memory_format=torch.channels_last))
            scores, indices = logits.softmax(dim=1).topk(min(TOP_K, len(self.labels)))
        return [
            [(self.labels[index], score) for index, score in zip(row_indices, row_scores, strict=True)]
            for row_indices, row_scores in zip(indices.tolist(), scores.tolist(), strict=True)
        ]


def sweep(tag: str, images: Sequence[bytes], seconds: float) -> dict:
    """Images/s at each of BATCH_SIZES (each timed for about `seconds`, after one warm-up batch), the
    best of them, the single-image latency (p50 and p90 of the batch-size-1 calls), and the CPU that
    other processes of the machine used meanwhile, in cores."""
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    pipeline = RawPipeline(tag)
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
        "torch_threads": torch.get_num_threads(),
        "sweep": points,
        "best_images_per_s": best["images_per_s"],
        "best_batch_size": best["batch_size"],
        "single_image_ms": {"p50": round(deciles[4], 2), "p90": round(deciles[8], 2)},
        "other_cpu_cores": round(max(0.0, background), 2),
    }
