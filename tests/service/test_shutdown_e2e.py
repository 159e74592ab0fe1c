"""SIGTERM to a real `bentoml serve` (the parent alone, as Kubernetes and Docker send it) with requests in
flight: each is answered as usual, readiness and new requests get 503 `shutting_down` while they drain,
connections after the exit are refused, and the server exits within its graceful-shutdown timeout.

Each request carries 64 real MNIST digits, one forward pass of its own (the batch limit is 64), made
slow with CONVNET_SIMULATED_LATENCY_MS so that they are truly in flight: 16 take about 4 s to drain.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service import images
from tests.support.server import Server, mnist_run

pytestmark = pytest.mark.e2e
logger = logging.getLogger(__name__)  # the measured figures: pytest --log-cli-level=INFO shows them

IN_FLIGHT = 16
DIGITS_PER_REQUEST = 64
FORWARD_PASS_MS = 250
DRAIN_S = IN_FLIGHT * FORWARD_PASS_MS / 1000
GRACE_S = 20  # as the image's `--timeout-graceful-shutdown`: well above the drain
SHORT_GRACE_S = 2  # below the drain: what is left at the timeout is answered 503
PROBE_EVERY_S = 0.2
ROUTE = "/classify/mnist"


@dataclass
class Probe:
    """A request on a new connection after the signal: `outstanding` in-flight requests were unanswered
    when it started; `status` is the HTTP status or the name of the client's exception."""

    name: str
    started_s: float
    outstanding: int
    status: int | str
    headers: dict[str, str]


@dataclass
class Outcome:
    """What the clients saw around the signal (times in seconds after it)."""

    answers: list[tuple[float, int, Any]] = field(default_factory=list)  # in-flight: time, status, body
    probes: list[Probe] = field(default_factory=list)
    exited_after_s: float = 0.0
    exit_code: int | None = None
    refused_after_exit: bool = False

    def while_draining(self, name: str) -> list[Probe]:
        """Probes started while at least two requests were unanswered: the server was surely draining
        (the last one still needed a forward pass of its own)."""
        return [probe for probe in self.probes if probe.name == name and probe.outstanding >= 2]


def start_server(home: Path, grace_s: int) -> Server:
    server = Server(
        home,
        log=home / "serve.log",
        serve_options=["--timeout-graceful-shutdown", str(grace_s)],
        device="cpu",
        workers="1",
        torch_threads="1",
        simulated_latency_ms=str(FORWARD_PASS_MS),
        max_latency_ms="60000",  # queue time never turns into 503 overloaded here
        max_queued_images=str(IN_FLIGHT * DIGITS_PER_REQUEST),
    )
    server.export(mnist_run(home / "run"), "--onnx")
    server.start()
    return server


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path, request.param)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upload(mnist_dir: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    digits, _ = images.mnist_test_digits(mnist_dir, DIGITS_PER_REQUEST)
    return [("images", (f"{i}.png", images.png(digit), "image/png")) for i, digit in enumerate(digits)]


def in_progress(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "bentoml_service_request_in_progress" and sample.labels.get("endpoint") == ROUTE
    )


async def probe_until_exit(server: Server, outcome: Outcome, one_digit: list[Any]) -> None:
    """Every PROBE_EVERY_S until the server exits, on new connections: readiness, liveness, a request."""
    assert server.process is not None
    signalled = time.monotonic()
    requests: dict[str, dict[str, Any]] = {
        "readyz": {"method": "GET", "url": f"{server.url}/readyz"},
        "livez": {"method": "GET", "url": f"{server.url}/livez"},
        "classify": {"method": "POST", "url": f"{server.url}{ROUTE}", "files": one_digit},
    }
    while server.process.poll() is None:
        for name, request in requests.items():
            started, outstanding = time.monotonic() - signalled, IN_FLIGHT - len(outcome.answers)
            try:
                async with httpx.AsyncClient() as client:  # a new connection for each
                    response = await client.request(**request, timeout=10)
                status, headers = response.status_code, dict(response.headers)
            except httpx.TransportError as error:
                status, headers = type(error).__name__, {}
            outcome.probes.append(Probe(name, started, outstanding, status, headers))
        await asyncio.sleep(PROBE_EVERY_S)


async def sigterm_with_requests_in_flight(server: Server, upload: list[Any]) -> Outcome:
    assert server.process is not None
    outcome = Outcome()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=IN_FLIGHT)) as client:
        requests = [
            asyncio.create_task(client.post(f"{server.url}{ROUTE}", files=upload, timeout=120))
            for _ in range(IN_FLIGHT)
        ]
        deadline = time.monotonic() + 60
        while await asyncio.to_thread(in_progress, server) < IN_FLIGHT:
            assert time.monotonic() < deadline, "the requests never were all in flight"
            await asyncio.sleep(0.05)
        os.kill(server.process.pid, signal.SIGTERM)  # the parent only
        signalled = time.monotonic()
        probing = asyncio.create_task(probe_until_exit(server, outcome, upload[:1]))
        for finished in asyncio.as_completed(requests):
            response = await finished
            outcome.answers.append((time.monotonic() - signalled, response.status_code, response.json()))
        outcome.exit_code = await asyncio.to_thread(server.process.wait, 60)
        outcome.exited_after_s = time.monotonic() - signalled
        await probing
    try:
        httpx.get(f"{server.url}/livez", timeout=5)
    except httpx.ConnectError:
        outcome.refused_after_exit = True
    return outcome


