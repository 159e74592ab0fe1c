"""Service settings, read once from `CONVNET_*` environment variables."""

from __future__ import annotations

import os
from functools import cached_property
from typing import Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ModelKey = Literal["mnist", "photo"]


def available_cores() -> int:
    """CPU cores this process may run on (respects taskset/cpusets)."""
    return len(os.sched_getaffinity(0))


class ServiceSettings(BaseSettings):
    """Everything an operator can tune; the decorator values of both services come from here.

    `workers` processes run for each of the two services (HTTP front and models). A model process
    uses `torch_threads` intra-op threads, a front process one, so `workers x torch_threads` must
    fit the cores.
    """

    model_config = SettingsConfigDict(env_prefix="CONVNET_", env_ignore_empty=True, extra="ignore")

    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: PositiveInt = 1
    torch_threads: PositiveInt | None = Field(None, description="default: cores // workers")
    top_k: PositiveInt = 5

    # Adaptive batching: images per forward pass and how long a request may wait in the queue
    # (BentoML answers 503 beyond it). The photo_* values override them for the photo model.
    max_batch_size: int = Field(64, ge=2)
    max_latency_ms: PositiveInt = 1000
    photo_max_batch_size: int | None = Field(None, ge=2)
    photo_max_latency_ms: PositiveInt | None = None

    # Input limits: anything beyond them is refused with a 4xx before it reaches a model.
    max_images_per_request: PositiveInt = 64
    max_image_pixels: PositiveInt = 25_000_000
    max_request_bytes: PositiveInt = 32 * 1024 * 1024

    # Adds a sleep to every forward pass: for testing latency alerts, never in production.
    simulated_latency_ms: float = Field(0.0, ge=0)

    mnist_model: str = "mnist-convnet:latest"
    photo_model: str = "photo-classifier:latest"

    @model_validator(mode="after")
    def _threads_fit_the_cores(self) -> ServiceSettings:
        cores = available_cores()
        if self.torch_threads is not None and self.workers * self.torch_threads > cores:
            raise ValueError(
                f"CONVNET_WORKERS={self.workers} x CONVNET_TORCH_THREADS={self.torch_threads} "
                f"oversubscribes the {cores} available cores"
            )
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("CONVNET_DEVICE=cuda but no CUDA device is available; use auto or cpu")
        return self

    @property
    def threads_per_worker(self) -> int:
        return self.torch_threads or max(1, available_cores() // self.workers)

    @cached_property
    def resolved_device(self) -> str:
        """`auto` becomes `cuda` when a CUDA device is visible, else `cpu`."""
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def batching(self, model: ModelKey) -> dict[str, int]:
        """`max_batch_size` and `max_latency_ms` for the model's batchable API."""
        if model == "photo":
            return {
                "max_batch_size": self.photo_max_batch_size or self.max_batch_size,
                "max_latency_ms": self.photo_max_latency_ms or self.max_latency_ms,
            }
        return {"max_batch_size": self.max_batch_size, "max_latency_ms": self.max_latency_ms}
