"""Service settings, read once from `CONVNET_*` environment variables, and the table of served models."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, PositiveInt, SecretStr, StringConstraints, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.devices import cuda_driver_devices

# A model name is a path segment of its routes: /classify/<name>, /models/<name>.
RouteName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*$")]


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def available_cores() -> int:
    """CPU cores this process may use: those it may run on (taskset, cpusets), at most its cgroup's CPU
    quota rounded up (a container's CPU limit in Kubernetes or podman)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
        return max(1, min(cores, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 CPU controller, or no quota ("max")
        return cores


def default_workers(device: str) -> int:
    """One worker per core on the CPU; one on a GPU, which it keeps busy alone."""
    if device != "cpu" and cuda_driver_devices():
        return 1
    return available_cores()


class ModelSettings(BaseModel):
    """One entry of the model table: served at `/classify/<name>` from the store tag `tag`."""

    tag: str
    required: bool = False  # refuse to start without it; otherwise its routes answer 503 until exported
    max_batch_size: int | None = Field(None, ge=1)  # images per forward pass; default: the global one
    max_latency_ms: PositiveInt | None = None  # queue time before 503; default: the global one
    # ONNX Runtime's threads for one forward pass; default: the worker's (`threads_per_worker`). Its
    # idle threads sleep, so a large model may use every core in each worker without harm.
    onnx_threads: PositiveInt | None = None


class ServiceSettings(BaseSettings):
    """Everything an operator can tune.

    `workers` processes each parse, decode, batch and run every model in-process; a worker runs its
    forward passes on `torch_threads` intra-op threads, so `workers x torch_threads` must fit the cores
    (PyTorch's threads busy-wait for work). A model served by ONNX Runtime may take its own thread count.
    """

    # Errors never echo the input: it may hold the API token.
    model_config = SettingsConfigDict(
        env_prefix="CONVNET_", env_ignore_empty=True, extra="ignore", hide_input_in_errors=True
    )

    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: ONNX Runtime on the CPU for models exported with their ONNX graph, else PyTorch
    backend: Literal["auto", "torch", "onnx"] = "auto"
    # One worker per core on the CPU: a worker's event loop and its Python code hold one core at most
    # (measured, MNIST at concurrency 16 on 2 cores: 1 worker 1,312 requests/s, 2 workers 2,391).
    workers: PositiveInt = Field(default_factory=lambda data: default_workers(data["device"]))
    torch_threads: PositiveInt | None = Field(None, description="default: cores // workers")
    top_k: PositiveInt = 5

    # A keep-alive connection is closed after this many responses on average (at random), so that
    # connections spread over the workers and pods (connections.py); 0: never.
    requests_per_connection: int = Field(100, ge=0)

    # Batching: at most this many images per forward pass; an image that waited in the queue longer
    # than max_latency_ms is answered 503 instead (overload). Per-model values in `models` win.
    max_batch_size: int = Field(64, ge=1)
    max_latency_ms: PositiveInt = 1000
    # Images waiting for a batch, per model and worker: past it, requests get 429 with Retry-After.
    max_queued_images: PositiveInt = 512
    # Explanations (/explain, /features) running or waiting, per worker: past it, 429 with Retry-After.
    max_queued_explanations: PositiveInt = 4

    # Input limits: anything beyond them is refused with a 4xx before it reaches a model.
    max_images_per_request: PositiveInt = 64
    max_image_pixels: PositiveInt = 25_000_000
    max_request_bytes: PositiveInt = 32 * 1024 * 1024

    # Adds a sleep to every forward pass: for testing latency alerts, never in production.
    simulated_latency_ms: float = Field(0.0, ge=0)

    # BentoML's per-request OpenTelemetry spans and access log lines on the /classify routes cost about
    # half of a worker's time at high request rates (measured); they are off there unless asked for.
    trace_requests: bool = False
    access_log: bool = False

    # Bearer-token authentication (auth.py), on when either is set: a token, and a file of tokens (one
    # per line, e.g. a mounted Secret) read at start.
    api_token: SecretStr | None = None
    api_token_file: Path | None = None

    # The model table (JSON in CONVNET_MODELS). The two names below fill its default entries.
    mnist_model: str = "mnist-convnet:latest"
    photo_model: str = "photo-classifier:latest"
    photo_max_batch_size: int = Field(8, ge=1)  # ImageNet-sized inputs: larger CPU batches are not faster
    photo_max_latency_ms: PositiveInt | None = None
    models: dict[RouteName, ModelSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _default_table_and_cores(self) -> ServiceSettings:
        if not self.models:
            self.models = {
                "mnist": ModelSettings(tag=self.mnist_model, required=True),
                "photo": ModelSettings(
                    tag=self.photo_model,
                    max_batch_size=self.photo_max_batch_size,
                    max_latency_ms=self.photo_max_latency_ms,
                    # ImageNet-sized forward passes gain from every core, even with a worker per core
                    # (measured, 2 workers: 123 photos/s on 2 threads each, 98 on 1); MNIST loses.
                    onnx_threads=available_cores(),
                ),
            }
        if self.max_queued_images < self.max_images_per_request:
            raise ValueError(
                f"CONVNET_MAX_QUEUED_IMAGES={self.max_queued_images} is below "
                f"CONVNET_MAX_IMAGES_PER_REQUEST={self.max_images_per_request}: such requests could never run"
            )
        cores = available_cores()
        if self.torch_threads is not None and self.workers * self.torch_threads > cores:
            raise ValueError(
                f"CONVNET_WORKERS={self.workers} x CONVNET_TORCH_THREADS={self.torch_threads} "
                f"oversubscribes the {cores} available cores"
            )
        return self

    @property
    def threads_per_worker(self) -> int:
        return self.torch_threads or max(1, available_cores() // self.workers)

    def onnx_threads(self, name: str) -> int:
        return self.models[name].onnx_threads or self.threads_per_worker

    def batch_size(self, name: str) -> int:
        return self.models[name].max_batch_size or self.max_batch_size

    def latency_ms(self, name: str) -> int:
        return self.models[name].max_latency_ms or self.max_latency_ms
