"""ASGI front of `GET /models` (the loaded models' cards) and `GET /models/{name}` (one card).

Answered here, before BentoML's routing: a Starlette mount cannot route a path with a line break in
the middle (`/models/a%0Ab`) or a slash in the name, and BentoML answers those with a plain-text 404
instead of the service's JSON error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.catalog import CatalogEntry
from service.errors import InputRejected, MethodNotAllowed, ModelNotLoaded, UnknownModel

PREFIX = "/models"


class ModelsFront:
    def __init__(self, app: ASGIApp, *, catalog: Mapping[str, CatalogEntry], table: Sequence[str]) -> None:
        """`catalog`: the loaded models; `table`: every route name of the model table."""
        self.app = app
        self.cards = {name: entry.info().model_dump(mode="json") for name, entry in catalog.items()}
        self.table = list(table)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or (path != PREFIX and not path.startswith(f"{PREFIX}/")):
            await self.app(scope, receive, send)
            return
        try:
            response = self._answer(scope["method"], path)
        except InputRejected as error:
            response = error.to_response()
        await response(scope, receive, send)

    def _answer(self, method: str, path: str) -> Response:
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"{path} takes GET, not {method}")
        if path == PREFIX:
            return JSONResponse(list(self.cards.values()))
        name = path.removeprefix(f"{PREFIX}/")
        if name in self.cards:
            return JSONResponse(self.cards[name])
        if name in self.table:
            raise ModelNotLoaded(f"no {name} model is loaded", error_code=404)
        raise UnknownModel(f"unknown model {name!r}; choose one of: {', '.join(self.table)}")
