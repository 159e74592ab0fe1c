"""Open-loop load at a fixed rate, as wrk2 paces it (Debian's wrk cannot): every connection sends on its
own schedule whether or not the server kept up, and a latency counts from the request's scheduled time,
so that a stall shows in the percentiles instead of slowing the client down (coordinated omission).

A minimal HTTP/1.1 client on asyncio streams with prebuilt requests, cheap enough to share two cores with
the server: it reads the status line, the headers and a Content-Length body, keeps connections alive and
opens a new one after `Connection: close` or an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench.workload import CONTENT_TYPE


@dataclass(frozen=True)
class Sample:
    scheduled: float  # time.monotonic() at which the request was due
    latency_s: float  # from `scheduled` to the end of the response
    status: int | str  # HTTP status, or the kind of socket error


def post_requests(url: str, bodies: Sequence[bytes]) -> list[bytes]:
    """Each multipart body as a complete HTTP/1.1 POST to `url`."""
    parts = urlsplit(url)
    head = f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {CONTENT_TYPE}\r\n"
    return [f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body for body in bodies]


@dataclass(frozen=True)
class PacedLoad:
    """`requests` in turn at `rate` per second over `connections` connections; `record` gets every sample
    as its response ends."""

    url: str
    requests: Sequence[bytes]
    rate: float
    connections: int
    record: Callable[[Sample], None]

    async def run(self, until: float) -> None:
        """Until the monotonic time `until`."""
        start = time.monotonic()
        await asyncio.gather(*(self._connection(index, start, until) for index in range(self.connections)))

    async def _connection(self, index: int, start: float, until: float) -> None:
        """One connection's share: requests index, index + connections, ... each due 1 / rate later."""
        parts = urlsplit(self.url)
        interval = self.connections / self.rate
        scheduled, number = start + index / self.rate, index
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while scheduled < until:
            await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
            try:
                if streams is None:
                    streams = await asyncio.open_connection(parts.hostname, parts.port)
                reader, writer = streams
                writer.write(self.requests[number % len(self.requests)])
                await writer.drain()
                status, keep_alive = await _read_response(reader)
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                KeyError,
                ValueError,
            ) as error:
                status, keep_alive = _error_kind(error), False
            self.record(Sample(scheduled, time.monotonic() - scheduled, status))
            if not keep_alive and streams is not None:
                streams[1].close()
                streams = None
            scheduled += interval
            number += self.connections
        if streams is not None:
            streams[1].close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the connection stays open) of one response with a Content-Length body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
    await reader.readexactly(int(headers["content-length"]))
    return status, headers.get("connection") != "close"


def _error_kind(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connect"
    if isinstance(error, asyncio.IncompleteReadError | ConnectionResetError):
        return "read"
    return type(error).__name__
