"""The in-process micro-batcher, LitServe-style: a fixed forward, concurrent requests, exact outputs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from service.batcher import MicroBatcher
from service.errors import Overloaded, TooBusy
from service.preprocess import concat


class Forward:
    """`2x + 1` per image, recording each batch's size; the first call waits for `release`."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batch_sizes: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if not self.batch_sizes:
            self.entered.set()
            assert self.release.wait(10)
        self.batch_sizes.append(len(pixels))
        if len(pixels) == self.fail_on:
            raise RuntimeError("boom")
        return pixels.astype(np.float32).reshape(len(pixels), -1) * 2 + 1


def images(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint8).reshape(len(values), 1, 1, 1)


def batcher_of(
    forward: Forward, max_batch_size: int, max_latency_s: float = 10, max_queued: int = 100
) -> MicroBatcher:
    return MicroBatcher(
        "test",
        forward,
        max_batch_size=max_batch_size,
        max_latency_s=max_latency_s,
        max_queued=max_queued,
        join=concat,
    )


@pytest.fixture
def forward() -> Forward:
    return Forward()


@pytest.fixture
def batcher(forward: Forward) -> Iterator[MicroBatcher]:
    batcher = batcher_of(forward, max_batch_size=4)
    yield batcher
    forward.release.set()
    batcher.close()


async def held(
    batcher: MicroBatcher, forward: Forward, *requests: np.ndarray, hold_s: float = 0.01
) -> list[np.ndarray | BaseException]:
    """Submit a first request that holds the thread, queue `requests` behind it, let go after `hold_s`."""
    first = asyncio.ensure_future(batcher.submit(images(0)))
    while not forward.entered.is_set():
        await asyncio.sleep(0.001)
    rest = [asyncio.ensure_future(batcher.submit(pixels)) for pixels in requests]
    await asyncio.sleep(hold_s)
    forward.release.set()
    await first
    return await asyncio.gather(*rest, return_exceptions=True)


def test_concurrent_requests_share_one_forward_pass_with_exact_outputs(
    batcher: MicroBatcher, forward: Forward
) -> None:
    results = asyncio.run(held(batcher, forward, images(1), images(2, 3), images(4)))
    assert forward.batch_sizes == [1, 4]
    assert [r.flatten().tolist() for r in results] == [[3.0], [5.0, 7.0], [9.0]]


def test_a_lone_request_does_not_wait(forward: Forward) -> None:
    forward.release.set()
    batcher = batcher_of(forward, max_batch_size=64)
    try:
        result = asyncio.run(batcher.submit(images(5)))
    finally:
        batcher.close()
    assert result.flatten().tolist() == [11.0] and forward.batch_sizes == [1]


def test_requests_prepared_in_one_loop_turn_share_one_forward_pass(forward: Forward) -> None:
    """The thread is idle, yet the four requests that one turn of the event loop prepares make one batch."""
    forward.release.set()
    batcher = batcher_of(forward, max_batch_size=64)

    async def prepared_then_submitted(value: int) -> np.ndarray:
        time.sleep(0.005)  # decoding on the loop's thread, the GIL released (as PIL and numpy do)
        return await batcher.submit(images(value))

    async def scenario() -> list[np.ndarray]:
        return await asyncio.gather(*(prepared_then_submitted(value) for value in (1, 2, 3, 4)))

    try:
        results = asyncio.run(scenario())
    finally:
        batcher.close()
    assert forward.batch_sizes == [4]
    assert [r.item() for r in results] == [3.0, 5.0, 7.0, 9.0]


def test_batches_stop_at_the_size_limit_and_a_large_request_runs_alone(
    batcher: MicroBatcher, forward: Forward
) -> None:
    results = asyncio.run(held(batcher, forward, images(1, 2, 3), images(4, 5), images(6), images(*range(6))))
    assert forward.batch_sizes == [1, 3, 3, 6]  # 3 + 2 > 4: the second request starts the next batch
    assert results[1].flatten().tolist() == [9.0, 11.0]
    assert results[3].flatten().tolist() == [2.0 * v + 1 for v in range(6)]