def report(outcome: Outcome, grace_s: int) -> None:
    statuses = [status for _, status, _ in outcome.answers]
    last_answer = max(t for t, _, _ in outcome.answers)
    after_drain = [f"{p.name} {p.status}" for p in outcome.probes if p.started_s > last_answer]
    logger.info(
        f"{IN_FLIGHT} requests in flight at SIGTERM (grace {grace_s} s): "
        f"{statuses.count(200)} answered 200, {statuses.count(503)} 503, the last after {last_answer:.2f} s; "
        f"exit code {outcome.exit_code} after {outcome.exited_after_s:.2f} s; "
        f"{len(outcome.probes)} probes on new connections, "
        + ", ".join(
            f"{name} {sorted({str(p.status) for p in outcome.probes if p.name == name})}"
            for name in ("readyz", "livez", "classify")
        )
        + f"; after the last answer: {after_drain}"
    )


@pytest.mark.parametrize("server", [GRACE_S], indirect=True)
def test_requests_in_flight_are_answered_and_new_ones_refused(server: Server, upload: list[Any]) -> None:
    reference = httpx.post(f"{server.url}{ROUTE}", files=upload, timeout=60).json()
    outcome = asyncio.run(sigterm_with_requests_in_flight(server, upload))
    report(outcome, GRACE_S)

    assert [status for _, status, _ in outcome.answers] == [200] * IN_FLIGHT
    assert all(body == reference for _, _, body in outcome.answers)
    # Truly in flight: only the forward pass running at the signal may have ended before it.
    assert sum(t > 0 for t, _, _ in outcome.answers) >= IN_FLIGHT - 1
    assert outcome.while_draining("readyz"), "no probe ran while the requests drained"
    assert {probe.status for probe in outcome.while_draining("readyz")} == {503}
    assert {probe.status for probe in outcome.while_draining("livez")} == {200}
    for probe in outcome.while_draining("classify"):
        assert probe.status == 503
        assert probe.headers["connection"] == "close" and probe.headers["retry-after"] == "1"
    assert outcome.exit_code == 0
    assert outcome.exited_after_s < GRACE_S
    assert outcome.refused_after_exit


@pytest.mark.parametrize("server", [SHORT_GRACE_S], indirect=True)
def test_what_is_left_at_the_timeout_is_answered_503_and_the_server_exits(
    server: Server, upload: list[Any]
) -> None:
    assert DRAIN_S > SHORT_GRACE_S + 1
    outcome = asyncio.run(sigterm_with_requests_in_flight(server, upload))
    report(outcome, SHORT_GRACE_S)

    answered = [t for t, status, _ in outcome.answers if status == 200]
    refused = [(t, body) for t, status, body in outcome.answers if status == 503]
    assert len(answered) + len(refused) == IN_FLIGHT
    assert answered and refused
    assert max(answered) < SHORT_GRACE_S + 0.5
    for t, body in refused:
        assert body["reason"] == "shutting_down"
        assert f"graceful-shutdown timeout of {SHORT_GRACE_S}" in body["error"]
        assert SHORT_GRACE_S - 0.5 < t < SHORT_GRACE_S + 1
    assert outcome.exit_code == 0
    assert outcome.exited_after_s < SHORT_GRACE_S + 3  # the cancelled requests' images are never run
