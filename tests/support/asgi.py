"""The service in-process over HTTP: an ASGI app with its lifespan, driven by httpx on one event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


class InProcess:
    """Requests to the ASGI app on one event loop, which the workers' batcher threads answer into."""

    def __init__(self, app: Any) -> None:
        self.runner = asyncio.Runner()
        self.lifespan = app.router.lifespan_context(app)
        self.runner.run(self.lifespan.__aenter__())
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")

    def post(self, path: str, **request: Any) -> httpx.Response:
        return self.runner.run(self.client.post(path, **request))

    def get(self, path: str) -> httpx.Response:
        return self.runner.run(self.client.get(path))

    def gather(self, *requests: tuple[str, dict[str, Any]]) -> list[httpx.Response]:
        async def all_at_once() -> list[httpx.Response]:
            return await asyncio.gather(*(self.client.post(path, **kw) for path, kw in requests))

        return self.runner.run(all_at_once())

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.run(self.lifespan.__aexit__(None, None, None))
        self.runner.close()