def test_images_that_waited_too_long_are_refused_as_overloaded(forward: Forward) -> None:
    batcher = batcher_of(forward, max_batch_size=4, max_latency_s=0.05)
    try:
        first, second = asyncio.run(held(batcher, forward, images(1), images(2), hold_s=0.2))
        later = asyncio.run(batcher.submit(images(3)))
    finally:
        batcher.close()
    assert isinstance(first, Overloaded) and isinstance(second, Overloaded)
    assert "the test model is overloaded" in str(first)
    assert forward.batch_sizes == [1, 1]  # the refused images never reached the network
    assert later.flatten().tolist() == [7.0]


def test_a_failing_batch_fails_only_its_requests() -> None:
    forward = Forward(fail_on=2)
    batcher = batcher_of(forward, max_batch_size=4)
    try:
        (failed,) = asyncio.run(held(batcher, forward, images(1, 2)))
        ok = asyncio.run(batcher.submit(images(7)))
    finally:
        batcher.close()
    assert isinstance(failed, RuntimeError)
    assert ok.flatten().tolist() == [15.0]


def test_close_answers_everything_queued(forward: Forward) -> None:
    batcher = batcher_of(forward, max_batch_size=2)

    async def scenario() -> list[np.ndarray]:
        pending = [asyncio.ensure_future(batcher.submit(images(v))) for v in (1, 2, 3)]
        await asyncio.sleep(0.01)
        closing = asyncio.get_running_loop().run_in_executor(None, batcher.close)
        forward.release.set()
        await closing
        return await asyncio.gather(*pending)

    results = asyncio.run(scenario())
    assert [r.item() for r in results] == [3.0, 5.0, 7.0]
    assert sum(forward.batch_sizes) == 3


def test_a_request_cancelled_while_queued_is_not_run(batcher: MicroBatcher, forward: Forward) -> None:
    """A request whose caller was cancelled (a shutdown past its timeout) takes no forward pass."""

    async def scenario() -> list[np.ndarray | BaseException]:
        first = asyncio.ensure_future(batcher.submit(images(0)))
        while not forward.entered.is_set():
            await asyncio.sleep(0.001)
        cancelled, kept = (asyncio.ensure_future(batcher.submit(images(v, v))) for v in (1, 2))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        forward.release.set()
        return await asyncio.gather(first, cancelled, kept, return_exceptions=True)

    _, cancelled, kept = asyncio.run(scenario())
    assert isinstance(cancelled, asyncio.CancelledError)
    assert kept.flatten().tolist() == [5.0, 5.0]
    assert forward.batch_sizes == [1, 2]  # without the cancelled request's 2 images


def test_past_the_queue_bound_requests_are_refused_at_once_and_the_queue_recovers(forward: Forward) -> None:
    batcher = batcher_of(forward, max_batch_size=4, max_queued=5)
    try:
        results = asyncio.run(held(batcher, forward, images(1, 2), images(3, 4), images(5), images(6)))
        after = asyncio.run(batcher.submit(images(7, 8, 9, 10, 11)))  # exactly the bound fits again
    finally:
        batcher.close()
    assert [r.flatten().tolist() for r in results[:3]] == [[3.0, 5.0], [7.0, 9.0], [11.0]]
    assert isinstance(results[3], TooBusy) and results[3].error_code == 429
    assert "has 5 images queued (the limit is 5)" in str(results[3])
    assert len(after) == 5


def test_uint8_images_and_float32_pixels_join_one_batch(forward: Forward) -> None:
    """`preprocess.concat` joins uint8 images and float32 pixels (scaled to [0, 1])."""
    mixed = batcher_of(forward, max_batch_size=4)
    try:
        floats = np.array([0.5], dtype=np.float32).reshape(1, 1, 1, 1)
        uint8, float32 = asyncio.run(held(mixed, forward, images(255), floats))
    finally:
        mixed.close()
    assert forward.batch_sizes == [1, 2]
    assert uint8.flatten().tolist() == [3.0] and float32.flatten().tolist() == [2.0]
