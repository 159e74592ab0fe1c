"""ASGI middleware in front of the classify routes: checks what BentoML would otherwise mishandle.

- A body over the byte limit gets 413, from Content-Length before reading or while reading.
- On the multipart routes, another media type gets 415 (BentoML treats form values of a file field
  as URLs to download, so urlencoded forms are refused too) and every part of the field `images`
  must be a file: a plain string part (which BentoML would fetch as a URL) gets 400, and so does
  any other field. Nothing is ever fetched.

The body is read once, checked, then replayed to BentoML.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.errors import (
    BodyTooLarge,
    InputRejected,
    MalformedRequest,
    NotAFile,
    UnexpectedField,
    UnsupportedMediaType,
)

logger = logging.getLogger(__name__)

FILE_FIELD = "images"


class RequestGate:
    def __init__(
        self, app: ASGIApp, *, max_bytes: int, routes: Mapping[str, str], multipart_routes: set[str]
    ) -> None:
        """`routes` maps each guarded path to its model (the metric label)."""
        self.app = app
        self.max_bytes = max_bytes
        self.routes = routes
        self.multipart_routes = multipart_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in self.routes:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(scope, receive)
            if path in self.multipart_routes:
                await _check_upload_form(scope, body)
        except InputRejected as error:
            metrics.rejected_inputs_total.labels(self.routes[path], error.reason).inc()
            logger.info("rejected %s: %s", path, error)
            await error.to_response()(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise BodyTooLarge(
                f"request body of {int(declared):,} bytes is over the limit of {self.max_bytes:,}"
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise BodyTooLarge(f"request body is over the limit of {self.max_bytes:,} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def _check_upload_form(scope: Scope, body: bytes) -> None:
    media_type = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"expected multipart/form-data with image files in the field '{FILE_FIELD}', got "
            f"{media_type or 'no content type'} (JSON clients: POST base64 images to {scope['path']}/base64)"
        )
    request = Request(scope, _replay(body, _no_more_messages))
    try:
        async with request.form() as form:
            for field in form:
                if field != FILE_FIELD:  # BentoML would try to read it as JSON (a 500 for binary data)
                    raise UnexpectedField(
                        f"unexpected form field {field!r}: send images in the field '{FILE_FIELD}'"
                    )
            for index, value in enumerate(form.getlist(FILE_FIELD)):
                if not isinstance(value, UploadFile):
                    raise NotAFile(
                        f"{FILE_FIELD}[{index}] is a plain form value, not a file upload; "
                        "URLs are never fetched: upload the image file itself"
                    )
    except (MultiPartException, HTTPException) as error:  # Starlette wraps the first in the second
        detail = error.message if isinstance(error, MultiPartException) else error.detail
        raise MalformedRequest(f"malformed multipart body: {detail}") from None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the already-read body once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _no_more_messages() -> Message:
    return {"type": "http.disconnect"}
