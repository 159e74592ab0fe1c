"""ASGI front of the explanation routes, `POST /explain/<model>` and `POST /features/<model>`.

Like `front.ClassifyFront`, it reads and checks each request itself, in one pass, and hands the image to
the worker (`explanations.Explanations`). A request is multipart/form-data with exactly one image file
in the field `image`, and at most one query parameter: `target` (a class label or index) for /explain,
`layer` (a convolution's module path) for /features. Refused before the image is decoded or queued: a
model not in the table (404), a body over the byte limit (413), another media type or a file that is
not an image (415), no image, more than one, a plain value instead of a file, another field or query
parameter (400), an image over the pixel limit (413, from its header).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service import metrics
from service.decoding import open_image
from service.errors import (
    InputRejected,
    MalformedRequest,
    MethodNotAllowed,
    MoreThanOneImage,
    NoImages,
    UnexpectedField,
    UnknownModel,
    UnsupportedMediaType,
)
from service.front import read_body, request_media_type, send_json
from service.multipart import uploaded_files

logger = logging.getLogger(__name__)

FILE_FIELD = "image"
EXPLAIN, FEATURES = "/explain/", "/features/"  # each followed by the model's route name
TARGET, LAYER = "target", "layer"  # their query parameters

# (model, the image file, the query parameter's value or None) -> the JSON answer
Answer = Callable[[str, bytes, str | None], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Route:
    prefix: str  # the path up to the model's name
    parameter: str  # its one optional query parameter
    answer: Answer


class ExplainFront:
    def __init__(
        self,
        app: ASGIApp,
        *,
        models: Sequence[str],
        max_bytes: int,
        max_pixels: int,
        explain: Answer,
        features: Answer,
    ) -> None:
        """`models` are the route names of the model table; `explain(model, image, target)` answers
        /explain/<model>, `features(model, image, layer)` answers /features/<model>."""
        self.app = app
        self.models = frozenset(models)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.routes = (Route(EXPLAIN, TARGET, explain), Route(FEATURES, LAYER, features))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        route = next((r for r in self.routes if path.startswith(r.prefix)), None)
        if scope["type"] != "http" or route is None:
            await self.app(scope, receive, send)
            return
        model = path.removeprefix(route.prefix)
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"{path} takes POST, not {scope['method']}")
            if model not in self.models:
                raise UnknownModel(
                    f"unknown model {model!r}; choose one of: {', '.join(sorted(self.models))}"
                )
            option = _query_parameter(scope, route.parameter)
            image = _one_image(scope, await read_body(scope, receive, self.max_bytes))
            open_image(image, max_pixels=self.max_pixels)  # its header: the format and the size
            answer = await route.answer(model, image, option)
        except InputRejected as error:
            if model in self.models:
                metrics.rejected_inputs_total.labels(model, error.reason).inc()
            logger.info("rejected %s: %s", path, error)
            await error.to_response()(scope, receive, send)
            return
        await send_json(send, json.dumps(answer, separators=(",", ":")).encode())


def _query_parameter(scope: Scope, name: str) -> str | None:
    """The value of the route's one optional query parameter; any other parameter is refused."""
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    for key, _ in pairs:
        if key != name:
            raise UnexpectedField(f"unexpected query parameter {key!r}: {scope['path']} takes only {name!r}")
    if len(pairs) > 1:
        raise MalformedRequest(f"the query parameter {name!r} is given {len(pairs)} times: give it once")
    return pairs[0][1] if pairs else None


def _one_image(scope: Scope, body: bytes) -> bytes:
    media_type = request_media_type(scope)
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"expected multipart/form-data with one image file in the field '{FILE_FIELD}', "
            f"got {media_type or 'no content type'}"
        )
    files = uploaded_files(body, Headers(scope=scope)["content-type"], FILE_FIELD)
    if not files:
        raise NoImages(f"no image: send one image file in the field '{FILE_FIELD}'")
    if len(files) > 1:
        raise MoreThanOneImage(
            f"{len(files)} images: an explanation takes exactly one, in the field '{FILE_FIELD}'"
        )
    return files[0]
