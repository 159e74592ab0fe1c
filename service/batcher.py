"""In-process micro-batching: concurrent requests' images merged into one forward pass.

Requests wait on asyncio futures; one inference thread per model runs the batches. The requests that
the event loop prepares in one turn are handed to the thread together, at the end of that turn: when
many connections have a request ready (a loaded server), they make one batch instead of the first
starting alone while the loop prepares the rest. When the thread becomes free it takes every request
already handed over, up to `max_batch_size` images. A lone request therefore never waits for company
(only for the end of its loop turn), and batches grow with the load by themselves: there is no learned
wait to go stale after a burst. An image that has waited longer than `max_latency` by the time its
batch starts is answered `Overloaded` (503) instead of adding to the backlog, and a request that would
take the queue over `max_queued` images is refused at once with `TooBusy` (429), so that memory and
queueing time stay bounded under any load. A request cancelled while queued (a shutdown past its
timeout cancels what is left) takes no forward pass.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service import metrics
from service.errors import Overloaded, TooBusy

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    pixels: Any  # (k, C, H, W): the images of one request (an array, or a tensor on a GPU)
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.perf_counter)

    def resolve(self, result: np.ndarray | BaseException) -> None:
        self.loop.call_soon_threadsafe(_settle, self.future, result)


def _settle(future: asyncio.Future[np.ndarray], result: np.ndarray | BaseException) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class MicroBatcher:
    """Runs `forward(batch) -> per-image results` for one model on its own thread."""

    def __init__(
        self,
        name: str,
        forward: Callable[[Any], np.ndarray],
        *,
        max_batch_size: int,
        max_latency_s: float,
        max_queued: int,
        join: Callable[[Sequence[Any]], Any],
    ) -> None:
        """`join` makes one batch of several requests' inputs."""
        self.name = name
        self.forward = forward
        self.join = join
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self.max_queued = max_queued
        self._queued = 0  # images submitted and not yet taken into a batch
        self._lock = threading.Lock()
        self._turn: list[_Request] = []  # submitted in the event loop's current turn, not yet handed over
        self._queue: queue.SimpleQueue[list[_Request] | None] = queue.SimpleQueue()
        self._backlog: deque[_Request] = deque()  # handed over, not yet in a batch (the thread's own)
        self._waited = metrics.batch_wait_seconds.labels(name)
        self._inference = metrics.inference_seconds.labels(name)
        self._batch_size = metrics.batch_size.labels(name)
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    async def submit(self, pixels: Any) -> np.ndarray:
        """Queue one request's images (k, C, H, W); returns its k rows of the batch's result.

        Called from one event loop at a time (a worker's).
        """
        with self._lock:
            if self._queued + len(pixels) > self.max_queued:
                raise TooBusy(
                    f"the {self.name} model has {self._queued} images queued (the limit is {self.max_queued})"
                )
            self._queued += len(pixels)
        loop = asyncio.get_running_loop()
        request = _Request(pixels=pixels, future=loop.create_future(), loop=loop)
        self._turn.append(request)
        if len(self._turn) == 1:
            loop.call_soon(self._hand_over)  # runs after everything the loop has ready now
        return await request.future

    def _hand_over(self) -> None:
        self._queue.put(self._turn)
        self._turn = []

    def close(self) -> None:
        """Finish everything queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            with self._lock:
                self._queued -= sum(len(request.pixels) for request in batch)
            started = time.perf_counter()
            live = [
                request
                for request in batch
                if not request.future.cancelled() and not self._expired(request, started)
            ]
            if live:
                self._forward(live, started)

    def _expired(self, request: _Request, now: float) -> bool:
        if now - request.queued_at <= self.max_latency_s:
            return False
        request.resolve(Overloaded(f"the {self.name} model is overloaded; retry later"))
        return True

    def _forward(self, batch: list[_Request], started: float) -> None:
        images = sum(len(request.pixels) for request in batch)
        for request in batch:
            wait = started - request.queued_at
            for _ in range(len(request.pixels)):
                self._waited.observe(wait)
        try:
            pixels = batch[0].pixels if len(batch) == 1 else self.join([r.pixels for r in batch])
            results = self.forward(pixels)
        except Exception as error:  # a failing model fails this batch, never the thread
            logger.exception("forward pass of %s failed", self.name)
            for request in batch:
                request.resolve(error)
            return
        self._inference.observe(time.perf_counter() - started)
        self._batch_size.observe(images)
        start = 0
        for request in batch:
            count = len(request.pixels)
            request.resolve(results[start : start + count])
            start += count

    def _next_batch(self) -> list[_Request] | None:
        """Block for the first request, then take what is already handed over, up to max_batch_size images.

        A request that would overflow the batch waits for the next one; a request larger than
        max_batch_size (many images in one request) runs alone. None means: closed and drained.
        """
        closed = False
        if not self._backlog:
            handed = self._queue.get()
            if handed is None:
                return None
            self._backlog.extend(handed)
        while True:  # everything else handed over by now
            try:
                handed = self._queue.get_nowait()
            except queue.Empty:
                break
            if handed is None:  # close(): finish the backlog, then stop
                closed = True
                break
            self._backlog.extend(handed)
        if closed:
            self._queue.put(None)
        batch = [self._backlog.popleft()]
        images = len(batch[0].pixels)
        while self._backlog and images + len(self._backlog[0].pixels) <= self.max_batch_size:
            request = self._backlog.popleft()
            batch.append(request)
            images += len(request.pixels)
        return batch
