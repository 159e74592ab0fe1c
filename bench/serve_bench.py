"""Serving benchmark of issue #9: the service against the raw pipeline and a stock BentoML service.

    .venv/bin/python -m bench.serve_bench    # about 10 minutes (--duration: seconds per level)

In a temporary BentoML home it imports the embedded MNIST model and an ImageNet MobileNetV2 (the photo
model), times the raw in-process pipeline, then starts the service as a user does (`bash
scripts/serve.sh`, documented defaults) and the stock BentoML service (bench/stock_service.py) one
after the other and drives each with wrk, real MNIST PNGs and real JPEG photos, one image per request
unless said otherwise. Writes bench/results/serve_bench.json and .md; every target is a ratio of
figures from this one run. Server logs go to bench/results/*.log.tmp. Before each part it waits up
to --wait-quiet seconds (30) for other processes to leave the cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from importlib.metadata import version
from pathlib import Path

import torch

from bench import raw_pipeline, report
from bench.loadgen import check_wrk, run_wrk, wrk_version
from bench.measure import IDLE_CORES, IDLE_WAIT_S, BatchMetric, Level, measure
from bench.procstats import machine_busy_seconds, memory
from bench.servers import REPO, Server, check_port_free, running, service_command, stock_command
from bench.workload import MissingData, check_shared_data, mnist_pngs, photo_jpegs, write_bodies

logger = logging.getLogger("serve_bench")

RESULTS = REPO / "bench" / "results"
PHOTO_RUN = "models/mobilenet-v2-imagenet"  # the embedded ImageNet MobileNetV2, as scripts/serve.sh serves it
MNIST_DIGITS = 1024  # distinct test digits cycled by the load generator and the raw pipeline
WARM_UP_SECONDS = 3.0  # per warm-up level, before the first level, not reported
CONCURRENCY = (1, 4, 16, 64)
MNIST_PER_REQUEST = 64
BURST_CONCURRENCY = 64
PAIRED_SECONDS = 3.0  # the raw reference measured before and after each level of the service
QUIET_CORES = 0.2  # the machine counts as quiet while everything on it uses less CPU than this

METHOD = [
    "requests, requests/s, latency p50/p90/p99: wrk (1 thread, closed loop, `--timeout 120s`) and "
    "bench/cycle_bodies.lua, which cycles prebuilt multipart bodies; requests/s = completed responses "
    "(any status) ÷ wrk's run time; images/s = 2xx responses × images per request ÷ wrk's run time",
    "errors: responses outside 2xx by status (counted in the Lua `response()`), plus wrk's socket "
    "errors (connect/read/write/timeout) by kind",
    "server requests: increase of BentoML's `bentoml_service_request_total` for the route over the "
    "level (a cross-check of wrk's count; wrk does not count the requests in flight when it stops)",
    "server CPU: utime + stime summed over the server's whole process tree (/proc/PID/stat) over the "
    "level, ÷ wall time, in cores; per process in the JSON",
    "client CPU: wrk's own user + system time (getrusage of the reaped child) ÷ wall time, in cores; "
    "it runs on the same 2 cores as the server",
    "other CPU: the machine's busy time (/proc/stat) over the level minus server and client CPU, in "
    "cores: other processes' load (for the raw pipeline: the machine minus this process)",
    "mean batch: Δ`_sum` ÷ Δ`_count` of the images-per-forward-pass histogram over the level "
    "(`convnet_batch_size{model}` for the service, BentoML's `bentoml_service_adaptive_batch_size"
    "{method_name}` for the stock service)",
    "raw pipeline: bytes → PIL decode → the model card's eval preprocessing (the service's uint8 path, "
    "equal to the card's eval transform) → forward with each backend (PyTorch channels_last, ONNX "
    "Runtime; threads = cores) → softmax top-5 labels, one call per batch, in this process with no "
    "server running; images/s per batch size and the best; single-image p50 is the median batch-size-1 "
    "call; the targets' start-of-run column uses the faster backend's best images/s and single-image p50",
    f"raw reference: the raw pipeline measured again for {PAIRED_SECONDS:g} s right before and right after "
    "each level of the service (the server idle), and the mean of the two: for a level at concurrency 1 "
    "with one image per request the single-image p50 (batch 1, the backend with the lower p50 in the "
    "sweep), for any other level images/s at the sweep's best backend and batch size; the targets "
    "against the raw pipeline use it, as this machine's speed drifts by 10-20 % over minutes",
    "RSS and PSS: /proc/PID/stat and /proc/PID/smaps_rollup of every process of the server's tree, "
    f"right after /readyz answered 200 (ready), after a warm-up (warm: the service runs each of its levels "
    f"for {WARM_UP_SECONDS:g} s, so that every batch size has been made once; the stock service runs its "
    "concurrency-1 levels only, as its adaptive batcher would keep a wait learned at higher concurrency), "
    "and after the last level (end); growth is end ÷ warm, so that first allocations do not count as "
    "growth; PSS splits shared pages between the processes that map them, RSS counts them "
    "in each",
    f"each level starts once the server's process tree uses under {IDLE_CORES} cores (it has finished "
    f"the requests the previous level left in flight when wrk stopped; {IDLE_WAIT_S:g} s at most); the "
    "after-burst level "
    "(concurrency 1) follows the burst level (concurrency 64 on MNIST) that way too",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per level (default 15)")
    parser.add_argument(
        "--burst", type=float, default=20.0, help="seconds at c=64 before the after-burst level"
    )
    parser.add_argument("--raw-seconds", type=float, default=3.0, help="seconds per raw-pipeline batch size")
    parser.add_argument(
        "--port", type=int, default=3380, help="service port; the stock service uses port + 1"
    )
    parser.add_argument(
        "--wait-quiet", type=float, default=30.0, help="seconds to wait at most, before each part, "
        f"for other processes to fall under {QUIET_CORES} cores (default 30)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        check_shared_data()
        check_wrk()
        for port in (args.port, args.port + 1):
            check_port_free(port)
    except (MissingData, FileNotFoundError, OSError) as error:
        logger.error("cannot run the benchmark: %s", error)
        sys.exit(2)
    args.output.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="convnet-bench-") as scratch:
        results = run(args, Path(scratch))
    results["targets"] = report.targets(results)
    (args.output / "serve_bench.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (args.output / "serve_bench.md").write_text(report.markdown(results))
    logger.info("written to %s", args.output / "serve_bench.{json,md}")


def run(args: argparse.Namespace, scratch: Path) -> dict:
    """Everything measured, in the order: raw pipeline, service, stock service."""
    # Set before anything reads BentoML's configuration: the model store of this run and of its servers.
    os.environ["BENTOML_HOME"] = str(scratch / "bentoml")
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    started = time.monotonic()

    pngs, jpegs = mnist_pngs(MNIST_DIGITS), photo_jpegs()
    bodies = {
        ("mnist", 1): write_bodies(scratch / "mnist-1", pngs, 1, "image/png"),
        ("mnist", MNIST_PER_REQUEST): write_bodies(
            scratch / "mnist-64", pngs, MNIST_PER_REQUEST, "image/png"
        ),
        ("photo", 1): write_bodies(scratch / "photo-1", jpegs, 1, "image/jpeg"),
    }
    # What scripts/serve.sh does first; done here too so that the raw pipeline can load the model.
    for run in ("models/mnist", PHOTO_RUN):
        subprocess.run([sys.executable, "-m", "training", "export", run, "--onnx"], cwd=REPO, check=True)

    _wait_for_quiet_machine(args.wait_quiet)
    logger.info("raw pipeline, %g s per batch size", args.raw_seconds)
    images = {"mnist": pngs, "photo": jpegs}
    tags = {"mnist": "mnist-convnet:latest", "photo": "photo-classifier:latest"}
    raw = {
        f"{model} {backend}": raw_pipeline.sweep(
            raw_pipeline.RawPipeline(tags[model], backend), images[model], args.raw_seconds
        )
        for model in images
        for backend in raw_pipeline.BACKENDS
    }
    for name, result in raw.items():
        logger.info("raw %s: %s", name, result)
    paired = raw_pipeline.PairedReference(raw, images, PAIRED_SECONDS)

    seconds = args.duration
    levels = [Level(f"{model} c={c}", model, c, seconds) for model in ("mnist", "photo") for c in CONCURRENCY]
    service_levels = [
        *levels[:4],
        Level(f"mnist x{MNIST_PER_REQUEST} c=4", "mnist", 4, seconds, MNIST_PER_REQUEST),
        *levels[4:],
        Level(f"mnist c={BURST_CONCURRENCY} burst", "mnist", BURST_CONCURRENCY, args.burst),
        Level("mnist c=1 after burst", "mnist", 1, seconds),
    ]
    _wait_for_quiet_machine(args.wait_quiet)
    service = _run_server(
        "service", service_command(args.port), args.port, service_levels, bodies,
        BatchMetric("convnet_batch_size", "model"), args.output, warm_up=service_levels, paired=paired,
    )  # fmt: skip
    _wait_for_quiet_machine(args.wait_quiet)
    # The stock service is warmed up at concurrency 1 only: BentoML's adaptive batcher keeps the wait it
    # learns under load, which would slow its first levels (measured: 10.9 against 281 requests/s at
    # concurrency 1 after a warm-up at 64).
    stock = _run_server(
        "stock", stock_command(args.port + 1), args.port + 1, levels, bodies,
        BatchMetric("bentoml_service_adaptive_batch_size", "method_name", prefix="classify_"), args.output,
        warm_up=[level for level in levels if level.concurrency == 1],
    )  # fmt: skip

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        + (torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
        + f", load average {os.getloadavg()[0]:.1f} at the end",
        "command": " ".join([".venv/bin/python -m bench.serve_bench", *sys.argv[1:]]),
        "settings": {
            "seconds_per_level": seconds,
            "burst_seconds": args.burst,
            "raw_seconds_per_batch_size": args.raw_seconds,
            "wait_quiet_seconds": args.wait_quiet,
            "mnist_digits": MNIST_DIGITS,
            "photos": len(jpegs),
            "wrk": wrk_version(),
            "torch": torch.__version__,
            "bentoml": version("bentoml"),
            "convnet_env": {key: value for key, value in os.environ.items() if key.startswith("CONVNET_")},
            "total_seconds": round(time.monotonic() - started),
        },
        "method": METHOD,
        "raw": raw,
        "service": service,
        "stock": stock,
    }


def _run_server(
    name: str,
    command: list[str],
    port: int,
    levels: list[Level],
    bodies: dict[tuple[str, int], Path],
    batch_metric: BatchMetric,
    logs: Path,
    warm_up: list[Level],
    paired: raw_pipeline.PairedReference | None = None,
) -> dict:
    """Start a server, warm it up with `warm_up`, run the levels in order, each between two
    measurements of the raw reference if `paired`; its memory after ready, after the warm-up and at the
    end."""
    with running(name, command, port, os.environ, logs / f"{name}.log.tmp") as server:
        snapshots = {"ready": memory(server.pid)}
        _warm_up(server, warm_up, bodies)
        snapshots["warm"] = memory(server.pid)
        figures = []
        for level in levels:
            body = bodies[level.model, level.images_per_request]
            run_level = partial(measure, server, level, body, batch_metric)
            if paired is None:
                figures.append(run_level())
            else:
                figures.append(paired.around(level.model, level.single_image, run_level))
            _log_level(server, figures[-1])
        snapshots["end"] = memory(server.pid)
    return {"command": " ".join(command), "levels": figures, "memory": snapshots}


def _warm_up(server: Server, levels: list[Level], bodies: dict[tuple[str, int], Path]) -> None:
    """Every level of the run, briefly, so that each worker has made batches of every size it will
    make (and their buffers) before the memory counted as warm."""
    for level in levels:
        url = f"{server.url}{level.route}"
        run_wrk(url, bodies[level.model, level.images_per_request], level.concurrency, WARM_UP_SECONDS)


def _log_level(server: Server, figures: dict) -> None:
    logger.info(
        "%s %s: %.1f req/s, %.1f images/s, p50 %.1f ms, p99 %.1f ms, errors %s, server %.2f cores, "
        "client %.2f cores, batch %s",
        server.name, figures["key"], figures["requests_per_s"], figures["images_per_s"],
        figures["latency_ms"]["p50"], figures["latency_ms"]["p99"], figures["errors"] or 0,
        figures["server_cpu_cores"], figures["client_cpu_cores"], figures["mean_batch_size"],
    )  # fmt: skip


def _wait_for_quiet_machine(limit: float) -> None:
    """Wait until the machine's CPU use over 5 s is under QUIET_CORES, for `limit` seconds at most
    (this machine may be shared; the report's 'other CPU' column shows what overlapped anyway)."""
    deadline = time.monotonic() + limit
    while True:
        before = machine_busy_seconds()
        time.sleep(5)
        busy = (machine_busy_seconds() - before) / 5
        if busy < QUIET_CORES:
            return
        if time.monotonic() >= deadline:
            logger.warning("other processes still use %.2f cores: measuring anyway", busy)
            return
        logger.info("other processes use %.2f cores: waiting for a quiet machine", busy)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """Unwind as on Ctrl-C, so that the servers started so far are stopped and the scratch removed."""
    sys.exit(128 + signum)


if __name__ == "__main__":
    main()
