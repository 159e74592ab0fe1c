"""Serving benchmark: single-request latency and throughput at concurrency 16 for POST /classify/mnist.

Each request carries one real MNIST test digit as a PNG. Numbers go to bench/results/serve_bench.json
and .md (the latest run; the machine and settings are recorded with them).

    # against a running server (e.g. `bash scripts/serve.sh`)
    .venv/bin/python bench/serve_bench.py --url http://127.0.0.1:3000
    # or start `bentoml serve` from the repository root for the run (model store: $BENTOML_HOME)
    .venv/bin/python bench/serve_bench.py --start
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"

logger = logging.getLogger("serve_bench")


def mnist_pngs(mnist_dir: Path, count: int) -> list[bytes]:
    """The first `count` MNIST test digits, PNG-encoded."""
    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz", "rb") as idx:
        idx.read(16)
        pixels = np.frombuffer(idx.read(count * 28 * 28), dtype=np.uint8).reshape(count, 28, 28)
    pngs = []
    for digit in pixels:
        buffer = io.BytesIO()
        Image.fromarray(digit).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


@contextmanager
def started_server(port: int) -> Iterator[str]:
    """`bentoml serve` from the repository root on 127.0.0.1:port until the block ends, with the
    embedded MNIST model imported into the model store first."""
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True"}
    export = [sys.executable, "-m", "training", "export", "models/mnist"]
    subprocess.run(export, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    command = [sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"bentoml serve did not become ready (exit code {process.poll()})")
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def percentiles(latencies: list[float]) -> dict[str, float]:
    ms = np.array(latencies) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def single_request_latency(url: str, pngs: list[bytes], requests: int) -> dict[str, float]:
    latencies = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(requests):
            files = [("images", ("digit.png", pngs[i % len(pngs)], "image/png"))]
            start = time.perf_counter()
            response = client.post("/classify/mnist", files=files)
            latencies.append(time.perf_counter() - start)
            response.raise_for_status()
    return {"requests": requests, **percentiles(latencies)}


async def throughput(url: str, pngs: list[bytes], concurrency: int, requests: int) -> dict[str, float]:
    """`concurrency` clients, each sending its next request as soon as the last one is answered."""
    latencies: list[float] = []
    failures: dict[int, int] = {}
    counter = iter(range(requests))

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in counter:
            files = [("images", ("digit.png", pngs[i % len(pngs)], "image/png"))]
            start = time.perf_counter()
            response = await client.post("/classify/mnist", files=files)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                failures[response.status_code] = failures.get(response.status_code, 0) + 1
                logger.warning("%d: %s", response.status_code, response.text[:200])

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": requests,
        "failures": failures,
        "requests_per_s": round(requests / elapsed, 1),
        **percentiles(latencies),
    }


def mean_batch_size(url: str) -> tuple[float, float]:
    """Sum and count of convnet_batch_size{model="mnist"} from /metrics."""
    values = {"sum": 0.0, "count": 0.0}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        for key in values:
            if line.startswith(f'convnet_batch_size_{key}{{model="mnist"}}'):
                values[key] = float(line.split()[-1])
    return values["sum"], values["count"]


def write_results(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    single, loaded = results["single_request"], results["concurrency_16"]
    lines = [
        "# Serving benchmark: POST /classify/mnist, one 28x28 PNG digit per request",
        "",
        f"{results['date']} on {results['machine']}; model {results['model']}; "
        f"server settings: {results['server_settings']}",
        "",
        "| measurement | requests | p50 ms | p95 ms | mean ms | requests/s | mean batch |",
        "|---|---|---|---|---|---|---|",
        f"| single request (sequential) | {single['requests']} | {single['p50_ms']} | {single['p95_ms']} "
        f"| {single['mean_ms']} | | |",
        f"| concurrency 16 | {loaded['requests']} | {loaded['p50_ms']} | {loaded['p95_ms']} "
        f"| {loaded['mean_ms']} | {loaded['requests_per_s']} | {loaded['mean_batch_size']} |",
        "",
        f"Command: `{results['command']}`",
        "",
    ]
    (RESULTS / "serve_bench.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:3000")
    target.add_argument("--start", action="store_true", help="start `bentoml serve` for the run")
    parser.add_argument("--port", type=int, default=3000, help="port for --start")
    parser.add_argument("--mnist-dir", type=Path, default=MNIST_DIR)
    parser.add_argument("--single", type=int, default=300, help="sequential requests")
    parser.add_argument("--loaded", type=int, default=2000, help="requests at concurrency 16")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    pngs = mnist_pngs(args.mnist_dir, 100)
    with started_server(args.port) if args.start else _existing(args.url) as url:
        single_request_latency(url, pngs, 30)  # warm-up: connections, the batcher's calibration
        single = single_request_latency(url, pngs, args.single)
        logger.info("single request: %s", single)
        sum_before, count_before = mean_batch_size(url)
        loaded = asyncio.run(throughput(url, pngs, 16, args.loaded))
        sum_after, count_after = mean_batch_size(url)
        loaded["mean_batch_size"] = round((sum_after - sum_before) / max(1.0, count_after - count_before), 2)
        logger.info("concurrency 16: %s", loaded)

        model = httpx.get(f"{url}/models/mnist", timeout=30).json()["tag"]

    settings = {key: value for key, value in os.environ.items() if key.startswith("CONVNET_")}
    write_results(
        {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
            + (torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
            + f", load average {os.getloadavg()[0]:.1f} at the end",
            "model": model,
            "server_settings": (settings or "defaults") if args.start else "those of the server at --url",
            "command": "python bench/serve_bench.py " + " ".join(sys.argv[1:]),
            "single_request": single,
            "concurrency_16": loaded,
        }
    )
    logger.info("written to %s", RESULTS)


@contextmanager
def _existing(url: str) -> Iterator[str]:
    yield url.rstrip("/")


if __name__ == "__main__":
    main()
