"""The service in-process over HTTP: an ASGI app with its lifespan, driven by httpx on one event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


class Lifespan:
    """An ASGI app's lifespan protocol, as a server runs it: startup, then shutdown."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.create_task(self.app(scope, self._to_app.get, self._from_app.put))
        await self._step("startup")

    async def shutdown(self) -> None:
        await self._step("shutdown")
        assert self._task is not None
        await self._task

    async def _step(self, event: str) -> None:
        await self._to_app.put({"type": f"lifespan.{event}"})
        answer = await self._from_app.get()
        if answer["type"] != f"lifespan.{event}.complete":
            raise RuntimeError(f"lifespan {event} failed: {answer}")


class InProcess:
    """Requests to the ASGI app on one event loop, which the workers' batcher threads answer into."""

    def __init__(self, app: Any) -> None:
        self.runner = asyncio.Runner()
        self.lifespan = Lifespan(app)
        self.runner.run(self.lifespan.startup())
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
        self.runner.run(self.lifespan.shutdown())
        self.runner.close()
