"""A worker of a real `bentoml serve` killed (SIGKILL) under a modest load: the parent starts another, and
the service recovers; the requests that fail are counted.

Four clients send one real MNIST digit per request in a closed loop over keep-alive connections, as an
HTTP client library does; a failed request is retried after 50 ms. What the clients see:
- 1 worker: the requests in flight on the dead worker fail; the next ones wait in the listening socket's
  backlog (the parent keeps it open) and are answered once the new worker has loaded its models;
- 2 workers: the requests in flight on the dead worker fail; the other worker answers the rest while the
  new one starts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.service import images
from tests.support.server import Server, mnist_run

pytestmark = pytest.mark.e2e
logger = logging.getLogger(__name__)  # the measured figures: pytest --log-cli-level=INFO shows them

CLIENTS = 4
LOAD_BEFORE_S = 2.0
RECOVERY_S = 60.0  # a worker loads torch and its models again: 8-21 s on this shared 2-core machine
LOAD_AFTER_RECOVERY_S = 2.0
RETRY_AFTER_S = 0.05
KILL_MOMENT_S = 0.5  # a request sent this soon after the kill may still go out on a dead worker's connection
WORKER_READY = re.compile(r"Service ImageClassifier initialized")


@dataclass(frozen=True)
class Request:
    sent_s: float  # seconds after the kill (negative: before)
    done_s: float
    status: int | str  # HTTP status, or the client's exception


@dataclass(frozen=True)
class Crash:
    requests: list[Request]
    recovered_s: float  # the service serves again at full strength: see `kill_worker_under_load`

    @property
    def failed(self) -> list[Request]:
        return [r for r in self.requests if r.status != 200]

    def sent_after(self, seconds: float) -> list[Request]:
        return [r for r in self.requests if r.sent_s >= seconds]


@pytest.fixture(scope="module")
def digit_pngs(mnist_dir: Path) -> list[bytes]:
    return [images.png(digit) for digit in images.mnist_test_digits(mnist_dir, 64)[0]]


def workers_ready(server: Server) -> int:
    """Workers that finished loading their models since the server started, from the server's log."""
    return len(WORKER_READY.findall(server.log.read_text(errors="replace")))


async def kill_worker_under_load(server: Server, workers: int, pngs: list[bytes]) -> Crash:
    """Kill one worker after LOAD_BEFORE_S of load. Recovered: with 1 worker, a request sent after the
    kill is answered; with more, the new worker has loaded its models. The load goes on for
    LOAD_AFTER_RECOVERY_S more."""
    sent: list[tuple[float, float, int | str]] = []  # monotonic times
    stop = asyncio.Event()

    async def client(index: int, http: httpx.AsyncClient) -> None:
        count = index
        while not stop.is_set():
            started = time.monotonic()
            files = [("images", ("digit.png", pngs[count % len(pngs)], "image/png"))]
            try:
                status: int | str = (await http.post(f"{server.url}/classify/mnist", files=files)).status_code
            except httpx.TransportError as error:
                status = type(error).__name__
            sent.append((started, time.monotonic(), status))
            if status != 200:
                await asyncio.sleep(RETRY_AFTER_S)
            count += CLIENTS

    while workers_ready(server) < workers:  # /readyz answers as soon as one worker is up
        assert server.process is not None and server.process.poll() is None, server.log_tail()
        await asyncio.sleep(0.1)
    ready_before = workers_ready(server)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=CLIENTS), timeout=RECOVERY_S) as http:
        clients = [asyncio.create_task(client(index, http)) for index in range(CLIENTS)]
        await asyncio.sleep(LOAD_BEFORE_S)
        victim = server.worker_pids()[0]
        server.kill_worker(victim)
        killed = time.monotonic()
        while time.monotonic() < killed + RECOVERY_S:
            if workers == 1 and any(status == 200 and started > killed for started, _, status in sent):
                break
            if workers > 1 and workers_ready(server) > ready_before:
                break
            await asyncio.sleep(0.05)
        recovered = time.monotonic() - killed
        await asyncio.sleep(LOAD_AFTER_RECOVERY_S)
        stop.set()
        await asyncio.gather(*clients)
    assert victim not in server.worker_pids() and len(server.worker_pids()) == workers
    return Crash([Request(start - killed, done - killed, status) for start, done, status in sent], recovered)


def report(crash: Crash, workers: int) -> None:
    after = crash.sent_after(0)
    slowest = max(r.done_s - r.sent_s for r in after if r.status == 200)
    logger.info(
        f"{workers} worker(s), {CLIENTS} clients: {len(crash.requests)} requests, "
        f"{len(crash.requests) - len(after)} sent before the kill; failed: "
        f"{[(round(r.sent_s, 2), r.status) for r in crash.failed]}; "
        f"recovered after {crash.recovered_s:.2f} s; "
        f"{len(after)} requests sent after the kill, the slowest answered in {slowest:.2f} s"
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_worker_is_replaced_and_only_its_requests_in_flight_fail(
    workers: int, tmp_path: Path, digit_pngs: list[bytes]
) -> None:
    server = Server(
        tmp_path, log=tmp_path / "serve.log", device="cpu", workers=str(workers), torch_threads="1"
    )
    server.export(mnist_run(tmp_path / "run"), "--onnx")
    server.start()
    try:
        crash = asyncio.run(kill_worker_under_load(server, workers, digit_pngs))
    finally:
        server.stop()
    report(crash, workers)

    assert crash.recovered_s < RECOVERY_S
    # Only what was in flight on the dead worker fails, or was sent on its connections while the
    # kernel closed them: one request per client connection at most, all at the kill.
    assert len(crash.failed) <= CLIENTS
    assert all(r.sent_s < KILL_MOMENT_S for r in crash.failed)
    assert all(r.status == 200 for r in crash.sent_after(KILL_MOMENT_S))
    if workers > 1:  # the other worker kept answering while the new one started
        answered_during_restart = [r for r in crash.sent_after(0) if r.done_s < crash.recovered_s]
        assert len(answered_during_restart) >= crash.recovered_s  # over one request per second
