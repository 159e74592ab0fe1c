"""Overload against a real `bentoml serve`: far more images at once than a model's queue may hold.

One worker, a queue bound of 8 images, batches of 2 and a simulated forward pass of 500 ms make overload
cheap to reach: a burst of 6 times the bound at once must be answered 200 (served), 429 (refused at once,
`Retry-After`) or 503 (waited past the 1.2 s latency budget, `Retry-After`), never anything else, each as
the served OpenAPI document says; the 429s come within half a forward pass by the service's own request
histogram (the test client, on the same busy cores, adds its own time), the worker's memory stays where it
was, and the next request is served normally. The server has no photo model, so it also shows what a
deployment without one documents. Run with `-s` to see the counts.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import schemathesis
from prometheus_client.parser import text_string_to_metric_families

from tests.service import images
from tests.support.openapi import undocumented
from tests.support.server import Server, mnist_run

pytestmark = pytest.mark.e2e

QUEUE_BOUND = 8
BURST = 6 * QUEUE_BOUND
FORWARD_PASS_MS = 500
LATENCY_BUDGET_MS = 1200
REFUSED_WITHIN_S = 0.25  # a bound of BentoML's request histogram
MEMORY_GROWTH_BYTES = 64 << 20  # a worker holds about 0.5 GiB; a burst that kept its images would show


@dataclass(frozen=True)
class Answer:
    status: int
    seconds: float
    retry_after: str | None
    undocumented: str | None  # what of it the served OpenAPI document does not say, if anything


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("bentoml-home")
    server = Server(
        home,
        log=home / "serve.log",
        device="cpu",
        workers="1",
        torch_threads="1",
        max_batch_size="2",
        max_latency_ms=str(LATENCY_BUDGET_MS),
        max_queued_images=str(QUEUE_BOUND),
        max_images_per_request="4",
        simulated_latency_ms=str(FORWARD_PASS_MS),
    )
    server.export(mnist_run(home / "run"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def digit(mnist_dir: Path) -> bytes:
    pixels, _ = images.mnist_test_digits(mnist_dir, 1)
    return images.png(pixels[0])


def worker_rss(server: Server) -> int:
    """Resident memory of the server's one worker process, in bytes."""
    assert server.process is not None
    children = psutil.Process(server.process.pid).children(recursive=True)
    (worker,) = [child for child in children if "_bentoml_impl.worker.service" in " ".join(child.cmdline())]
    return worker.memory_info().rss


async def burst(server: Server, digit: bytes, count: int) -> list[Answer]:
    """`count` single-image requests, all sent at once on connections opened beforehand."""
    document = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    operation = document.find_operation_by_path("POST", "/classify/mnist")
    assert operation is not None
    upload = httpx.Request("POST", "/", files=[("images", ("digit.png", digit, "image/png"))])
    body, headers = upload.read(), {"content-type": upload.headers["content-type"]}  # one multipart body
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(client.get("/livez") for _ in range(count)))

        async def classify() -> tuple[httpx.Response, float]:
            start = time.perf_counter()
            response = await client.post("/classify/mnist", content=body, headers=headers)
            return response, time.perf_counter() - start

        answers = await asyncio.gather(*(classify() for _ in range(count)))
    return [
        Answer(r.status_code, seconds, r.headers.get("retry-after"), undocumented(operation, r))
        for r, seconds in answers
    ]


def server_seconds(server: Server, status: int) -> dict[float, float]:
    """How many /classify/mnist answers with `status` took at most each bucket bound (in seconds) by the
    service's own request histogram (BentoML's), since the server started."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return {
        float(sample.labels["le"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "bentoml_service_request_duration_seconds_bucket"
        and sample.labels.get("endpoint") == "/classify/mnist"
        and sample.labels.get("http_response_code") == str(status)
    }


def classify_one(server: Server, digit: bytes) -> Answer:
    return asyncio.run(burst(server, digit, 1))[0]


def test_a_burst_past_the_queue_bound_is_refused_fast_and_leaves_the_worker_as_it_was(
    server: Server, digit: bytes
) -> None:
    for _ in range(3):  # warm up: the first requests allocate what every later one reuses
        assert classify_one(server, digit).status == 200
    before = worker_rss(server)

    answers = asyncio.run(burst(server, digit, BURST))
    after = worker_rss(server)
    statuses = Counter(answer.status for answer in answers)
    seconds = {status: sorted(a.seconds for a in answers if a.status == status) for status in statuses}
    print(f"{BURST} requests at once, queue bound {QUEUE_BOUND}: {dict(sorted(statuses.items()))}")  # noqa: T201
    for status, times in sorted(seconds.items()):
        print(f"  {status}: median {np.median(times) * 1000:.0f} ms, slowest {times[-1] * 1000:.0f} ms")  # noqa: T201
    refused_within = server_seconds(server, 429)
    print(f"429s answered within (s, by the service): {refused_within}")  # noqa: T201
    print(f"worker RSS {before >> 20} MiB before, {after >> 20} MiB after")  # noqa: T201

    assert set(statuses) <= {200, 429, 503}
    assert [answer.undocumented for answer in answers if answer.undocumented] == []
    assert statuses[429] >= BURST - 2 * QUEUE_BOUND  # at most the queue and a batch or two get in
    refused = [answer for answer in answers if answer.status == 429]
    assert all(answer.retry_after == "1" for answer in refused)
    assert all(answer.retry_after == "1" for answer in answers if answer.status == 503)
    # Refused without waiting for the model: all within half the forward pass every 200 waited for.
    assert refused_within[REFUSED_WITHIN_S] == statuses[429] == refused_within[float("inf")]
    assert min(seconds[200]) >= FORWARD_PASS_MS / 1000
    assert after - before < MEMORY_GROWTH_BYTES

    right_after = classify_one(server, digit)
    assert right_after.status == 200
    assert right_after.seconds < (FORWARD_PASS_MS + LATENCY_BUDGET_MS) / 1000


def test_a_model_missing_from_the_store_has_no_operations_but_still_answers(
    server: Server, digit: bytes
) -> None:
    """No photo model is exported here: its routes could never succeed, so the document leaves them out,
    and a request to them is still answered, 503 `model_not_loaded`."""
    paths = httpx.get(f"{server.url}/docs.json", timeout=30).json()["paths"]
    assert "/classify/mnist" in paths and "/classify/mnist/base64" in paths
    assert not [path for path in paths if "photo" in path]
    response = httpx.post(
        f"{server.url}/classify/photo", files=[("images", ("digit.png", digit, "image/png"))], timeout=30
    )
    assert (response.status_code, response.json()["reason"]) == (503, "model_not_loaded")
