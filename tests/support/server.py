"""A real `bentoml serve` of the service in a subprocess, with its own model store, for the e2e tests
(tests/service, tests/monitoring)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import psutil
from safetensors.torch import save_file
from torch import Tensor

from exported import create_model
from exported.preprocessing import MNIST_PREPROCESSING, Preprocessing
from training.rundir import RunDir, RunInfo

REPO = Path(__file__).resolve().parents[2]
EMBEDDED_MNIST = REPO / "models" / "mnist"
EMBEDDED_PHOTO = REPO / "models" / "mobilenet-v2-imagenet"  # exported with --if-absent, as serve.sh does
WORKER_MODULE = "_bentoml_impl.worker.service"  # what `bentoml serve` runs in each worker process


def free_port() -> int:
    """A free TCP port below 32768 (the ephemeral range starts above it)."""
    for _ in range(100):
        port = random.randint(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


def finished_run(
    path: Path,
    task: str,
    arch: str,
    labels: list[str],
    preprocessing: Preprocessing,
    weights: dict[str, Tensor],
) -> Path:
    """A finished run directory holding `weights` (a state dict of `arch`), ready for export."""
    run = RunDir.create(path)
    save_file(weights, run.weights)
    run.write_info(
        RunInfo(task=task, arch=arch, labels=labels, preprocessing=preprocessing, config={}, data_sha256={})
    )
    run.finish()  # export takes finished runs only
    return path


def untrained_run(path: Path, task: str, arch: str, labels: list[str], preprocessing: Preprocessing) -> Path:
    """A run directory with random weights: enough to exercise the serving path, not accuracy."""
    return finished_run(path, task, arch, labels, preprocessing, create_model(arch, len(labels)).state_dict())


def mnist_run(path: Path) -> Path:
    """The embedded trained MNIST run (models/mnist), or an untrained stand-in created at `path`
    while it is absent: the service refuses to start without an MNIST model."""
    if (EMBEDDED_MNIST / "config.json").is_file():
        return EMBEDDED_MNIST
    labels = [str(i) for i in range(10)]
    return untrained_run(path, "mnist", "mnist_cnn", labels, MNIST_PREPROCESSING)


def convnet_settings(settings: dict[str, str]) -> dict[str, str]:
    """The service's settings as environment variables: workers="1" -> CONVNET_WORKERS=1."""
    return {f"CONVNET_{name.upper()}": value for name, value in settings.items()}


class Server:
    """`bentoml serve` from the repository root on 127.0.0.1, with its own BENTOML_HOME.

    `settings` become `CONVNET_<NAME>` environment variables, `serve_options` extra options of `bentoml
    serve` (e.g. `--timeout-graceful-shutdown 20`). It can be stopped and started again on the same port;
    each start appends to `log`.
    """

    def __init__(
        self, bentoml_home: Path, log: Path, *, serve_options: Sequence[str] = (), **settings: str
    ) -> None:
        self.serve_options = list(serve_options)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {
            **os.environ,
            "BENTOML_HOME": str(bentoml_home),
            "BENTOML_DO_NOT_TRACK": "True",
            **convnet_settings(settings),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def export(self, run_dir: Path, *options: str) -> None:
        """`python -m training export run_dir [options]` into this server's model store."""
        result = subprocess.run(
            [sys.executable, "-m", "training", "export", str(run_dir), *options],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"export failed:\n{result.stdout}\n{result.stderr}"

    def start(self, timeout: float = 240, **settings: str) -> None:
        """Start and wait until /readyz answers 200; `settings` are extra ones for this start only
        (e.g. simulated_latency_ms="1000")."""
        env = {**self.env, **convnet_settings(settings)}
        with self.log.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 *self.serve_options],
                cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"bentoml serve not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's own process group (server and workers), SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def worker_pids(self) -> list[int]:
        """The live worker processes (`_bentoml_impl.worker`) under `bentoml serve`, oldest first."""
        assert self.process is not None
        found = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if child.status() != psutil.STATUS_ZOMBIE and WORKER_MODULE in child.cmdline():
                    found.append((child.create_time(), child.pid))
            except psutil.NoSuchProcess:
                continue
        return [pid for _, pid in sorted(found)]

    def kill_worker(self, pid: int) -> None:
        """SIGKILL one worker, as the kernel's OOM killer would."""
        assert pid in self.worker_pids()
        os.kill(pid, signal.SIGKILL)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]
