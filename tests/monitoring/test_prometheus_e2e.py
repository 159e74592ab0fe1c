"""End to end: a real Prometheus scrapes the real service every second with the shipped rules.

Real MNIST traffic must give numbers (not NaN) for the recording rules and data for every
dashboard query; a service made slow with CONVNET_SIMULATED_LATENCY_MS must set off the p99
latency alert. The alert's `for:` is shortened in a copy of the rules; its threshold is the shipped one.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring import dashboard
from tests.monitoring.bento import Traffic
from tests.monitoring.mnist_png import mnist_test_pngs
from tests.monitoring.prom import CONFIG, JOB, PrometheusServer, rule_files, run_prometheus
from tests.support.server import EMBEDDED_MNIST, Server

pytestmark = pytest.mark.e2e

LATENCY_ALERT = "ConvnetServeLatencyP99High"
SHORT_FOR = "3s"
SIMULATED_LATENCY_MS = 1000  # twice the 500ms SLO: every request is slower than it
TRAFFIC_SECONDS = 8
P99 = 'endpoint:bentoml_service_request_duration_seconds:p99_rate1m{endpoint="/classify/mnist"}'
REQUEST_RATE = 'endpoint:bentoml_service_request:rate1m{endpoint="/classify/mnist"}'
BATCH_SIZE = 'model:convnet_batch_size:mean_rate1m{model="mnist"}'
QUEUE_P99 = 'model:convnet_batch_wait_seconds:p99_rate1m{model="mnist"}'
REPLICAS = f'job:up:sum{{job="{JOB}"}}'


@dataclass
class Stack:
    service: Server
    prometheus: PrometheusServer
    digits: list[bytes]


@dataclass
class FastTraffic:
    p99_before: float | None
    traffic: Traffic


def wait_for(condition: Callable[[], Any], timeout: float, what: str, stack: Stack) -> Any:
    """Poll `condition` every 0.5s until it returns something truthy; fail with both logs after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.5)
    pytest.fail(
        f"timed out after {timeout}s waiting for {what}\n--- prometheus:\n{stack.prometheus.log_tail()}"
        f"\n--- service:\n{stack.service.log_tail()}"
    )


def write_rules_copy(rules_dir: Path) -> None:
    """Copy the shipped rules into `rules_dir`, the latency alert's `for:` shortened to SHORT_FOR."""
    for path in rule_files():
        document = yaml.safe_load(path.read_text())
        for rule in (r for group in document["groups"] for r in group["rules"]):
            if rule.get("alert") == LATENCY_ALERT:
                assert rule["for"].endswith("m"), f"shipped {LATENCY_ALERT} waits only {rule['for']}"
                rule["for"] = SHORT_FOR
        (rules_dir / path.name).write_text(yaml.safe_dump(document, sort_keys=False))


def e2e_config(service_port: int, rules_dir: Path) -> dict[str, Any]:
    """The shipped scrape config, scraping and evaluating every second, aimed at the test's port."""
    config = yaml.safe_load(CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rules_dir / "*.yml")]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB
    job["static_configs"] = [{"targets": [f"127.0.0.1:{service_port}"]}]
    return config


@pytest.fixture(scope="module")
def stack(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("e2e")
    # One worker per service, one torch thread: the latency numbers are those of a known small server.
    service = Server(
        workdir / "bentoml", log=workdir / "bentoml.log", device="cpu", workers="1", torch_threads="1"
    )
    service.export(EMBEDDED_MNIST)
    rules_dir = workdir / "rules"
    rules_dir.mkdir()
    write_rules_copy(rules_dir)
    try:
        service.start()
        with run_prometheus(e2e_config(service.port, rules_dir), workdir / "prometheus") as prometheus:
            yield Stack(service, prometheus, mnist_test_pngs(mnist_dir, 64))
    finally:
        service.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def fast_traffic(stack: Stack) -> FastTraffic:
    """TRAFFIC_SECONDS of real digits from 4 clients, once Prometheus scrapes the service."""
    wait_for(lambda: stack.prometheus.number(REPLICAS) == 1, 30, "the first scrape", stack)
    p99_before = stack.prometheus.number(P99)
    with Traffic(stack.service.url, stack.digits, clients=4) as traffic:
        time.sleep(TRAFFIC_SECONDS)
    return FastTraffic(p99_before, traffic)


def test_traffic_got_real_answers(fast_traffic: FastTraffic) -> None:
    assert fast_traffic.traffic.unexpected == []
    assert fast_traffic.traffic.statuses[("/classify/mnist", 200)] > 10
    assert fast_traffic.traffic.statuses[("/classify/mnist/base64", 200)] > 10


def test_recording_rules_give_numbers(stack: Stack, fast_traffic: FastTraffic) -> None:
    prometheus = stack.prometheus
    assert fast_traffic.p99_before is None, "p99 before any /classify request must be no data or NaN"
    queries = (P99, REQUEST_RATE, BATCH_SIZE, QUEUE_P99)
    wait_for(lambda: all(prometheus.number(q) is not None for q in queries), 30, "recorded numbers", stack)
    assert 0 < prometheus.number(P99) < 10  # type: ignore[operator]
    assert prometheus.number(REQUEST_RATE) > 0  # type: ignore[operator]
    assert prometheus.number(BATCH_SIZE) >= 1  # type: ignore[operator]
    assert 0 <= prometheus.number(QUEUE_P99) < 10  # type: ignore[operator]
    assert prometheus.number(REPLICAS) == 1


def test_every_dashboard_query_has_data(stack: Stack, fast_traffic: FastTraffic) -> None:
    """Except alerts (none pending yet) and comparisons with a day ago (Prometheus is minutes old)."""
    queries = [
        (title, expr)
        for title, expr in dashboard.expressions(dashboard.load())
        if not ({"ALERTS"} & dashboard.metric_names(expr) or " offset " in expr)
    ]
    wait_for(lambda: all(stack.prometheus.query(e) for _, e in queries), 20, "dashboard data", stack)


def test_slow_service_sets_off_the_latency_alert(stack: Stack) -> None:
    alert = f'ALERTS{{alertname="{LATENCY_ALERT}", endpoint="/classify/mnist"}}'
    stack.service.stop()
    # On a busy machine a few fast-phase requests may have been slow: start from a quiet alert.
    wait_for(lambda: not stack.prometheus.query(alert), 75, "the alert to clear before the test", stack)
    # Requests wait up to one slow forward pass for their batch: keep BentoML from answering 503.
    stack.service.start(simulated_latency_ms=str(SIMULATED_LATENCY_MS), max_latency_ms="20000")
    slow = SIMULATED_LATENCY_MS / 1000
    with Traffic(stack.service.url, stack.digits, clients=2) as traffic:
        samples = wait_for(lambda: stack.prometheus.query(alert), 60, f"{LATENCY_ALERT} pending", stack)
        # The 1-minute window still holds fast requests and the restart's counter reset for a while:
        # p99 settles at the slow latency once they have left it.
        wait_for(lambda: (stack.prometheus.number(P99) or 0) >= slow, 90, f"p99 >= {slow}s", stack)
    assert {sample["metric"]["alertstate"] for sample in samples} <= {"pending", "firing"}
    assert traffic.statuses[("/classify/mnist", 200)] > 0, traffic.statuses
