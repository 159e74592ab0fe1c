"""ASGI front of the classify routes: each request is read, parsed and answered here, in one pass.

`POST /classify/<model>` (multipart, image files in the field `images`) and `POST
/classify/<model>/base64` (JSON `{"images": ["<base64>", ...]}`) never reach BentoML's per-API
input and output handling: this middleware reads the body once, checks it, hands the image bytes to
the worker's model (`runtime.LoadedModel.classify`) and writes the JSON answer itself. BentoML's own
handling would write every upload to a temporary file and validate the answer through pydantic
models, which measured at over half of a worker's time per request. The `@bentoml.api` methods of
the service declare the same routes for BentoML's schema, OpenAPI document and clients.

What it refuses, before any image is decoded:
- a body over the byte limit: 413, from Content-Length before reading or while reading;
- on the multipart routes, another media type: 415 (a urlencoded form too: BentoML would take its
  values as URLs to download); a part of `images` that is a plain value, not a file: 400 (URLs are
  never fetched); any other field: 400;
- on the base64 routes, a body that is not a JSON object with a list of strings in `images`: 400.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service import metrics
from service.errors import (
    BodyTooLarge,
    InputRejected,
    InvalidBase64,
    MalformedRequest,
    UnsupportedMediaType,
)
from service.multipart import uploaded_files

logger = logging.getLogger(__name__)

FILE_FIELD = "images"
PREFIX = "/classify/"
BASE64_SUFFIX = "/base64"
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,")

Classify = Callable[[str, Sequence[bytes]], Awaitable[list[dict[str, Any]]]]


class ClassifyFront:
    def __init__(self, app: ASGIApp, *, models: Sequence[str], max_bytes: int, classify: Classify) -> None:
        """`models` are the route names of the model table; `classify(model, files)` answers a request."""
        self.app = app
        self.models = frozenset(models)
        self.max_bytes = max_bytes
        self.classify = classify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        model, base64 = route
        try:
            body = await read_body(scope, receive, self.max_bytes)
            files = _base64_files(scope, body) if base64 else _uploaded_files(scope, body)
            answer = await self.classify(model, files)
        except InputRejected as error:
            metrics.rejected_inputs_total.labels(model, error.reason).inc()
            logger.info("rejected %s: %s", scope["path"], error)
            await error.to_response()(scope, receive, send)
            return
        await send_json(send, json.dumps(answer, separators=(",", ":")).encode())

    def route(self, scope: Scope) -> tuple[str, bool] | None:
        """(model, base64?) for a POST to one of the classify routes, else None."""
        path: str = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(PREFIX):
            return None
        model = path[len(PREFIX) :]
        base64 = model.endswith(BASE64_SUFFIX)
        model = model.removesuffix(BASE64_SUFFIX)
        return (model, base64) if model in self.models else None


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """The request body; `BodyTooLarge` (413) from Content-Length before reading, or while reading."""
    declared = Headers(scope=scope).get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(f"request body of {int(declared):,} bytes is over the limit of {max_bytes:,}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"request body is over the limit of {max_bytes:,} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def read_base64(text: str) -> bytes:
    """Standard base64, optionally as a `data:image/...;base64,` URL; never fetches anything."""
    if text.startswith(("http://", "https://")):
        raise InvalidBase64("URLs are not fetched: send the image bytes base64-encoded")
    try:
        return base64.b64decode(_DATA_URL.sub("", text.strip(), count=1), validate=True)
    except ValueError as error:  # binascii.Error is one
        raise InvalidBase64(f"not valid base64: {error}") from None


def request_media_type(scope: Scope) -> str:
    return Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()


def _uploaded_files(scope: Scope, body: bytes) -> list[bytes]:
    media_type = request_media_type(scope)
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"expected multipart/form-data with image files in the field '{FILE_FIELD}', got "
            f"{media_type or 'no content type'} (JSON clients: POST base64 images to {scope['path']}/base64)"
        )
    return uploaded_files(body, Headers(scope=scope)["content-type"], FILE_FIELD)


def _base64_files(scope: Scope, body: bytes) -> list[bytes]:
    media_type = request_media_type(scope)
    if media_type not in ("", "application/json"):
        raise UnsupportedMediaType(
            f'expected application/json {{"{FILE_FIELD}": ["<base64>", ...]}}, got {media_type} '
            f"(multipart clients: POST the files to {scope['path'].removesuffix(BASE64_SUFFIX)})"
        )
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:  # RecursionError: nested deeper than the parser goes
        raise MalformedRequest(f"malformed JSON body: {error}") from None
    images = document.get(FILE_FIELD) if isinstance(document, dict) else None
    if not isinstance(images, list) or not all(isinstance(item, str) for item in images):
        raise MalformedRequest(
            f'1 validation error: the body must be a JSON object {{"{FILE_FIELD}": ["<base64 image>", ...]}}'
        )
    files = []
    for index, text in enumerate(images):
        try:
            files.append(read_base64(text))
        except InputRejected as error:
            raise type(error)(f"{FILE_FIELD}[{index}]: {error}") from None
    return files


async def send_json(send: Send, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
