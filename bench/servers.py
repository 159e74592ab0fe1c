"""Start a server in its own process group, wait until it is ready, read its metrics, stop its tree."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.procstats import process_tree, still_running

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_TIMEOUT_S = 300
STOP_TIMEOUT_S = 15


@dataclass(frozen=True)
class Server:
    name: str
    url: str  # http://127.0.0.1:PORT
    pid: int  # the root of its process tree (`bentoml serve`)
    log: Path  # its stdout and stderr


def check_port_free(port: int) -> None:
    """OSError naming the option to change when `port` is taken on HOST."""
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            raise OSError(f"port {port} is in use; choose another with --port") from None


def service_command(port: int) -> list[str]:
    """The project's service as a user starts it: `bash scripts/serve.sh` with its defaults."""
    return ["bash", "scripts/serve.sh", "--host", HOST, "--port", str(port)]


def bentoml_serve_command(port: int) -> list[str]:
    """`bentoml serve` of the project's service with this Python: how scripts/serve.sh ends, for a
    benchmark that has exported the models itself."""
    return [sys.executable, "-m", "bentoml", "serve", "--host", HOST, "--port", str(port)]


def stock_command(port: int) -> list[str]:
    """The stock BentoML reference service in bench/stock_service.py."""
    return [
        ".venv/bin/bentoml",
        "serve",
        "bench.stock_service:StockClassifier",
        "--host",
        HOST,
        "--port",
        str(port),
    ]


@contextmanager
def running(name: str, command: list[str], port: int, env: Mapping[str, str], log: Path) -> Iterator[Server]:
    """Run `command` from the repository root until the block ends; yields once GET /readyz is 200.

    The server gets its own process group; it and the server's process tree are stopped on the way
    out, errors included.
    """
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=REPO, env=dict(env), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        server = Server(name, f"http://{HOST}:{port}", process.pid, log)
        _wait_ready(server, process)
        yield server
    finally:
        _stop(process)


def _wait_ready(server: Server, process: subprocess.Popen[bytes]) -> None:
    start = time.monotonic()
    while time.monotonic() - start < READY_TIMEOUT_S:
        if process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with code {process.returncode}; see {server.log}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200:
                logger.info("%s ready at %s after %.0f s", server.name, server.url, time.monotonic() - start)
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{server.name} was not ready after {READY_TIMEOUT_S} s; see {server.log}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group (`bentoml serve` then stops its workers), then SIGKILL to the group
    and to whatever is left of the tree: BentoML's workers run in process groups of their own."""
    tree = process_tree(process.pid)
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop %d s after SIGTERM: killing it", process.args, STOP_TIMEOUT_S)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()
    for leftover in still_running(tree):
        logger.warning("killing process %d (%s), still running", leftover.pid, leftover.command)
        os.kill(leftover.pid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:  # the group is empty
        pass


Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Metrics:
    """Every sample of GET /metrics, keyed by (sample name, labels)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric_delta(before: Metrics, after: Metrics, name: str, **labels: str) -> float:
    """Increase of the sum of `name` samples whose labels include `labels` (a counter or _sum/_count)."""

    def total(metrics: Metrics) -> float:
        wanted = set(labels.items())
        return sum(value for (sample, found), value in metrics.items() if sample == name and wanted <= found)

    return total(after) - total(before)
