"""Paths of the shipped monitoring files, and a real Prometheus server on loopback for the tests."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.server import REPO, free_port

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"
DASHBOARD = REPO / "deploy" / "grafana" / "convnet-serve.json"
JOB = "convnet-serve"


def require_binary(name: str) -> str:
    """Path of `name` (promtool, prometheus); skip the test when Debian's prometheus is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found: apt-get install -y --no-install-recommends prometheus")
    return path


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def load_rules() -> list[dict[str, Any]]:
    """Every rule (recording and alerting) of every group in the shipped rule files."""
    return [
        rule
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in load_rules() if "record" in rule}


def parse_sample(value: str) -> float | None:
    """A sample's value as Prometheus' API writes it; None for "NaN" (a quantile over an empty window)
    and for infinities, which are not measurements either."""
    number = float(value)
    return number if math.isfinite(number) else None


class PrometheusServer:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/<path>; the decoded body, also for errors (status "error", e.g. bad_data)."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            return json.load(error)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the vector's samples. Fails the test on an error such as a parse error."""
        body = self.api("query", query=expr)
        assert body["status"] == "success", f"{expr!r}: {body.get('errorType')}: {body.get('error')}"
        assert body["data"]["resultType"] == "vector", f"{expr!r}: got {body['data']['resultType']}"
        return body["data"]["result"]

    def number(self, expr: str) -> float | None:
        """The value of the single series `expr` selects; None while there is none or it is NaN."""
        samples = self.query(expr)
        assert len(samples) <= 1, f"{expr!r} selects several series: {samples}"
        return parse_sample(samples[0]["value"][1]) if samples else None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@contextmanager
def run_prometheus(config: dict[str, Any], workdir: Path) -> Iterator[PrometheusServer]:
    """Start /usr/bin/prometheus with `config` on a free loopback port; stop it on exit."""
    binary = require_binary("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", log)
    try:
        _wait_ready(server, process)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: PrometheusServer, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"prometheus not ready after {timeout}s:\n{server.log_tail()}")
