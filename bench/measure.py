"""One load level against a running server: the client's figures from wrk, the server's from /proc and
/metrics over the same interval."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.loadgen import run_wrk
from bench.procstats import cpu_cores, machine_busy_seconds, process_tree
from bench.servers import Server, metric_delta, scrape


@dataclass(frozen=True)
class Level:
    key: str  # e.g. "mnist c=16"
    model: str  # "mnist" or "photo": the route /classify/<model>
    concurrency: int
    seconds: float
    images_per_request: int = 1

    @property
    def route(self) -> str:
        return f"/classify/{self.model}"

    @property
    def single_image(self) -> bool:
        """One image at a time: what the raw pipeline's single-image latency compares with."""
        return self.concurrency == 1 and self.images_per_request == 1


@dataclass(frozen=True)
class BatchMetric:
    """The histogram of images per forward pass a server exports, e.g. convnet_batch_size{model=...}."""

    name: str
    label: str  # the label that tells the models apart
    prefix: str = ""  # its value is prefix + the level's model

    def labels(self, model: str) -> dict[str, str]:
        return {self.label: self.prefix + model}


IDLE_CORES = 0.15  # a server using less CPU than this has finished the requests a level left behind
IDLE_WAIT_S = 30.0


def measure(server: Server, level: Level, bodies: Path, batch_metric: BatchMetric) -> dict:
    """Run `level` with wrk and return its figures (how each is measured: bench/serve_bench.py)."""
    _wait_until_idle(server)
    metrics_before = scrape(server.url)
    tree_before = process_tree(server.pid)
    busy_before = machine_busy_seconds()
    start = time.monotonic()
    wrk = run_wrk(server.url + level.route, bodies, level.concurrency, level.seconds)
    elapsed = time.monotonic() - start
    busy = (machine_busy_seconds() - busy_before) / elapsed
    tree_after = process_tree(server.pid)
    metrics_after = scrape(server.url)

    per_process = cpu_cores(tree_before, tree_after, elapsed)
    batch_labels = batch_metric.labels(level.model)
    batches = metric_delta(metrics_before, metrics_after, f"{batch_metric.name}_count", **batch_labels)
    images = metric_delta(metrics_before, metrics_after, f"{batch_metric.name}_sum", **batch_labels)
    server_cpu = sum(per_process.values())
    return {
        **asdict(level),
        "route": level.route,
        "requests": wrk.requests,
        "requests_per_s": round(wrk.requests / wrk.seconds, 1),
        "images_per_s": round(wrk.succeeded * level.images_per_request / wrk.seconds, 1),
        "latency_ms": wrk.latency_ms,
        "errors": wrk.errors,
        "server_requests": round(
            metric_delta(metrics_before, metrics_after, "bentoml_service_request_total", endpoint=level.route)
        ),
        "server_cpu_cores": round(server_cpu, 2),
        "server_cpu_cores_by_pid": per_process,
        "client_cpu_cores": wrk.client_cpu_cores,
        "other_cpu_cores": round(max(0.0, busy - server_cpu - wrk.client_cpu_cores), 2),
        "mean_batch_size": round(images / batches, 2) if batches else None,
    }


def _wait_until_idle(server: Server) -> None:
    """Wait (IDLE_WAIT_S at most) until the server has worked off the requests that the previous level
    abandoned when wrk stopped, so that they do not take CPU from this one."""
    deadline = time.monotonic() + IDLE_WAIT_S
    while time.monotonic() < deadline:
        before = process_tree(server.pid)
        time.sleep(0.5)
        if sum(cpu_cores(before, process_tree(server.pid), 0.5).values()) < IDLE_CORES:
            return
