"""The real service (`bentoml serve` from the repository root) as a subprocess, and traffic for it."""

from __future__ import annotations

import base64
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.monitoring.prom import REPO


def import_mnist_model(bentoml_home: Path) -> None:
    """Put the embedded MNIST model into the model store at `bentoml_home` (mnist-convnet:latest)."""
    result = subprocess.run(
        [sys.executable, "-m", "training", "export", "models/mnist"],
        cwd=REPO,
        env={**os.environ, "BENTOML_HOME": str(bentoml_home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"export failed:\n{result.stdout}\n{result.stderr}"


class BentoService:
    """`bentoml serve` on 127.0.0.1:`port`, with one worker per service and its own model store."""

    def __init__(self, port: int, bentoml_home: Path, log_dir: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.bentoml_home = bentoml_home
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, **settings: str) -> None:
        """Start with extra `CONVNET_<NAME>` settings (e.g. SIMULATED_LATENCY_MS="1000"); wait until ready."""
        env = {
            **os.environ,
            "BENTOML_HOME": str(self.bentoml_home),
            "BENTOML_DO_NOT_TRACK": "True",
            "CONVNET_DEVICE": "cpu",
            "CONVNET_WORKERS": "1",
            "CONVNET_TORCH_THREADS": "1",
            **{f"CONVNET_{name.upper()}": value for name, value in settings.items()},
        }
        self.starts += 1
        self.log = self.log_dir / f"bentoml-{self.starts}.log"
        with self.log.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=REPO,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def stop(self) -> None:
        """SIGTERM to the whole process group (server and workers), SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def _wait_ready(self, timeout: float = 180) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"bentoml serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        pytest.fail(f"service not ready after {timeout}s:\n{self.log_tail()}")


class Traffic:
    """Clients in background threads sending real digits until stopped: multipart and base64, 1-4
    images a request, and now and then a file that is not an image (which must get a 4xx)."""

    GARBAGE_EVERY = 10

    def __init__(self, url: str, digits: list[bytes], clients: int) -> None:
        self.url = url
        self.digits = digits
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.unexpected: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(seed,)) for seed in range(clients)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=60) as client:
            for count in itertools.count():
                if self._stop.is_set():
                    return
                images = rng.sample(self.digits, rng.randint(1, 4))
                if count % self.GARBAGE_EVERY == self.GARBAGE_EVERY - 1:
                    files = [("images", ("notes.png", b"this is not an image", "image/png"))]
                    self._check(client.post("/classify/mnist", files=files), expect_ok=False)
                elif count % 2:
                    payload = {"images": [base64.b64encode(image).decode() for image in images]}
                    self._check(client.post("/classify/mnist/base64", json=payload), len(images))
                else:
                    files = [("images", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)]
                    self._check(client.post("/classify/mnist", files=files), len(images))

    def _check(self, response: httpx.Response, images: int = 0, expect_ok: bool = True) -> None:
        """Counts every answer; keeps those that are wrong for their request."""
        key = (response.request.url.path, response.status_code)
        if expect_ok:
            ok = response.status_code == 200 and len(response.json()) == images
        else:
            ok = 400 <= response.status_code < 500
        with self._lock:
            self.statuses[key] += 1
            if not ok:
                self.unexpected.append(f"{key}: {response.text[:300]}")
