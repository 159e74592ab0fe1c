"""Soak benchmark: the service for --minutes at --load of its measured capacity, one MNIST digit per request.

    .venv/bin/python -m bench.soak               # 10 minutes of load, about 11 in all; not part of the tests
    .venv/bin/python -m bench.soak --minutes 1   # a short check of the benchmark itself

In a temporary BentoML home it exports the embedded MNIST model with its ONNX graph and starts `bentoml
serve` with the service's defaults (what scripts/serve.sh runs). It warms the service up, measures its
capacity with a closed loop (wrk, --capacity-concurrency connections, --capacity-seconds), then sends
load × capacity requests/s open-loop (bench/pacer.py) for --minutes. Each minute: requests, errors by
kind, latency percentiles from each request's scheduled time, CPU of the client, the server and the rest
of the machine, the server's RSS; the RSS of every server process before and after the soak, and its
growth. Writes bench/results/soak.json and .md (--output); the server's log goes to soak.log.tmp there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import uvloop

from bench import soak_report
from bench.loadgen import check_wrk, run_wrk, wrk_version
from bench.pacer import PacedLoad, Sample, post_requests
from bench.procstats import ProcessInfo, machine_busy_seconds, memory, process_tree
from bench.servers import REPO, Server, bentoml_serve_command, check_port_free, running
from bench.workload import MNIST_IMAGES, mnist_pngs, multipart_body, write_bodies

logger = logging.getLogger("soak")

RESULTS = REPO / "bench" / "results"
ROUTE = "/classify/mnist"
MNIST_DIGITS = 1024  # distinct test digits, sent in turn
WARM_UP_SECONDS = 5.0
SETTLE_SECONDS = 2.0  # between the capacity run and the soak

METHOD = [
    "capacity: requests/s answered 2xx by a closed loop of wrk (1 thread, --capacity-concurrency "
    "connections, bench/cycle_bodies.lua) over --capacity-seconds, after a warm-up of "
    f"{WARM_UP_SECONDS:g} s at concurrency 1",
    "soak load: bench/pacer.py, open loop at load × capacity requests/s over --connections keep-alive "
    "connections, each connection on its own fixed schedule (wrk2's model); a request that leaves late "
    "because the server fell behind counts its latency from its scheduled time",
    "per minute (by scheduled time): requests scheduled, 2xx answered per second, errors (responses "
    "outside 2xx by status, socket errors by kind), latency p50/p99/max in ms",
    "client CPU: user + system time of this benchmark process (the paced client; getrusage) ÷ wall time, "
    "in cores; server CPU: utime + stime of the server's process tree (/proc/PID/stat); other CPU: the "
    "machine's busy time (/proc/stat) minus both: other processes' load",
    "RSS and PSS of every process of the server's tree (/proc/PID/stat, /proc/PID/smaps_rollup) after "
    "/readyz answered 200 (ready), right before the soak (start: after the warm-up and the capacity run) "
    "and right after it (end); growth is end ÷ start − 1; RSS per minute is the tree's total",
]


@dataclass(frozen=True)
class Snapshot:
    """Counters read together, to take differences over an interval."""

    at: float  # time.monotonic()
    tree: list[ProcessInfo]
    machine_busy_s: float
    client_cpu_s: float

    @classmethod
    def take(cls, pid: int) -> Snapshot:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            time.monotonic(), process_tree(pid), machine_busy_seconds(), usage.ru_utime + usage.ru_stime
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10, help="minutes of load (default 10)")
    parser.add_argument("--load", type=float, default=0.8, help="share of the capacity (default 0.8)")
    parser.add_argument("--capacity-seconds", type=float, default=15.0)
    parser.add_argument("--capacity-concurrency", type=int, default=16)
    parser.add_argument("--connections", type=int, default=16, help="of the paced client (default 16)")
    parser.add_argument("--port", type=int, default=3390)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if not MNIST_IMAGES.is_file():
            raise FileNotFoundError(f"the soak needs {MNIST_IMAGES}")
        check_wrk()
        check_port_free(args.port)
    except OSError as error:
        logger.error("cannot run the soak: %s", error)
        sys.exit(2)
    args.output.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))  # unwind: stop the server
    with tempfile.TemporaryDirectory(prefix="convnet-soak-") as scratch:
        results = run(args, Path(scratch))
    (args.output / "soak.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (args.output / "soak.md").write_text(soak_report.markdown(results))
    logger.info("written to %s", args.output / "soak.{json,md}")


def run(args: argparse.Namespace, scratch: Path) -> dict:
    os.environ["BENTOML_HOME"] = str(scratch / "bentoml")
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    subprocess.run(
        [sys.executable, "-m", "training", "export", "models/mnist", "--onnx"], cwd=REPO, check=True
    )
    pngs = mnist_pngs(MNIST_DIGITS)
    bodies = write_bodies(scratch / "mnist-1", pngs, 1, "image/png")
    command = bentoml_serve_command(args.port)
    with running("service", command, args.port, os.environ, args.output / "soak.log.tmp") as server:
        url = server.url + ROUTE
        snapshots = {"ready": memory(server.pid)}
        run_wrk(url, bodies, 1, WARM_UP_SECONDS)
        closed_loop = run_wrk(url, bodies, args.capacity_concurrency, args.capacity_seconds)
        capacity = closed_loop.succeeded / closed_loop.seconds
        rate = args.load * capacity
        logger.info(
            "capacity %.1f requests/s (p99 %.1f ms, errors %s, wrk %.2f cores): soak at %.1f requests/s",
            capacity, closed_loop.latency_ms["p99"], closed_loop.errors or 0,
            closed_loop.client_cpu_cores, rate,
        )  # fmt: skip
        time.sleep(SETTLE_SECONDS)
        snapshots["start"] = memory(server.pid)
        requests = post_requests(url, [multipart_body([png], "image.png", "image/png") for png in pngs])
        minutes = uvloop.run(_soak(server, requests, rate, args.minutes, args.connections))
        snapshots["end"] = memory(server.pid)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"load average {os.getloadavg()[0]:.1f} at the end",
        "command": " ".join([".venv/bin/python -m bench.soak", *sys.argv[1:]]),
        "settings": {
            "minutes": args.minutes,
            "load": args.load,
            "connections": args.connections,
            "mnist_digits": MNIST_DIGITS,
            "server": " ".join(command[1:]),
            "wrk": wrk_version(),
            "bentoml": version("bentoml"),
            "convnet_env": {key: value for key, value in os.environ.items() if key.startswith("CONVNET_")},
        },
        "method": METHOD,
        "capacity": {
            "concurrency": args.capacity_concurrency,
            "seconds": round(closed_loop.seconds, 1),
            "requests_per_s": round(capacity, 1),
            "latency_ms": closed_loop.latency_ms,
            "errors": closed_loop.errors,
            "client_cpu_cores": closed_loop.client_cpu_cores,
        },
        "rate_per_s": round(rate, 1),
        "minutes": minutes,
        "memory": snapshots,
    }


async def _soak(
    server: Server, requests: list[bytes], rate: float, minutes: int, connections: int
) -> list[dict]:
    """The paced load for `minutes`; CPU and RSS read at each minute's end, the requests grouped by the
    minute they were scheduled in."""
    samples: list[Sample] = []
    load = PacedLoad(server.url + ROUTE, requests, rate, connections, samples.append)
    marks = [await asyncio.to_thread(Snapshot.take, server.pid)]
    start = marks[0].at
    running_load = asyncio.create_task(load.run(until=start + 60 * minutes))
    for minute in range(1, minutes + 1):
        await asyncio.sleep(max(0.0, start + 60 * minute - time.monotonic()))
        marks.append(await asyncio.to_thread(Snapshot.take, server.pid))
        logger.info("minute %d: %d requests answered so far", minute, len(samples))
    await running_load
    by_minute: list[list[Sample]] = [[] for _ in range(minutes)]
    for sample in samples:
        by_minute[min(int((sample.scheduled - start) // 60), minutes - 1)].append(sample)
    return [_minute(index + 1, by_minute[index], marks[index], marks[index + 1]) for index in range(minutes)]


def _minute(number: int, samples: list[Sample], before: Snapshot, after: Snapshot) -> dict:
    seconds = after.at - before.at
    latencies_ms = np.array([sample.latency_s * 1000 for sample in samples])
    errors: dict[str, int] = {}
    for sample in samples:
        if not (isinstance(sample.status, int) and 200 <= sample.status < 300):
            errors[str(sample.status)] = errors.get(str(sample.status), 0) + 1
    start_cpu = {process.pid: process.cpu_seconds for process in before.tree}
    server_cpu = sum(p.cpu_seconds - start_cpu.get(p.pid, 0.0) for p in after.tree) / seconds
    client_cpu = (after.client_cpu_s - before.client_cpu_s) / seconds
    busy = (after.machine_busy_s - before.machine_busy_s) / seconds
    return {
        "minute": number,
        "requests": len(samples),
        "ok_per_s": round((len(samples) - sum(errors.values())) / seconds, 1),
        "errors": errors,
        "latency_ms": {
            "p50": round(float(np.percentile(latencies_ms, 50)), 2),
            "p99": round(float(np.percentile(latencies_ms, 99)), 2),
            "max": round(float(latencies_ms.max()), 2),
        },
        "client_cpu_cores": round(client_cpu, 3),
        "server_cpu_cores": round(server_cpu, 2),
        "other_cpu_cores": round(max(0.0, busy - server_cpu - client_cpu), 2),
        "server_rss_mib": round(sum(process.rss_bytes for process in after.tree) / 2**20, 1),
    }


if __name__ == "__main__":
    main()
