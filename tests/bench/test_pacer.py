"""The soak benchmark's open-loop client (bench/pacer.py) against a small HTTP server on loopback: it keeps
its rate while the server stalls, counts latency from the schedule, and survives closed connections."""

from __future__ import annotations

import asyncio
import time

from bench.pacer import PacedLoad, Sample, post_requests
from tests.support.server import free_port

RATE = 200.0
CONNECTIONS = 4
SECONDS = 1.0
STALL_S = 0.3


async def serve(port: int, stall_at: int | None = None, close_every: int | None = None) -> asyncio.Server:
    """Answers 200 (or 503 on every 5th request) with a body; stalls STALL_S before answering request
    `stall_at`; answers `Connection: close` every `close_every` requests and closes."""
    answered = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(
                next(
                    line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            await reader.readexactly(length)
            answered += 1
            if answered == stall_at:
                await asyncio.sleep(STALL_S)
            status = b"503 Service Unavailable" if answered % 5 == 0 else b"200 OK"
            closing = close_every is not None and answered % close_every == 0
            extra = b"Connection: close\r\n" if closing else b""
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n" + extra + b"\r\n{}")
            await writer.drain()
            if closing:
                break
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def load(stall_at: int | None = None, close_every: int | None = None) -> list[Sample]:
    port = free_port()
    server = await serve(port, stall_at, close_every)
    samples: list[Sample] = []
    requests = post_requests(f"http://127.0.0.1:{port}/classify/mnist", [b"a", b"bb"])
    async with server:
        await PacedLoad(
            f"http://127.0.0.1:{port}/classify/mnist", requests, RATE, CONNECTIONS, samples.append
        ).run(time.monotonic() + SECONDS)
    return samples


def test_requests_leave_on_schedule_and_statuses_are_counted() -> None:
    samples = asyncio.run(load())
    assert abs(len(samples) - RATE * SECONDS) <= 2
    scheduled = sorted(sample.scheduled for sample in samples)
    gaps = [b - a for a, b in zip(scheduled, scheduled[1:], strict=False)]
    assert max(abs(gap - 1 / RATE) for gap in gaps) < 1e-6  # the schedule itself, not when they left
    statuses = [sample.status for sample in samples]
    assert statuses.count(503) == len(samples) // 5 and set(statuses) == {200, 503}


def test_a_stall_shows_in_the_latency_of_the_requests_due_meanwhile() -> None:
    samples = asyncio.run(load(stall_at=20))
    assert abs(len(samples) - RATE * SECONDS) <= 2  # the client did not slow down with the server
    slow = [sample for sample in samples if sample.latency_s > STALL_S / 2]
    # The stalled connection's requests due in the first half of the stall waited over half of it.
    assert len(slow) >= STALL_S / 2 * RATE / CONNECTIONS - 1
    assert max(sample.latency_s for sample in samples) >= STALL_S


def test_closed_connections_are_reopened() -> None:
    samples = asyncio.run(load(close_every=7))
    assert abs(len(samples) - RATE * SECONDS) <= 2
    assert {sample.status for sample in samples} == {200, 503}
